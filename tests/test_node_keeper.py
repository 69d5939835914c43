"""The keeper's loop without processes: a fake swarm peer and a fake coordinator; OuterState and
the checkpoint directory are real."""

from __future__ import annotations

import errno
import threading
from pathlib import Path

import torch
from fake_swarm import FakeSwarmPeer
from gpt5os.coordinator.checkpoints import CheckpointDir
from gpt5os.node.claims import KEEPER_NODE_ID, RoundClaim
from gpt5os.node.group_average import Incomplete, Settled
from gpt5os.node.keeper import Keeper, import_checkpoint
from gpt5os.node.trainer import build_training_state, model_config
from gpt5os.proto import pb
from test_node_outer_round import SPEC


class FakeReporter:
    def __init__(self) -> None:
        self.reports: list[pb.KeeperReportRequest] = []
        self.certified: pb.CertifiedRound | None = None

    def report(self, request: pb.KeeperReportRequest) -> pb.KeeperReportResponse:
        self.reports.append(request)
        certified = self.certified or pb.CertifiedRound(
            round=request.round, tokens=request.tokens, params_sha256=request.params_sha256
        )
        return pb.KeeperReportResponse(certified=certified)


class FullDisk(CheckpointDir):
    def write(self, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")


def make_keeper(tmp_path: Path, peer: FakeSwarmPeer, checkpoints=None):
    model, outer = build_training_state(SPEC, torch.device("cpu"))
    reporter = FakeReporter()
    keeper = Keeper(
        outer=outer,
        names=[n for n, _ in model.named_parameters()],
        peer=peer,  # type: ignore[arg-type]
        reporter=reporter,  # type: ignore[arg-type]
        checkpoints=checkpoints or CheckpointDir(tmp_path / "run"),
        checkpoint_every=1,
        spec_json="{}",
        model_config=model_config(SPEC.model),
        stop=threading.Event(),
    )
    return keeper, reporter


def node_average(outer) -> list[torch.Tensor]:
    return [torch.full_like(g, 0.01) for g in outer.global_params]


def test_the_keeper_contributes_nothing_applies_the_average_certifies_and_checkpoints(
    tmp_path: Path,
) -> None:
    peer = FakeSwarmPeer()
    keeper, reporter = make_keeper(tmp_path, peer)
    twin, _ = make_keeper(tmp_path / "twin", FakeSwarmPeer())  # a node applying the same step
    averaged = node_average(keeper.outer)
    peer.group_average.outcome = Settled(averaged, ["a", "b"], 4096)
    assert keeper.average_round()
    _, deltas, tokens = peer.group_average.calls[0]
    assert tokens == 0 and all(d.abs().sum() == 0 for d in deltas)  # a zero contribution
    twin.outer.apply_outer_step(averaged, tokens=4096, group_size=2)
    digest = twin.outer.digest()
    assert keeper.outer.digest() == digest and keeper.outer.round == 1
    assert reporter.reports[-1].round == 1 and reporter.reports[-1].params_sha256 == digest
    assert reporter.reports[-1].tokens == 4096
    info = keeper.checkpoints.latest()
    assert info is not None and (info.round, info.params_sha256) == (1, digest)
    assert peer.claims.published[-1] == RoundClaim(1, digest, 2, KEEPER_NODE_ID)
    # a restarted keeper loads exactly that state
    restarted, _ = make_keeper(tmp_path / "other", FakeSwarmPeer())
    import_checkpoint(restarted.outer, restarted.names, keeper.checkpoints.load(info))
    assert restarted.outer.digest() == digest and restarted.outer.swarm_tokens == 4096
    for a, b in zip(
        restarted.outer.momentum_buffers(), keeper.outer.momentum_buffers(), strict=True
    ):
        assert torch.equal(a, b)


def test_without_a_settled_average_the_keeper_does_not_step(tmp_path: Path) -> None:
    peer = FakeSwarmPeer()
    peer.group_average.outcome = Incomplete(attempts=3)
    keeper, reporter = make_keeper(tmp_path, peer)
    before = keeper.outer.digest()
    assert not keeper.average_round()
    assert keeper.outer.round == 0 and keeper.outer.digest() == before
    assert reporter.reports == []


def test_a_full_disk_keeps_the_previous_checkpoint_and_is_reported(tmp_path: Path) -> None:
    peer = FakeSwarmPeer()
    keeper, _ = make_keeper(tmp_path, peer)
    assert keeper.write_checkpoint()  # round 0 on a healthy disk
    full = FullDisk(tmp_path / "run")
    keeper.checkpoints = full
    peer.group_average.outcome = Settled(node_average(keeper.outer), ["a"], 100)
    keeper.average_round()
    assert keeper.outer.round == 1  # training goes on
    assert "No space left" in keeper.checkpoint_error
    assert keeper.reporter.reports[-1].checkpoint_error == keeper.checkpoint_error
    assert keeper.reporter.reports[-1].checkpoint_round == 0
    ckpts = CheckpointDir(tmp_path / "run")
    assert ckpts.latest().round == 0
    assert ckpts.load(ckpts.latest()).round == 0  # the previous checkpoint still loads


def test_a_keeper_behind_the_certificate_catches_up_from_a_peer(tmp_path: Path) -> None:
    peer = FakeSwarmPeer()
    keeper, reporter = make_keeper(tmp_path, peer)
    ahead, _ = make_keeper(tmp_path / "ahead", FakeSwarmPeer())
    ahead.outer.apply_outer_step(node_average(ahead.outer), tokens=300, group_size=1)
    peer.averager.served = {b"node": ahead.outer.export()}
    keeper.certified = None
    reporter.certified = pb.CertifiedRound(round=1, tokens=300, params_sha256=ahead.outer.digest())
    keeper.step()  # reports (liveness), learns the certificate, catches up
    assert keeper.outer.round == 1 and keeper.outer.digest() == ahead.outer.digest()
    assert keeper.checkpoints.latest().round == 1
