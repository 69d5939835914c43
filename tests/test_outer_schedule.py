"""The outer momentum's warmup (coordinator/run_spec.py outer_schedule): a pure function of the
run spec and the round, applied by OuterState, carried by the run spec (pure logic, milliseconds)."""

from __future__ import annotations

import pytest
import torch
from gpt5os.coordinator.run_spec import (
    OUTER_WARMUP_ROUNDS,
    OuterOptimizerSpec,
    RunSpec,
    outer_schedule,
    preset_spec,
)
from gpt5os.node.diloco import OuterState


def test_without_warmup_every_round_has_the_full_lr_and_momentum() -> None:
    outer = OuterOptimizerSpec(lr=0.7, momentum=0.9, warmup_rounds=0)
    assert {outer_schedule(outer, r) for r in range(1, 50)} == {(0.7, 0.9)}


def test_the_momentum_ramps_from_zero_and_the_lr_stays() -> None:
    outer = OuterOptimizerSpec(lr=0.7, momentum=0.9, warmup_rounds=4)
    steps = [outer_schedule(outer, r) for r in range(1, 9)]
    assert steps[0] == (0.7, 0.0)  # round 1: a plain SGD step, kept out of the momentum
    assert steps[4:] == [(0.7, 0.9)] * 4  # from round W + 1 on
    lrs, momenta = zip(*steps, strict=True)
    assert set(lrs) == {0.7}
    assert list(momenta) == sorted(momenta) and max(momenta) == 0.9
    assert momenta[1:4] == pytest.approx((0.225, 0.45, 0.675))


def test_presets_warm_their_momentum_up() -> None:
    spec = preset_spec("0.1b", run_id="t-outer")
    assert spec.outer.warmup_rounds == OUTER_WARMUP_ROUNDS > 0
    assert outer_schedule(spec.outer, 1)[1] == 0.0


def _outer(warmup: int) -> OuterState:
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 4)
    return OuterState(model, OuterOptimizerSpec(lr=0.7, momentum=0.9, warmup_rounds=warmup))


def test_outer_state_takes_each_round_with_that_rounds_lr_and_momentum() -> None:
    """The same bits as torch's Nesterov SGD stepped by hand with the schedule's values."""
    outer = _outer(3)
    params = [g.clone() for g in outer.global_params]
    buffers = [torch.zeros_like(p) for p in params]
    torch.manual_seed(1)
    for r in range(1, 6):
        deltas = [torch.randn_like(p) for p in params]
        outer.apply_outer_step(deltas, tokens=10, group_size=2)
        lr, momentum = outer_schedule(outer.spec, r)
        for p, b, d in zip(params, buffers, deltas, strict=True):
            if momentum != 0:
                b.mul_(momentum).add_(d)
                d = d.add(b, alpha=momentum)
            p.add_(d, alpha=-lr)
        assert all(torch.equal(a, b) for a, b in zip(outer.global_params, params, strict=True)), r


def test_two_peers_at_the_same_round_step_alike_whatever_happened_before() -> None:
    """A peer that adopted a shared state (its round and momentum) steps like the one it came
    from: the schedule reads only the round."""
    source, joiner = _outer(4), _outer(4)
    torch.manual_seed(2)
    for _ in range(2):
        source.apply_outer_step(
            [torch.randn_like(g) for g in source.global_params], tokens=1, group_size=1
        )
    meta, tensors = source.export()
    joiner.import_state(meta, tensors)
    delta = [torch.randn_like(g) for g in source.global_params]
    for peer in (source, joiner):
        peer.apply_outer_step(delta, tokens=1, group_size=1)
    assert source.digest() == joiner.digest()


def test_the_warmup_travels_with_the_run_spec_and_old_specs_have_none() -> None:
    spec = preset_spec("tiny", run_id="t-outer")
    spec.outer = OuterOptimizerSpec(lr=0.5, momentum=0.8, warmup_rounds=7)
    assert RunSpec.from_pb(spec.to_pb()) == spec
    assert RunSpec.from_json(spec.to_json()) == spec
    old = spec.to_pb()
    old.outer.ClearField("warmup_rounds")
    assert RunSpec.from_pb(old).outer.warmup_rounds == 0
    raw = spec.to_dict()
    del raw["outer"]["warmup_rounds"]
    assert RunSpec.from_dict(raw).outer.warmup_rounds == 0


@pytest.mark.parametrize(
    "outer",
    [
        OuterOptimizerSpec(warmup_rounds=-1),
        OuterOptimizerSpec(lr=0.0),
        OuterOptimizerSpec(momentum=1.0),
        OuterOptimizerSpec(warmup_rounds=1.5),  # type: ignore[arg-type]
    ],
)
def test_a_bad_outer_section_is_refused_by_name(outer: OuterOptimizerSpec) -> None:
    spec = preset_spec("tiny", run_id="t-outer")
    spec.outer = outer
    with pytest.raises(ValueError, match="outer"):
        spec.validate()
