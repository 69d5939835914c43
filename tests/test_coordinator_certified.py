"""Certified rounds at the coordinator: only the run's keeper key certifies a digest, nodes get
the certificate at Join and in heartbeats, a report that contradicts it is refused, and rounds
the keeper missed fall back to the nodes' majority. A real in-process gRPC server."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpt5os.coordinator import certify
from gpt5os.coordinator.keeper_auth import KEEPER_KEY_FILE, report_payload
from gpt5os.coordinator.server import CoordinatorServer
from gpt5os.coordinator.testkit import make_run, node_key, serving
from gpt5os.node.keeper import KeeperReporter
from gpt5os.proto import pb

pytestmark = pytest.mark.timeout(60)
Code = grpc.StatusCode
D1, D2, D3 = "1" * 64, "2" * 64, "3" * 64


@pytest.fixture
async def server(tmp_path: Path):
    make_run(tmp_path / "run", n_train=6, n_val=1, heartbeat_seconds=2.0, lease_seconds=10.0)
    async with serving(tmp_path / "run") as srv:
        yield srv


def keeper_key(server: CoordinatorServer) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(
        (server.run_dir / KEEPER_KEY_FILE).read_bytes(), password=None
    )
    assert isinstance(key, Ed25519PrivateKey)
    return key


def signed(key: Ed25519PrivateKey, **fields) -> pb.KeeperReportRequest:
    request = pb.KeeperReportRequest(unix=time.time(), nonce=secrets.token_bytes(16), **fields)
    request.signature = key.sign(report_payload(request))
    return request


async def join(stub) -> tuple[pb.NodeAuth, pb.JoinResponse]:
    reply = await stub.Join(
        pb.JoinRequest(
            public_key=node_key(), info=pb.NodeInfo(software_version="0.1.0", device="cpu")
        )
    )
    return pb.NodeAuth(node_id=reply.node_id, session_token=reply.session_token), reply


async def report(stub, auth, round_number: int, digest: str) -> None:
    await stub.ReportRound(
        pb.ReportRoundRequest(
            auth=auth,
            round=round_number,
            peer_node_ids=[auth.node_id],
            tokens=100,
            mean_loss=3.0,
            params_sha256=digest,
        )
    )


async def code_of(awaitable) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    return info.value.code(), info.value.details()


async def test_the_keepers_report_is_the_certificate_nodes_receive(server, stub) -> None:
    key = keeper_key(server)
    hello = await stub.KeeperReport(signed(key, hello=True))
    assert hello.spec.run_id and hello.dht_prefix and not hello.HasField("certified")
    reply = await stub.KeeperReport(
        signed(key, round=2, tokens=900, params_sha256=D1, dht_maddrs=["/ip4/127.0.0.1/tcp/9"])
    )
    assert (reply.certified.round, reply.certified.params_sha256) == (2, D1)
    assert reply.certified.source == "keeper"
    auth, joined = await join(stub)
    assert (joined.certified.round, joined.certified.tokens) == (2, 900)
    assert "/ip4/127.0.0.1/tcp/9" in joined.initial_peers  # joiners find the keeper
    beat = await stub.Heartbeat(pb.HeartbeatRequest(auth=auth, stats=pb.NodeStats()))
    assert beat.certified.params_sha256 == D1
    status = await stub.GetStatus(pb.GetStatusRequest())
    assert status.keeper.live and status.keeper.last_round == 2
    assert status.keeper.certified.params_sha256 == D1


async def test_only_the_runs_keeper_key_certifies_and_nothing_is_replayed(server, stub) -> None:
    key = keeper_key(server)
    stranger = Ed25519PrivateKey.generate()
    code, msg = await code_of(stub.KeeperReport(signed(stranger, round=1, params_sha256=D1)))
    assert code == Code.PERMISSION_DENIED and "keeper key" in msg
    good = signed(key, round=1, params_sha256=D2)
    tampered = pb.KeeperReportRequest()
    tampered.CopyFrom(good)
    tampered.params_sha256 = D3  # signature no longer covers it
    assert (await code_of(stub.KeeperReport(tampered)))[0] == Code.PERMISSION_DENIED
    old = signed(key, round=1, params_sha256=D1)
    old.unix -= 600
    old.signature = key.sign(report_payload(old))
    code, msg = await code_of(stub.KeeperReport(old))
    assert code == Code.UNAUTHENTICATED and "clock" in msg
    bad = signed(key, round=1, params_sha256="xyz")
    assert (await code_of(stub.KeeperReport(bad)))[0] == Code.INVALID_ARGUMENT
    status = await stub.GetStatus(pb.GetStatusRequest())
    assert not status.keeper.HasField("certified") and not status.keeper.live  # nothing changed
    await stub.KeeperReport(good)
    code, msg = await code_of(stub.KeeperReport(good))  # the same bytes again
    assert code == Code.UNAUTHENTICATED and "replayed" in msg


async def test_a_report_contradicting_the_certificate_is_refused_and_not_merged(
    server, stub
) -> None:
    """The bug of issue 10: a late node's "round 1" from the initial weights merged into the
    run's old round 1 record."""
    key = keeper_key(server)
    auth, _ = await join(stub)
    await report(stub, auth, 1, D1)
    await stub.KeeperReport(signed(key, round=1, tokens=100, params_sha256=D1))
    late, _ = await join(stub)
    code, msg = await code_of(report(stub, late, 1, D2))
    assert code == Code.FAILED_PRECONDITION and "re-sync" in msg
    status = await stub.GetStatus(pb.GetStatusRequest())
    [round_1] = [r for r in status.rounds if r.round == 1]
    assert list(round_1.node_ids) == [auth.node_id] and round_1.tokens == 100


async def test_a_round_the_keeper_missed_is_certified_by_the_nodes_majority(server, stub) -> None:
    nodes = [(await join(stub))[0] for _ in range(3)]
    for auth, digest in zip(nodes, (D1, D1, D2), strict=True):
        await report(stub, auth, 1, digest)
    server.swarm.tick(time.time() + 1)  # the round finished (all reported); no keeper is live
    cert = server.swarm.latest_certified()
    assert cert is not None and (cert.round, cert.params_sha256, cert.source) == (1, D1, "majority")
    events = [e[4] for e in server.swarm.events if e[2] == "round_certified"]
    assert any("majority" in e and "keeper did not report" in e for e in events), events
    # the keeper's word, when it comes, replaces the majority's
    await stub.KeeperReport(signed(keeper_key(server), round=1, params_sha256=D2))
    assert server.swarm.latest_certified().params_sha256 == D2


def test_the_majority_rule() -> None:
    assert certify.majority([D1, D1, D2]).digest == D1
    assert certify.majority([D1, D2]).digest is None  # a tie is no majority
    assert certify.majority(["", D1]).digest == D1  # a node without a digest does not vote
    assert certify.majority([]).digest is None
    assert certify.majority_due(finished_unix=100.0, keeper_last_unix=0.0, now=100.0)
    live = 95.0
    assert not certify.majority_due(finished_unix=100.0, keeper_last_unix=live, now=101.0)
    assert certify.majority_due(100.0, live, 100.0 + certify.KEEPER_GRACE_S)


def test_the_rules_at_their_edges() -> None:
    """Mutation survivors of certify.py: each rule at its boundary."""
    assert certify.majority([D1, D2, D3]).digest is None  # a plurality is no majority
    assert certify.majority([]) == certify.MajorityVerdict(None, 0, 0)
    # a keeper that never reported (0) is not live: the majority is due at once
    assert certify.majority_due(finished_unix=30.0, keeper_last_unix=0.0, now=30.0)
    live = certify.KEEPER_LIVE_S
    assert not certify.majority_due(100.0, keeper_last_unix=100.0 - live, now=100.0)  # live
    assert certify.majority_due(100.0, keeper_last_unix=100.0 - live - 0.5, now=100.0)
    assert not certify.majority_due(100.0, 99.0, 100.0 + certify.KEEPER_GRACE_S - 0.5)
    assert certify.majority_due(100.0, 99.0, 100.0 + certify.KEEPER_GRACE_S + 0.5)
    cert = certify.Certified(1, 10, D1, certify.KEEPER, 0.0)
    assert not certify.report_conflicts(None, D2)  # nothing certified yet
    assert not certify.report_conflicts(cert, "")  # a report without a digest
    assert not certify.report_conflicts(cert, D1)
    assert not certify.report_conflicts(cert, D1.encode().decode())  # equal, not the same object
    assert certify.report_conflicts(cert, D2) and certify.report_conflicts(cert, "0" * 64)
    # the keeper (or a node) past the latest certificate is a source of it
    assert certify.continue_from(5, True, keeper_round=6, node_rounds=[]) is None
    assert certify.continue_from(5, True, 4, node_rounds=[6]) is None


def test_the_keeper_signs_the_bytes_the_coordinator_checks(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    reporter = KeeperReporter("127.0.0.1:1", key)
    seen = []

    class Stub:
        def KeeperReport(self, request, timeout):  # noqa: N802 - the gRPC method's name
            seen.append(request)
            return pb.KeeperReportResponse()

    reporter._stub = Stub()  # type: ignore[assignment]
    reporter.report(pb.KeeperReportRequest(round=4, params_sha256=D1))
    reporter.close()
    [request] = seen
    key.public_key().verify(request.signature, report_payload(request))


async def test_a_failed_checkpoint_write_lands_in_the_event_log(server, stub) -> None:
    key = keeper_key(server)
    await stub.KeeperReport(signed(key, round=3, params_sha256=D1, checkpoint_round=2,
                                   checkpoint_error="checkpoint of round 3 failed: ENOSPC"))  # fmt: skip
    events = [(e[2], e[4]) for e in server.swarm.events]
    assert ("checkpoint_failed", "keeper: checkpoint of round 3 failed: ENOSPC") in events
    status = await stub.GetStatus(pb.GetStatusRequest())
    assert status.keeper.checkpoint_round == 2


def test_a_stuck_run_continues_from_the_keepers_round_the_rule() -> None:
    # the keeper missed round 5 and nobody live holds it: continue from the keeper's round 4
    assert certify.continue_from(5, keeper_live=True, keeper_round=4, node_rounds=[]) == 4
    assert certify.continue_from(5, True, 4, node_rounds=[0, 3]) == 4  # joiners hold nothing
    assert certify.continue_from(5, True, 4, node_rounds=[5]) is None  # a live node holds it
    assert certify.continue_from(5, True, 5, node_rounds=[]) is None  # the keeper holds it
    assert certify.continue_from(5, False, 4, node_rounds=[]) is None  # no live source at all


async def test_a_stuck_run_continues_from_the_keepers_round(server, stub) -> None:
    """Every node that held the last round left, the keeper missed it: after a grace period the
    coordinator forgets that round (event log says so) and a joiner is handed the keeper's."""
    key, sw, t0 = keeper_key(server), server.swarm, time.time()
    await stub.KeeperReport(signed(key, round=2, tokens=200, params_sha256=D1))
    nodes = [(await join(stub))[0] for _ in range(2)]
    for auth in nodes:
        await report(stub, auth, 3, D2)
    sw.tick(t0 + 1)
    sw.tick(t0 + 2)  # (the nodes that hold round 3 are here: no grace period starts)
    for auth in nodes:
        await stub.Leave(pb.LeaveRequest(auth=auth, reason="done"))
    stuck = t0 + certify.KEEPER_GRACE_S + 1
    sw.tick(stuck)  # the keeper missed round 3: the majority certifies it; nobody holds it
    assert (sw.latest_certified().round, sw.latest_certified().source) == (3, "majority")
    sw.tick(stuck + certify.STUCK_GRACE_S - 1)
    assert sw.latest_certified().round == 3  # not before the grace period
    sw.tick(stuck + certify.STUCK_GRACE_S)  # the keeper (reported at t0) is still live
    [event] = [e[4] for e in sw.events if e[2] == "rounds_abandoned"]
    assert "round 3" in event and "continues from the keeper's round 2" in event, event
    late, joined = await join(stub)
    assert (joined.certified.round, joined.certified.params_sha256) == (2, D1)
    status = await stub.GetStatus(pb.GetStatusRequest())
    assert [r.round for r in status.rounds] == []  # round 3 is forgotten
    await report(stub, late, 3, D3)  # the new round 3, from the keeper's state: not refused
    status = await stub.GetStatus(pb.GetStatusRequest())
    [round_3] = [r for r in status.rounds if r.round == 3]
    assert list(round_3.node_ids) == [late.node_id]
    # and it survives a restart: the store forgot round 3's old record and certificate too
    assert [c["round"] for c in sw.store.certified()] == [2]
