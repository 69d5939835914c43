"""The trainer's outer round and re-sync, without processes: the Trainer is handed a fake swarm
peer (tests/fake_swarm.py) and a fake coordinator client; OuterState is real."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import pytest
import torch
from fake_swarm import FakeSwarmPeer
from gpt5os.coordinator.run_spec import (
    InnerOptimizerSpec,
    ModelSpec,
    OuterOptimizerSpec,
    RunSpec,
)
from gpt5os.node.claims import KEEPER_NODE_ID, RoundClaim
from gpt5os.node.config import NodeConfig
from gpt5os.node.coordinator_client import Session
from gpt5os.node.diloco import OuterState, tensors_sha256
from gpt5os.node.group_average import Alone, Cancelled, Incomplete, Settled
from gpt5os.node.state_sync import (
    Adopted,
    NotAdopted,
    StateSync,
    Target,
    order_sources,
    rejection,
    sync_unshared,
)
from gpt5os.node.trainer import RoundApplied, RoundMissed, Trainer, build_training_state
from gpt5os.proto import pb

SPEC = RunSpec(
    run_id="unit",
    seed=7,
    model=ModelSpec(preset="unit", vocab_size=97, n_layer=1, n_embd=64, head_size=32),
    seq_len=8,
    batch_size=2,
    inner=InnerOptimizerSpec(
        lr=1e-3,
        min_lr=1e-4,
        weight_decay=0.0,
        beta1=0.9,
        beta2=0.95,
        eps=1e-8,
        warmup_tokens=0,
        decay_tokens=0,
    ),
    outer=OuterOptimizerSpec(lr=0.7, momentum=0.9, nesterov=True),
    inner_steps=4,
    compression="none",
)


class FakeClient:
    def __init__(self) -> None:
        self.reports: list[pb.ReportRoundRequest] = []
        self.certified: pb.CertifiedRound | None = None

    def report_round(self, request: pb.ReportRoundRequest) -> None:
        self.reports.append(request)

    def heartbeat(self, stats: pb.NodeStats) -> pb.HeartbeatResponse:
        return pb.HeartbeatResponse(certified=self.certified)


class FakeValidator:
    def loss(self, model, device) -> float:
        return 1.5


class FakeFeed:
    def record_loss(self, value: float, tokens: int) -> None:
        pass


def make_trainer(tmp_path: Path, peer: FakeSwarmPeer) -> tuple[Trainer, FakeClient]:
    client = FakeClient()
    session = Session(node_id="me", token="t", spec=SPEC, join=pb.JoinResponse(spec=SPEC.to_pb()))
    model, outer = build_training_state(SPEC, torch.device("cpu"))
    trainer = Trainer(
        NodeConfig(home=tmp_path, device="cpu"),
        client,  # type: ignore[arg-type]
        session,
        threading.Event(),
        model=model,
        outer=outer,
        peer=peer,  # type: ignore[arg-type]
        feed=FakeFeed(),  # type: ignore[arg-type]
        validator=FakeValidator(),  # type: ignore[arg-type]
    )
    return trainer, client


def drift(trainer: Trainer, by: float = 0.01) -> list[torch.Tensor]:
    """Pretend inner steps moved θ_local; returns the pseudo-gradient that makes."""
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.sub_(by)
    trainer._round_tokens = 500
    return trainer.outer.pseudo_gradients()


def state_of(outer: OuterState) -> tuple[dict, list[torch.Tensor]]:
    return outer.export()


# -- outer round outcomes --------------------------------------------------------------------


def test_alone_in_the_swarm_the_node_steps_with_its_own_pseudo_gradient(tmp_path: Path) -> None:
    peer = FakeSwarmPeer()
    peer.tracker.num_peers = 1
    trainer, client = make_trainer(tmp_path, peer)
    before = trainer.outer.digest()
    drift(trainer)
    outcome = trainer.outer_round()
    assert isinstance(outcome, RoundApplied)
    assert outcome.record.round == 1 and outcome.record.peer_node_ids == ["me"]
    assert peer.group_average.calls == []  # nobody to average with
    assert peer.tracker.fetches == 1  # after a fresh look
    assert trainer.outer.digest() != before
    assert [r.round for r in client.reports] == [1]
    assert client.reports[0].params_sha256 == trainer.outer.digest()
    assert peer.claims.published[-1].round == 1


def test_a_node_looks_at_the_swarm_afresh_before_it_averages(tmp_path: Path) -> None:
    """Its last fetch may predate its peers' first records (the tracker fetches every few
    seconds): a round stepped alone, or in a group without them, while they train would throw
    their work away."""
    peer = FakeSwarmPeer()
    peer.tracker.num_peers, peer.tracker.peers_after_fetch = 1, 3
    trainer, _ = make_trainer(tmp_path, peer)
    deltas = drift(trainer)
    peer.group_average.outcome = Settled([d * 0.5 for d in deltas], ["me", "other"], 1000)
    outcome = trainer.outer_round()
    assert isinstance(outcome, RoundApplied)
    assert peer.tracker.fetches == 1 and len(peer.group_average.calls) == 1
    assert outcome.record.peer_node_ids == ["me", "other"]


def test_a_settled_group_average_is_applied_with_the_groups_tokens(tmp_path: Path) -> None:
    peer = FakeSwarmPeer()
    trainer, client = make_trainer(tmp_path, peer)
    twin, _ = make_trainer(tmp_path, FakeSwarmPeer())  # applies the same average by hand
    deltas = drift(trainer)
    averaged = [d * 0.5 for d in deltas]
    peer.group_average.outcome = Settled(averaged, ["me", "other"], 1500, attempts=2)
    outcome = trainer.outer_round()
    assert isinstance(outcome, RoundApplied)
    assert outcome.record.peer_node_ids == ["me", "other"]
    assert outcome.record.group_tokens == 1500 and outcome.record.averaging_attempts == 2
    assert peer.group_average.calls[0][2] == 500  # our tokens went into the average
    twin.outer.apply_outer_step(averaged, tokens=1500, group_size=2)
    assert trainer.outer.digest() == twin.outer.digest()
    assert trainer.outer.swarm_tokens == 1500


def test_the_wire_buffers_are_released_once_the_average_in_them_is_applied(
    tmp_path: Path,
) -> None:
    """The settled average is the wire buffers themselves; releasing them (which zeroes them)
    must come after the outer step read them, and also when the round was missed."""
    peer = FakeSwarmPeer()
    trainer, _ = make_trainer(tmp_path, peer)
    twin, _ = make_trainer(tmp_path, FakeSwarmPeer())
    deltas = drift(trainer)
    wire = [d.reshape(-1) * 0.5 for d in deltas]
    expected = [w.clone() for w in wire]
    released = []
    peer.averager.release_wire = lambda: released.append([w.zero_() for w in wire]) or 0
    peer.group_average.outcome = Settled(wire, ["me", "other"], 1500)
    assert isinstance(trainer.outer_round(), RoundApplied)
    assert len(released) == 1
    twin.outer.apply_outer_step(expected, tokens=1500, group_size=2)
    assert trainer.outer.digest() == twin.outer.digest()
    peer.group_average.outcome = Cancelled()
    drift(trainer)
    assert isinstance(trainer.outer_round(), RoundMissed) and len(released) == 2


def test_cancelled_while_matching_means_the_round_was_missed(tmp_path: Path) -> None:
    peer = FakeSwarmPeer()
    peer.group_average.outcome = Cancelled()
    trainer, client = make_trainer(tmp_path, peer)
    before = trainer.outer.digest()
    drift(trainer)
    outcome = trainer.outer_round()
    assert isinstance(outcome, RoundMissed)
    assert trainer.outer.round == 0 and trainer.outer.digest() == before
    assert client.reports == []


@pytest.mark.parametrize("outcome", [Alone(), Incomplete(attempts=3)])
def test_no_group_or_no_checked_average_steps_with_own_work(tmp_path: Path, outcome) -> None:
    peer = FakeSwarmPeer()
    peer.group_average.outcome = outcome
    trainer, client = make_trainer(tmp_path, peer)
    twin, _ = make_trainer(tmp_path, FakeSwarmPeer())
    deltas = drift(trainer)
    result = trainer.outer_round()
    assert isinstance(result, RoundApplied) and result.record.peer_node_ids == ["me"]
    twin.outer.apply_outer_step(deltas, tokens=500, group_size=1)
    assert trainer.outer.digest() == twin.outer.digest()


@pytest.mark.parametrize("outcome", [Alone(), Incomplete(attempts=3)])
def test_a_refused_pseudo_gradient_is_not_applied_alone_either(tmp_path: Path, outcome) -> None:
    """The sender's guard refused to send Δ and no group formed: Δ must not move θ_global here
    (measured: every member refused in round 3 of the keeper test, and each stepped alone with
    what it had refused to send, so no two replicas agreed)."""
    peer = FakeSwarmPeer()
    peer.group_average.outcome = outcome
    peer.group_average.refused = True
    trainer, _ = make_trainer(tmp_path, peer)
    twin, _ = make_trainer(tmp_path, FakeSwarmPeer())
    deltas = drift(trainer)
    result = trainer.outer_round()
    assert isinstance(result, RoundApplied)
    twin.outer.apply_outer_step([torch.zeros_like(d) for d in deltas], tokens=0, group_size=1)
    assert trainer.outer.digest() == twin.outer.digest()
    assert trainer.outer.swarm_tokens == 0


def test_the_round_hands_its_learning_rates_to_the_guard(tmp_path: Path) -> None:
    peer = FakeSwarmPeer()
    peer.group_average.outcome = Alone()
    trainer, _ = make_trainer(tmp_path, peer)
    drift(trainer)
    trainer._round_lr_sum = 0.25
    trainer.outer_round()
    assert peer.group_average.lr_sums == [0.25]


def test_without_an_average_a_round_a_peer_already_finished_is_missed(tmp_path: Path) -> None:
    peer = FakeSwarmPeer()
    peer.group_average.outcome = Incomplete(attempts=3)
    peer.tracker.global_epoch = 1  # a peer took round 1 meanwhile
    trainer, _ = make_trainer(tmp_path, peer)
    drift(trainer)
    assert isinstance(trainer.outer_round(), RoundMissed)
    assert trainer.outer.round == 0


def test_a_non_finite_pseudo_gradient_is_discarded(tmp_path: Path) -> None:
    peer = FakeSwarmPeer()
    peer.tracker.num_peers = 1
    trainer, _ = make_trainer(tmp_path, peer)
    before = [g.clone() for g in trainer.outer.global_params]
    with torch.no_grad():
        next(trainer.model.parameters()).fill_(float("nan"))
    trainer._round_tokens = 10
    assert isinstance(trainer.outer_round(), RoundApplied)
    for g, b in zip(trainer.outer.global_params, before, strict=True):
        assert torch.equal(g, b)  # a zero step with zero momentum changes nothing


# -- re-sync against the certificate ---------------------------------------------------------


def ahead_state(tmp_path: Path, rounds: int = 2) -> tuple[dict, list[torch.Tensor], Target]:
    """A peer's state `rounds` rounds ahead, and its certificate."""
    other, _ = make_trainer(tmp_path, FakeSwarmPeer())
    for _ in range(rounds):
        other.outer.apply_outer_step(drift(other), tokens=700, group_size=2)
    meta, tensors = state_of(other.outer)
    return meta, tensors, Target(rounds, 1400, other.outer.digest())


def test_a_node_behind_the_certificate_adopts_the_certified_state(tmp_path: Path) -> None:
    peer = FakeSwarmPeer()
    trainer, client = make_trainer(tmp_path, peer)
    meta, tensors, target = ahead_state(tmp_path)
    bad = [t.clone() for t in tensors]
    bad[0].add_(1e-3)  # a tampered copy: same round, wrong weights
    peer.averager.served = {b"liar": (dict(meta), bad), b"good": (dict(meta), tensors)}
    peer.claims.board = {b"liar": RoundClaim(2, target.params_sha256, 9, "x")}  # forged claim
    client.certified = pb.CertifiedRound(round=2, tokens=1400, params_sha256=target.params_sha256)
    assert trainer.check_certificate(behind=True, force=True)
    assert peer.averager.downloads == [b"liar", b"good"]  # the forged claim cost one download
    assert trainer.outer.round == 2 and trainer.outer.digest() == target.params_sha256
    assert trainer.outer.swarm_tokens == 1400  # the certificate's count drives the LR schedule
    assert peer.averager.allow_state_sharing  # back on after the sync


def test_a_tampered_local_state_is_detected_and_repaired(tmp_path: Path) -> None:
    peer = FakeSwarmPeer()
    trainer, client = make_trainer(tmp_path, peer)
    good = state_of(trainer.outer)
    digest = trainer.outer.digest()
    with torch.no_grad():
        trainer.outer.global_params[0].add_(0.5)  # tampered in memory
    peer.averager.served = {b"keeper": good}
    peer.claims.board = {b"keeper": RoundClaim(0, digest, 0, KEEPER_NODE_ID)}
    client.certified = pb.CertifiedRound(round=0, tokens=0, params_sha256=digest)
    trainer.heartbeat.beat()
    assert trainer.check_certificate(force=True)
    assert trainer.outer.digest() == digest


def test_agreeing_with_the_certificate_downloads_nothing(tmp_path: Path) -> None:
    peer = FakeSwarmPeer()
    trainer, client = make_trainer(tmp_path, peer)
    peer.averager.served = {b"p": state_of(trainer.outer)}
    client.certified = pb.CertifiedRound(round=0, params_sha256=trainer.outer.digest())
    trainer.heartbeat.beat()
    assert not trainer.check_certificate(force=True)
    assert peer.averager.downloads == []


def test_no_source_with_the_certified_state_leaves_ours_untouched(tmp_path: Path) -> None:
    peer = FakeSwarmPeer()
    trainer, client = make_trainer(tmp_path, peer)
    meta, tensors, target = ahead_state(tmp_path)
    peer.averager.served = {b"stale": state_of(trainer.outer), b"gone": None}
    client.certified = pb.CertifiedRound(round=2, params_sha256=target.params_sha256)
    before = trainer.outer.digest()
    assert not trainer.check_certificate(behind=True, force=True)
    assert trainer.outer.round == 0 and trainer.outer.digest() == before


# -- state_sync's pure parts -----------------------------------------------------------------


def test_sources_matching_the_certificate_come_first_in_random_order_then_the_keeper() -> None:
    target = Target(5, 0, "d" * 64)
    claims = {bytes([i]): RoundClaim(5, "d" * 64, 2, f"n{i}") for i in range(6)} | {
        b"k": RoundClaim(5, "d" * 64, 0, KEEPER_NODE_ID),
        b"s": RoundClaim(4, "e" * 64, 2, "s"),
    }
    declared = [b"s", b"k", *claims.keys()]
    declared = list(dict.fromkeys(declared))
    firsts = set()
    for seed in range(20):
        order = order_sources(declared, claims, target, random.Random(seed))
        assert set(order[:6]) == {bytes([i]) for i in range(6)}
        assert order[6:] == [b"k", b"s"]
        firsts.add(order[0])
    assert len(firsts) > 2  # late joiners spread over the matching peers
    # an older round or another digest is no match, even when it sorts below the certified one;
    # digests are compared by value
    copy = "".join(["d"] * 64)
    odd = {
        b"o": RoundClaim(4, "d" * 64, 2, "o"),
        b"c": RoundClaim(5, "c" * 64, 2, "c"),
        b"v": RoundClaim(5, copy, 2, "v"),
    }
    for seed in range(8):
        assert order_sources([b"o", b"c", b"v"], odd, target, random.Random(seed))[0] == b"v"


def test_state_sync_reports_why_each_source_was_refused() -> None:
    target = Target(1, 0, tensors_sha256([torch.ones(2)]))
    sync = StateSync(
        sources=lambda: [b"a", b"b"],
        claims=dict,
        download=lambda p: ({"round": 0}, [torch.ones(2)]) if p == b"a" else None,
        adopt=lambda meta, tensors: pytest.fail("nothing should be adopted"),
        n_params=1,
        rng=random.Random(0),
    )
    outcome = sync.sync(target)
    assert isinstance(outcome, NotAdopted) and outcome.tried == 2
    assert any("round 0, certified 1" in r for r in outcome.reasons)
    adopted = []
    sync.download = lambda p: ({"round": 1}, [torch.ones(2), torch.zeros(2)])
    sync.adopt = lambda meta, tensors: adopted.append(meta)
    sync.sources = lambda: [bytes(range(20))]
    outcome = sync.sync(target)
    assert isinstance(outcome, Adopted) and adopted == [{"round": 1}]
    assert outcome.source == "…0f10111213"  # the peer id's last 5 bytes


def test_a_state_is_rejected_unless_round_and_digest_are_the_certified_ones() -> None:
    """Mutation survivors: a newer round is no better than an older one, metadata without a
    round is refused (not a KeyError), and the sharing toggle is off during the download."""
    good = [torch.ones(2)]
    target = Target(5, 0, tensors_sha256(good))
    assert rejection({"round": 5}, good, 1, target) == ""
    assert rejection({"round": 6}, good, 1, target) == "round 6, certified 5"
    assert rejection({}, good, 1, target) == "no metadata"
    assert rejection(None, good, 1, target) == "no metadata"
    assert "expected at least 2" in rejection({"round": 5}, good, 2, target)
    assert "is not the certified" in rejection({"round": 5}, [torch.zeros(2)], 1, target)
    # a digest that sorts below the certified one is still another digest
    assert "is not the certified" in rejection({"round": 5}, good, 1, Target(5, 0, "f" * 64))
    big = Target(int("1000"), 0, tensors_sha256(good))  # rounds compared by value, not identity
    assert rejection({"round": int("1000")}, good, 1, big) == ""
    assert Target.from_pb(None) is None and Target.from_pb(pb.CertifiedRound(round=3)) is None

    class Averager:
        allow_state_sharing = True

    averager, during = Averager(), []
    sync = StateSync(
        sources=lambda: [b"a"],
        claims=dict,
        download=lambda p: during.append(averager.allow_state_sharing) or None,
        adopt=lambda meta, tensors: None,
        n_params=1,
    )
    assert isinstance(sync_unshared(sync, averager, target), NotAdopted)
    assert during == [False] and averager.allow_state_sharing  # shared again afterwards


# -- the settle rule -------------------------------------------------------------------------


# -- OuterState ------------------------------------------------------------------------------


def test_outer_state_step_export_and_import_round_trip() -> None:
    model, outer = build_training_state(SPEC, torch.device("cpu"))
    assert outer.round == 0 and outer.group_size == 0
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.25)
    deltas = outer.pseudo_gradients()
    assert all(torch.allclose(d, torch.full_like(d, -0.25)) for d in deltas)
    outer.apply_outer_step(deltas, tokens=123, group_size=3)
    assert (outer.round, outer.swarm_tokens, outer.group_size) == (1, 123, 3)
    for g, p in zip(outer.global_params, model.parameters(), strict=True):
        assert torch.equal(g, p.detach())  # θ_local reset to θ_global
    assert any(m.abs().sum() > 0 for m in outer.momentum_buffers())
    meta, tensors = outer.export()

    model2, outer2 = build_training_state(SPEC, torch.device("cpu"))
    outer2.import_state(meta, tensors)
    assert outer2.digest() == outer.digest() and outer2.round == 1
    for a, b in zip(outer.momentum_buffers(), outer2.momentum_buffers(), strict=True):
        assert torch.equal(a, b)
    for g, p in zip(outer2.global_params, model2.parameters(), strict=True):
        assert torch.equal(g, p.detach())
    # the same step from the same state gives the same bits (replicas stay equal)
    outer.apply_outer_step(deltas, tokens=1, group_size=1)
    outer2.apply_outer_step(deltas, tokens=1, group_size=1)
    assert outer.digest() == outer2.digest()


def test_import_state_refuses_a_state_of_another_shape() -> None:
    _, outer = build_training_state(SPEC, torch.device("cpu"))
    meta, tensors = outer.export()
    with pytest.raises(ValueError):
        outer.import_state(meta, tensors[:-1])
    with pytest.raises(ValueError):
        outer.import_state(meta, [torch.zeros(3)] + tensors[1:])


def test_an_overlapped_round_lands_while_training_goes_on(tmp_path: Path) -> None:
    """join --overlap: the round's Δ is taken and θ_local restarts from θ_global_old; the all-reduce
    runs in a thread while steps go on; when it lands, θ_global takes the group's average and
    θ_local keeps the steps trained since (θ_local += θ_global_new − θ_global_old); the report
    comes from the background."""
    peer = FakeSwarmPeer()
    trainer, client = make_trainer(tmp_path, peer)
    trainer.config.overlap = True
    peer.tracker.ready_to_update_epoch = True
    deltas = drift(trainer)
    other = [d * 3 for d in deltas]  # the group's average differs from our own Δ
    peer.group_average.outcome = Settled(other, ["me", "peer"], 1000)
    old = [g.clone() for g in trainer.outer.global_params]

    trainer._after_step()  # the round is due: averaging starts in the background
    assert trainer._pending is not None and trainer.outer.round == 0
    for p, g in zip(trainer.model.parameters(), old, strict=True):
        assert torch.equal(p.detach(), g)  # training goes on from θ_global_old
    drift(trainer, by=0.02)  # the next round's first steps
    trainer._pending.thread.join(10)
    trainer._after_step()  # landed: the delayed outer step
    assert trainer._pending is None and trainer.outer.round == 1
    assert [r.round for r in trainer.rounds] == [1]
    for p, g, o in zip(trainer.model.parameters(), trainer.outer.global_params, old, strict=True):
        torch.testing.assert_close(p.detach(), o - 0.02 + (g - o))
    trainer._reporter.join(10)
    assert [r.round for r in client.reports] == [1]
    assert client.reports[0].params_sha256 == trainer.outer.digest()
    assert client.reports[0].val_loss == 1.5
    # the applied average is the group's, not our own Δ
    reference = OuterState(build_training_state(SPEC, torch.device("cpu"))[0], SPEC.outer)
    reference.apply_outer_step(other, tokens=1000, group_size=2)
    assert reference.digest() == trainer.outer.digest()
