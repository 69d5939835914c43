"""Robust sums (node/robust.py): the reducer's clipped, capped, NaN-dropping mean and the sender's
guard, as pure logic."""

from __future__ import annotations

import math

import pytest
import torch
from gpt5os.node.robust import (
    MAX_CLAIM_ROUNDS,
    RobustConfig,
    SendGuard,
    claim_bound,
    claimed_tokens,
    lower_median,
    median,
    robust_mean,
)

CONFIG = RobustConfig()


def _honest(k: int = 3, n: int = 1000) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    base = torch.randn(n, generator=g)
    return [base + 0.3 * torch.randn(n, generator=g) for _ in range(k)]


def _plain(parts, weights):
    return sum(w * p for w, p in zip(weights, parts, strict=True)) / sum(weights)


@pytest.mark.parametrize("attack", ["x1e6", "nan", "inf", "sign_flip"])
def test_one_bad_sender_of_four_moves_the_mean_a_bounded_distance(attack: str) -> None:
    """The bound from robust.py's doc: (w/W)·(clip + 1)·median, here w/W = 4/7 (the attacker
    claimed 1000× the others' weight and is capped at 4×)."""
    honest = _honest(4)
    weights = [1.0, 1.0, 1.0, 1.0]
    clean, _ = robust_mean(honest, weights, CONFIG)
    bad = honest[3]
    bad = {"x1e6": bad * 1e6, "nan": bad.clone().fill_(math.nan), "inf": bad.clone().fill_(math.inf),
           "sign_flip": -bad}[attack]  # fmt: skip
    got, what = robust_mean(honest[:3] + [bad], [1.0, 1.0, 1.0, 1000.0], CONFIG)
    # the reducer's median: of the finite parts; with one bad of four, between honest norms
    norms = [float(p.norm()) for p in honest[:3] + [bad] if torch.isfinite(p).all()]
    assert median(norms) <= max(float(p.norm()) for p in honest[:3])
    assert float((got - clean).norm()) <= (CONFIG.clip + 1) * median(norms) * 4 / 7 + 1e-4
    if attack in ("nan", "inf"):
        assert what.dropped == (3,)
        assert float((got - _plain(honest[:3], [1.0] * 3)).norm()) < 1e-5
    if attack == "x1e6":
        assert what.clipped == (3,) and what.capped == (3,)
        # the plain weighted mean would be a million times off
        assert float((_plain(honest[:3] + [bad], [1.0, 1.0, 1.0, 1000.0]) - clean).norm()) > 1e6


def test_honest_senders_are_untouched() -> None:
    honest = _honest(3)
    weights = [700.0, 300.0, 200.0]
    got, what = robust_mean(honest, weights, CONFIG)
    assert what.clipped == () and what.capped == () and what.dropped == ()
    assert torch.allclose(got, _plain(honest, weights), atol=1e-6)


def test_zero_weight_members_and_missing_parts_do_not_count() -> None:
    """The keeper (weight 0, zeros) must not pull the median norm to zero."""
    honest = _honest(2)
    got, what = robust_mean([torch.zeros(1000), *honest, None], [0.0, 1.0, 1.0, 1.0], CONFIG)
    assert what.clipped == ()
    assert torch.allclose(got, _plain(honest, [1.0, 1.0]), atol=1e-6)
    assert robust_mean([torch.zeros(3)], [0.0], CONFIG)[0] is None


def test_with_two_senders_neither_is_clipped() -> None:
    """Two members are no majority (robust.py): the honest node that trained more steps, with
    a norm 3x its partner's, counts in full, and a partner sending near-zero updates cannot cut
    it down. With four senders the same 3x norm is clipped to 2x the median."""
    a, b = _honest(2)
    weights = [1.0, 1.0]
    got, what = robust_mean([a, 3 * b], weights, CONFIG)
    assert what.clipped == ()
    assert torch.allclose(got, _plain([a, 3 * b], weights), atol=1e-6)
    got, what = robust_mean([a * 1e-6, b], weights, CONFIG)
    assert what.clipped == ()
    assert torch.allclose(got, _plain([a * 1e-6, b], weights), atol=1e-6)
    four = _honest(4)
    four[3] = four[3] * 3
    assert robust_mean(four, [1.0] * 4, CONFIG)[1].clipped == (3,)


def test_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    assert median([4.0, 1.0]) == 2.5 and median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0, 3.0, 100.0]) == 2.5 and lower_median([1.0, 2.0, 3.0, 100.0]) == 2.0


def test_send_guard_refuses_nan_and_outliers_but_not_before_it_has_seen_the_swarm() -> None:
    guard = SendGuard(factor=10.0, min_samples=3)
    d = [torch.ones(100)]  # norm 10
    assert guard.check(d)[1] is None
    _, why = guard.check([torch.tensor([1.0, math.nan])])
    assert "NaN/Inf" in why
    assert guard.check([d[0] * 1000])[1] is None  # nothing seen yet: no median to compare with
    guard.observe([10.0, 12.0, 9.0, math.nan, 0.0])
    assert guard.check([d[0] * 5])[1] is None
    norm, why = guard.check([d[0] * 1000])
    assert norm == pytest.approx(10_000) and "median" in why


def test_send_guard_compares_norms_per_unit_of_learning_rate() -> None:
    """During warmup the learning rate grows many times over between rounds: a round at ten
    times the learning rate of the rounds seen is not an outlier per unit of learning rate."""
    guard = SendGuard(factor=10.0, min_samples=3)
    d = torch.ones(4)  # norm 2
    for _ in range(3):
        norm, why = guard.check([d], lr_sum=0.1)  # norm 20 per unit of learning rate
        assert why is None and norm == pytest.approx(20.0)
        guard.observe([norm])
    assert guard.check([d * 15], lr_sum=1.0)[1] is None  # 30 per unit: 1.5x, sent
    raw = SendGuard(factor=10.0, min_samples=3)  # the same rounds, by raw norm
    raw.observe([2.0, 2.0, 2.0])
    assert "15x" in raw.check([d * 15])[1]  # would have been refused
    norm, why = guard.check([d * 1500], lr_sum=1.0)  # 3000 per unit: 150x, refused
    assert why is not None and "per unit of learning rate" in why


# -- claimed weight: at most the run's round_tokens (robust.py "Claimed weight") ---------------


def test_a_claimed_weight_above_the_run_bound_counts_as_the_bound() -> None:
    """A sender claiming 1e9 tokens where the run's round_tokens is 1000 weighs 1000, below the
    4x-median cap (2000) that alone would allow; the others are untouched."""
    honest = _honest(4)
    config = RobustConfig(max_weight=1000.0)
    mean, what = robust_mean(honest, [500.0, 500.0, 500.0, 1e9], config)
    assert what.bounded == (3,) and what.capped == () and what.total_weight == 2500.0
    assert torch.allclose(mean, _plain(honest, [500.0, 500.0, 500.0, 1000.0]).float())
    _, unbounded = robust_mean(honest, [500.0, 500.0, 500.0, 1e9], CONFIG)
    assert unbounded.total_weight == 3500.0  # what the median cap alone gives the attacker
    _, inf = robust_mean(honest, [500.0, 500.0, 500.0, math.inf], config)
    assert inf.bounded == (3,) and inf.total_weight == 2500.0


@pytest.mark.parametrize(
    ("declared", "counted"),
    [(700, 700), (1000, 1000), (10**9, 1000), (1e300, 1000), (math.inf, 1000), (-5, 0),
     (math.nan, 0), ("700", 700), ("lots", 0), (None, 0), ([1], 0)],
)  # fmt: skip
def test_claimed_tokens_are_bounded_by_the_run_and_garbage_counts_nothing(
    declared: object, counted: int
) -> None:
    assert claimed_tokens(declared, 1000) == counted


def _averaging(tokens_per_round: int = 1000):
    """A GroupAverage over nothing: only its claim arithmetic is exercised (pure logic)."""
    from types import SimpleNamespace

    from gpt5os.node.group_average import GroupAverage, GroupAverageConfig

    return GroupAverage(
        SimpleNamespace(codec=None),
        None,
        prefix="p",
        config=GroupAverageConfig(node_id="me", tokens_per_round=tokens_per_round),
        exact=True,
    )


def test_every_member_counts_a_claim_above_the_bound_as_the_bound(caplog) -> None:
    """The group's tokens (the exact mode's divisor, the outer step's count): a member that
    claims 1e9 counts for claim_bound(round_tokens) = 2000, with one line naming it."""
    assert claim_bound(1000) == MAX_CLAIM_ROUNDS * 1000 == 2000
    group = [
        {"node_id": "a", "tokens": 1100},  # a round that ran a little long: untouched
        {"node_id": "b", "tokens": 10**9},
        {"node_id": "keeper", "tokens": 0, "keeper": True},
        {"node_id": "c", "tokens": "junk"},
    ]
    with caplog.at_level("WARNING", logger="gpt5os.node.group_average"):
        assert _averaging()._group_tokens(4, group) == 1100 + 2000
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "round 5: member b claims 1000000000 tokens, more than a member may (2000): counted as 2000"
    ]


def test_an_honest_sender_claims_no_more_than_the_others_count(caplog) -> None:
    """Its own claim (gather tokens, exact mode's encoding weight) is bounded the same way."""
    averaging = _averaging()
    assert averaging._claim(0, 1500) == 1500
    with caplog.at_level("WARNING", logger="gpt5os.node.group_average"):
        assert averaging._claim(0, 5000) == 2000
    assert "trained 5000 tokens; it claims the most a member may, 2000" in caplog.text


def test_the_bounds_come_from_the_run_spec_and_travel_with_it() -> None:
    """Every member reads the same thresholds from the run spec (coordinator/run_spec.py
    RobustSpec): a reducer built for a run clips at its clip and bounds claims at its
    max_claim_rounds; the spec's `robust` survives the wire and run.json, and a spec from before
    the field existed (no `robust`) means the defaults."""
    from gpt5os.coordinator.run_spec import RobustSpec, RunSpec, preset_spec

    spec = preset_spec("tiny", run_id="t-robust")
    spec.robust = RobustSpec(clip=3.0, weight_cap=5.0, max_claim_rounds=3, send_factor=20.0)
    assert RunSpec.from_pb(spec.to_pb()) == spec
    assert RunSpec.from_json(spec.to_json()) == spec
    config = RobustConfig.for_run(spec.robust, spec.round_tokens)
    assert (config.clip, config.weight_cap) == (3.0, 5.0)
    assert config.max_weight == 3 * spec.round_tokens
    old = spec.to_pb()
    old.ClearField("robust")
    assert RunSpec.from_pb(old).robust == RobustSpec()
    raw = spec.to_dict()
    del raw["robust"]
    assert RunSpec.from_dict(raw).robust == RobustSpec()
    honest = _honest(3)
    honest[2] = honest[2] * 2.5  # above 2 × the median, below 3 ×
    assert robust_mean(honest, [1.0] * 3, CONFIG)[1].clipped == (2,)
    assert robust_mean(honest, [1.0] * 3, config)[1].clipped == ()
    spec.robust = RobustSpec(clip=0.5)
    with pytest.raises(ValueError, match="robust.clip"):
        spec.validate()
