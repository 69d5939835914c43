"""The Coordinator gRPC API against a real in-process server on 127.0.0.1: the happy path, and
malformed, oversized and semantically wrong requests answered with the right status codes while
the server stays healthy and no state changes."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import sqlite3
import subprocess
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from gpt5os.coordinator.runs import load_run, update_spec
from gpt5os.coordinator.server import CoordinatorServer
from gpt5os.coordinator.store import DB_NAME, Store
from gpt5os.coordinator.testkit import aio_channel, make_run, node_key, serving
from gpt5os.proto import pb, pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

Code = grpc.StatusCode
pytestmark = pytest.mark.timeout(60)


class Clock:
    """The server's injected clock: real time plus an offset the test can jump forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
async def server(tmp_path: Path):
    make_run(tmp_path / "run", n_train=6, n_val=1, heartbeat_seconds=2.0, lease_seconds=10.0)
    clock = Clock()
    async with serving(tmp_path / "run", metrics_port=0, clock=clock) as srv:
        srv.test_clock = clock  # type: ignore[attr-defined]
        yield srv


async def join(stub, key: bytes | None = None, version: str = "0.1.0", name: str = "n"):
    """Join with a new key, or the key of the 32-byte seed `key` (the same seed, the same node)."""
    reply = await stub.Join(
        pb.JoinRequest(
            public_key=node_key(key),
            info=pb.NodeInfo(software_version=version, device="cpu", display_name=name),
        )
    )
    return pb.NodeAuth(node_id=reply.node_id, session_token=reply.session_token), reply


async def code_of(awaitable) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await awaitable
    return info.value.code(), info.value.details()


async def stream_code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in call:
            pass
    return info.value.code(), info.value.details()


async def healthy(server: CoordinatorServer) -> bool:
    async with grpc.aio.insecure_channel(server.address) as ch:
        reply = await health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="")
        )
        return reply.status == health_pb2.HealthCheckResponse.SERVING


async def until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached before the deadline")
        await asyncio.sleep(0.05)


async def test_node_lifecycle_end_to_end(server, stub) -> None:
    key = os.urandom(32)
    auth, reply = await join(stub, key)
    assert reply.node_id == hashlib.sha256(node_key(key)).hexdigest()[:20]
    assert reply.spec.model.preset == "tiny" and reply.spec.seq_len == 128
    assert reply.heartbeat_interval_s == 2.0 and reply.lease_duration_s == 10.0
    hb = await stub.Heartbeat(
        pb.HeartbeatRequest(
            auth=auth, stats=pb.NodeStats(tokens_per_second=50, tokens_trained=100, last_loss=9.0)
        )
    )
    assert not hb.paused and hb.spec_revision == 1
    lease = (await stub.LeaseShard(pb.LeaseShardRequest(auth=auth))).lease
    chunks = [
        c async for c in stub.FetchShard(pb.FetchShardRequest(auth=auth, shard_id=lease.shard_id))
    ]
    data = b"".join(c.data for c in chunks)
    assert hashlib.sha256(data).hexdigest() == lease.sha256 and len(data) == lease.size_bytes
    tail = [
        c
        async for c in stub.FetchShard(
            pb.FetchShardRequest(auth=auth, shard_id=lease.shard_id, offset=100)
        )
    ]
    assert tail[0].offset == 100 and b"".join(c.data for c in tail) == data[100:]
    hb = await stub.Heartbeat(pb.HeartbeatRequest(auth=auth, stats=pb.NodeStats()))
    assert [x.shard_id for x in hb.leases] == [lease.shard_id]
    done = await stub.CompleteShard(
        pb.CompleteShardRequest(
            auth=auth, shard_id=lease.shard_id, tokens_trained=4096, mean_loss=8.0
        )
    )
    assert done.counted
    again = await stub.CompleteShard(
        pb.CompleteShardRequest(
            auth=auth, shard_id=lease.shard_id, tokens_trained=4096, mean_loss=8.0
        )
    )
    assert not again.counted and "already counted" in again.message
    val = [c async for c in stub.FetchShard(pb.FetchShardRequest(auth=auth, shard_id="val-00006"))]
    assert sum(len(c.data) for c in val) == val[0].total_size > 0
    snap = await stub.GetStatus(pb.GetStatusRequest())
    assert snap.run.shards.done == 1 and snap.run.shards.total == 6 and snap.run.active_nodes == 1
    # credit: the tokens of the shard it leased and completed, not the 100 its heartbeat claimed
    assert snap.nodes[0].tokens_trained == lease.tokens and snap.nodes[0].shards_done == 1
    assert snap.run.tokens_trained == lease.tokens
    detail = await stub.GetNode(pb.GetNodeRequest(node_id=auth.node_id[:8]))
    assert detail.node.node_id == auth.node_id and not detail.leases
    await stub.Leave(pb.LeaveRequest(auth=auth, reason="done"))
    code, _ = await code_of(stub.Heartbeat(pb.HeartbeatRequest(auth=auth)))
    assert code is Code.UNAUTHENTICATED
    kinds = [e.kind for e in (await stub.GetStatus(pb.GetStatusRequest())).events]
    assert kinds[:1] == ["joined"] and "shard_completed" in kinds and kinds[-1] == "left"


async def test_rejoin_keeps_record_and_credit_with_a_new_token(stub) -> None:
    key = os.urandom(32)
    first, _ = await join(stub, key)
    await stub.Heartbeat(pb.HeartbeatRequest(auth=first, stats=pb.NodeStats(tokens_trained=500)))
    lease = (await stub.LeaseShard(pb.LeaseShardRequest(auth=first))).lease
    done = pb.CompleteShardRequest(auth=first, shard_id=lease.shard_id, tokens_trained=10**15)
    assert (await stub.CompleteShard(done)).counted
    second, _ = await join(stub, key)
    assert second.node_id == first.node_id and second.session_token != first.session_token
    code, _ = await code_of(stub.Heartbeat(pb.HeartbeatRequest(auth=first)))
    assert code is Code.UNAUTHENTICATED
    await stub.Heartbeat(pb.HeartbeatRequest(auth=second, stats=pb.NodeStats(tokens_trained=200)))
    snap = await stub.GetStatus(pb.GetStatusRequest())
    # credit is the completed lease's tokens: neither heartbeat claim nor the completion's claim
    assert [n.tokens_trained for n in snap.nodes] == [lease.tokens]


@pytest.mark.parametrize(
    ("request_", "code", "words"),
    [
        (
            pb.JoinRequest(public_key=b"x" * 31, info=pb.NodeInfo(software_version="0.1.0")),
            Code.INVALID_ARGUMENT,
            "32-byte",
        ),
        (pb.JoinRequest(public_key=b"x" * 32), Code.INVALID_ARGUMENT, "software_version"),
        (
            pb.JoinRequest(public_key=node_key(), info=pb.NodeInfo(software_version="0.0.1")),
            Code.FAILED_PRECONDITION,
            "pip install -U gpt5os",
        ),
        (
            pb.JoinRequest(
                public_key=b"x" * 32, info=pb.NodeInfo(software_version="0.1.0", device="d" * 300)
            ),
            Code.INVALID_ARGUMENT,
            "info.device",
        ),
    ],
)
async def test_bad_joins_are_refused_and_change_nothing(
    server, stub, request_, code, words
) -> None:
    got, details = await code_of(stub.Join(request_))
    assert got is code and words in details
    assert list((await stub.GetStatus(pb.GetStatusRequest())).nodes) == []
    assert await healthy(server)


async def test_malformed_and_wrong_requests(server, stub) -> None:
    auth, _ = await join(stub)
    other, _ = await join(stub)
    bad_token = pb.NodeAuth(node_id=auth.node_id, session_token="nope")
    cases = [
        (stub.Heartbeat(pb.HeartbeatRequest(auth=bad_token)), Code.UNAUTHENTICATED),
        (
            stub.Heartbeat(
                pb.HeartbeatRequest(auth=pb.NodeAuth(node_id="a" * 20, session_token="t"))
            ),
            Code.UNAUTHENTICATED,
        ),
        (
            stub.Heartbeat(pb.HeartbeatRequest(auth=pb.NodeAuth(node_id="XYZ", session_token="t"))),
            Code.INVALID_ARGUMENT,
        ),
        (
            stub.Heartbeat(
                pb.HeartbeatRequest(auth=auth, stats=pb.NodeStats(tokens_per_second=math.nan))
            ),
            Code.INVALID_ARGUMENT,
        ),
        (
            stub.Heartbeat(
                pb.HeartbeatRequest(auth=auth, stats=pb.NodeStats(tokens_per_second=-1))
            ),
            Code.INVALID_ARGUMENT,
        ),
        (
            stub.Heartbeat(
                pb.HeartbeatRequest(auth=auth, stats=pb.NodeStats(dht_maddrs=["not-a-maddr"]))
            ),
            Code.INVALID_ARGUMENT,
        ),
        (
            stub.CompleteShard(pb.CompleteShardRequest(auth=auth, shard_id="no-such-shard")),
            Code.NOT_FOUND,
        ),
        (
            stub.CompleteShard(pb.CompleteShardRequest(auth=auth, shard_id="")),
            Code.INVALID_ARGUMENT,
        ),
        (
            stub.CompleteShard(pb.CompleteShardRequest(auth=auth, shard_id="val-00006")),
            Code.INVALID_ARGUMENT,
        ),
        (
            stub.CompleteShard(
                pb.CompleteShardRequest(auth=auth, shard_id="train-00000", mean_loss=math.inf)
            ),
            Code.INVALID_ARGUMENT,
        ),
        (stub.ReportRound(pb.ReportRoundRequest(auth=auth, round=0)), Code.INVALID_ARGUMENT),
        (
            stub.ReportRound(pb.ReportRoundRequest(auth=auth, round=1, peer_node_ids=["zz"])),
            Code.INVALID_ARGUMENT,
        ),
        (
            stub.ReportRound(pb.ReportRoundRequest(auth=auth, round=1, params_sha256="abc")),
            Code.INVALID_ARGUMENT,
        ),
        (
            stub.ReportRound(pb.ReportRoundRequest(auth=auth, round=1, val_loss=math.nan)),
            Code.INVALID_ARGUMENT,
        ),
        (stub.GetNode(pb.GetNodeRequest(node_id="ffffffffffff")), Code.NOT_FOUND),
        (stub.GetNode(pb.GetNodeRequest()), Code.INVALID_ARGUMENT),
        (stub.Leave(pb.LeaveRequest(auth=bad_token)), Code.UNAUTHENTICATED),
    ]
    for call, code in cases:
        got, details = await code_of(call)
        assert got is code, (got, details)
        assert details  # every refusal says why
    assert (await stream_code(stub.FetchShard(pb.FetchShardRequest(auth=auth, shard_id="nope"))))[
        0
    ] is Code.NOT_FOUND
    lease = (await stub.LeaseShard(pb.LeaseShardRequest(auth=auth))).lease
    foreign = await stream_code(
        stub.FetchShard(pb.FetchShardRequest(auth=other, shard_id=lease.shard_id))
    )
    assert foreign[0] is Code.FAILED_PRECONDITION and "LeaseShard" in foreign[1]
    past = await stream_code(
        stub.FetchShard(pb.FetchShardRequest(auth=auth, shard_id=lease.shard_id, offset=10**9))
    )
    assert past[0] is Code.OUT_OF_RANGE
    assert (await stream_code(stub.WatchSwarm(pb.WatchSwarmRequest(min_interval_s=-1))))[
        0
    ] is Code.INVALID_ARGUMENT
    # a foreign completion is answered, not counted, and the holder keeps the lease
    reply = await stub.CompleteShard(
        pb.CompleteShardRequest(auth=other, shard_id=lease.shard_id, tokens_trained=1)
    )
    assert not reply.counted
    snap = await stub.GetStatus(pb.GetStatusRequest())
    assert snap.run.shards.done == 0 and snap.run.shards.leased == 1
    assert all(n.tokens_trained == 0 and n.shards_done == 0 for n in snap.nodes)
    assert snap.run.outer_round == 0
    assert await healthy(server)


async def test_oversized_request_is_refused_and_server_stays_healthy(server, stub) -> None:
    huge = pb.JoinRequest(
        public_key=b"x" * 32,
        info=pb.NodeInfo(software_version="0.1.0", display_name="x" * (5 << 20)),
    )
    code, _ = await code_of(stub.Join(huge))
    assert code is Code.RESOURCE_EXHAUSTED
    assert await healthy(server)
    assert list((await stub.GetStatus(pb.GetStatusRequest())).nodes) == []


class ManualClock:
    """A clock that moves only when the test says so: each way a lease comes back is tested
    alone, with the other ways' thresholds provably not crossed."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def manual_server(run_dir: Path, **settings):
    make_run(run_dir, n_train=6, n_val=1, **settings)
    clock = ManualClock()
    async with serving(run_dir, clock=clock) as srv, aio_channel(srv.address) as channel:
        yield clock, pb_grpc.CoordinatorStub(channel)


async def _status(stub) -> pb.SwarmSnapshot:
    return await stub.GetStatus(pb.GetStatusRequest())


async def test_expired_lease_alone_goes_back_and_is_not_credited(tmp_path) -> None:
    # heartbeat 2 s: a node is lost after 6 s of silence; the lease term is 5 s.
    async with manual_server(tmp_path / "run", heartbeat_seconds=2.0, lease_seconds=5.0) as (
        clock,
        stub,
    ):
        slow, _ = await join(stub)
        lease = (await stub.LeaseShard(pb.LeaseShardRequest(auth=slow))).lease
        fast, _ = await join(stub)
        clock.now += 5.5  # past the lease, not past the lost-node threshold

        async def expired():
            snap = await _status(stub)
            return snap.run.shards.leased == 0 and snap

        snap = await until(expired)
        states = {n.node_id: n.state for n in snap.nodes}
        assert states == {slow.node_id: "active", fast.node_id: "active"}
        kinds = [(e.kind, e.node_id) for e in snap.events]
        assert ("lease_expired", slow.node_id) in kinds and ("lost", slow.node_id) not in kinds
        again = (await stub.LeaseShard(pb.LeaseShardRequest(auth=fast))).lease
        assert again.shard_id == lease.shard_id  # the returned shard is retried first
        late = await stub.CompleteShard(
            pb.CompleteShardRequest(auth=slow, shard_id=lease.shard_id, tokens_trained=9)
        )
        assert not late.counted
        ok = await stub.CompleteShard(
            pb.CompleteShardRequest(auth=fast, shard_id=lease.shard_id, tokens_trained=9)
        )
        assert ok.counted
        nodes = {n.node_id: n for n in (await _status(stub)).nodes}
        assert nodes[fast.node_id].shards_done == 1 and nodes[slow.node_id].shards_done == 0


async def test_lost_node_alone_releases_its_leases(tmp_path) -> None:
    # a 60 s lease term: only the lost-node rule (3 silent heartbeats = 6 s) can free the shard.
    async with manual_server(tmp_path / "run", heartbeat_seconds=2.0, lease_seconds=60.0) as (
        clock,
        stub,
    ):
        auth, _ = await join(stub)
        lease = (await stub.LeaseShard(pb.LeaseShardRequest(auth=auth))).lease
        clock.now += 7.0

        async def lost():
            snap = await _status(stub)
            return snap.nodes[0].state == "lost" and snap

        snap = await until(lost)
        assert snap.run.shards.leased == 0 and snap.run.shards.pending == 6
        other, _ = await join(stub)
        again = (await stub.LeaseShard(pb.LeaseShardRequest(auth=other))).lease
        assert again.shard_id == lease.shard_id
        # a lost node that heartbeats again is active again, without its old leases
        hb = await stub.Heartbeat(pb.HeartbeatRequest(auth=auth))
        assert list(hb.leases) == []
        late = await stub.CompleteShard(
            pb.CompleteShardRequest(auth=auth, shard_id=lease.shard_id, tokens_trained=9)
        )
        assert not late.counted


async def test_leave_releases_leases_at_once(tmp_path) -> None:
    # the clock never moves: neither expiry nor the lost-node rule can free anything.
    async with manual_server(tmp_path / "run", heartbeat_seconds=2.0, lease_seconds=60.0) as (
        _clock,
        stub,
    ):
        auth, _ = await join(stub)
        held = {(await stub.LeaseShard(pb.LeaseShardRequest(auth=auth))).lease.shard_id}
        held.add((await stub.LeaseShard(pb.LeaseShardRequest(auth=auth))).lease.shard_id)
        assert (await _status(stub)).run.shards.leased == 2
        await stub.Leave(pb.LeaveRequest(auth=auth, reason="Ctrl-C"))
        snap = await _status(stub)  # no waiting: Leave answers after the release is committed
        assert snap.run.shards.leased == 0 and snap.nodes[0].state == "left"
        kinds = [e.kind for e in snap.events]
        assert kinds.count("lease_released") == 2 and "left" in kinds
        other, _ = await join(stub)
        first = (await stub.LeaseShard(pb.LeaseShardRequest(auth=other))).lease.shard_id
        second = (await stub.LeaseShard(pb.LeaseShardRequest(auth=other))).lease.shard_id
        assert {first, second} == held


async def test_rounds_aggregate_reports(server, stub) -> None:
    a, _ = await join(stub)
    b, _ = await join(stub)
    peers = sorted([a.node_id, b.node_id])
    digest = "ab" * 32
    await stub.ReportRound(
        pb.ReportRoundRequest(
            auth=a,
            round=1,
            peer_node_ids=peers,
            tokens=300,
            mean_loss=6.0,
            params_sha256=digest,
            duration_s=3,
        )
    )
    snap = await stub.GetStatus(pb.GetStatusRequest())
    assert snap.rounds[0].peers == 1 and list(snap.loss_history) == []  # b has not reported yet
    await stub.ReportRound(
        pb.ReportRoundRequest(
            auth=b,
            round=1,
            peer_node_ids=peers,
            tokens=100,
            mean_loss=10.0,
            params_sha256=digest,
            val_loss=5.5,
        )
    )
    snap = await stub.GetStatus(pb.GetStatusRequest())
    r = snap.rounds[0]
    assert (r.round, r.peers, r.tokens, sorted(r.node_ids)) == (1, 2, 400, peers)
    assert r.mean_loss == pytest.approx(7.0)  # (300*6 + 100*10) / 400
    assert r.val_loss == pytest.approx(5.5) and r.duration_s == 3
    assert [(p.tokens, p.loss) for p in snap.loss_history] == [(400, pytest.approx(7.0))]
    assert [p.loss for p in snap.val_loss_history] == [pytest.approx(5.5)]
    assert snap.run.outer_round == 1
    assert "round_finished" in [e.kind for e in snap.events]
    assert {n.rounds for n in snap.nodes} == {1}


async def test_watch_swarm_snapshot_then_deltas(server, stub) -> None:
    auth, _ = await join(stub, name="watched")
    call = stub.WatchSwarm(pb.WatchSwarmRequest(min_interval_s=0.1))
    first = await call.read()
    assert first.WhichOneof("update") == "snapshot" and len(first.snapshot.nodes) == 1
    await stub.Heartbeat(
        pb.HeartbeatRequest(auth=auth, stats=pb.NodeStats(tokens_per_second=7, last_loss=3.0))
    )
    newcomer, _ = await join(stub, name="newcomer")
    seen_nodes: dict[str, pb.NodeStatus] = {}
    events: list[str] = []
    while len(seen_nodes) < 2 or seen_nodes[auth.node_id].tokens_per_second != 7:
        update = await asyncio.wait_for(call.read(), 10)
        assert update.WhichOneof("update") == "delta"
        assert update.delta.run.run_id == first.snapshot.run.run_id
        seen_nodes.update({n.node_id: n for n in update.delta.nodes})
        events += [e.kind for e in update.delta.events]
    assert events == ["joined"] and newcomer.node_id in seen_nodes
    call.cancel()


async def test_pause_resume_and_ban_from_the_store(server, stub, tmp_path) -> None:
    auth, _ = await join(stub)
    store = Store(tmp_path / "run" / DB_NAME)
    try:
        with store.tx():
            store.set_meta("paused", 1)
        await until(lambda: _paused(stub, auth, True))  # heartbeats: no side effects
        assert await _lease_reason(stub, auth, "paused")
        with store.tx():
            store.set_meta("paused", 0)
        await until(lambda: _paused(stub, auth, False))
        assert await _granted(stub, auth)
        with store.tx():
            store.add_ban(auth.node_id, time.time(), "test ban")

        async def refused():
            try:
                await stub.Heartbeat(pb.HeartbeatRequest(auth=auth))
            except grpc.aio.AioRpcError as e:
                return e.code() is Code.PERMISSION_DENIED
            return False

        await until(refused)
    finally:
        store.close()
    snap = await stub.GetStatus(pb.GetStatusRequest())
    assert snap.nodes[0].state == "banned" and snap.run.shards.leased == 0
    kinds = [e.kind for e in snap.events]
    assert "paused" in kinds and "resumed" in kinds and "banned" in kinds
    code, _ = await code_of(
        stub.Join(pb.JoinRequest(public_key=b"", info=pb.NodeInfo(software_version="0.1.0")))
    )
    assert code is Code.INVALID_ARGUMENT


async def _paused(stub, auth, expected: bool) -> bool:
    return (await stub.Heartbeat(pb.HeartbeatRequest(auth=auth))).paused is expected


async def _lease_reason(stub, auth, word: str) -> bool:
    reply = await stub.LeaseShard(pb.LeaseShardRequest(auth=auth))
    return not reply.granted and word in reply.reason and reply.retry_after_s > 0


async def _granted(stub, auth) -> bool:
    return (await stub.LeaseShard(pb.LeaseShardRequest(auth=auth))).granted


async def test_banned_key_cannot_join(server, stub, tmp_path) -> None:
    key = os.urandom(32)
    auth, _ = await join(stub, key)
    store = Store(tmp_path / "run" / DB_NAME)
    with store.tx():
        store.add_ban(auth.node_id, time.time(), "x")
    store.close()

    async def refused():
        try:
            await stub.Join(
                pb.JoinRequest(public_key=node_key(key), info=pb.NodeInfo(software_version="0.1.0"))
            )
        except grpc.aio.AioRpcError as e:
            return e.code() is Code.PERMISSION_DENIED
        return False

    await until(refused)


async def test_health_reflection_and_metrics(server, stub) -> None:
    await join(stub)
    assert await healthy(server)

    def list_services() -> list[str]:  # a sync client: off the loop the server runs in
        with grpc.insecure_channel(server.address) as ch:
            return list(ProtoReflectionDescriptorDatabase(ch).get_services())

    services = await asyncio.to_thread(list_services)
    assert "gpt5os.v1.Coordinator" in services and "grpc.health.v1.Health" in services

    def scrape() -> str:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5
        ) as r:
            return r.read().decode()

    async def has_active_node():
        text = await asyncio.to_thread(scrape)
        return 'gpt5os_nodes{state="active"} 1.0' in text and text

    text = await until(has_active_node)
    assert 'gpt5os_rpc_total{code="OK",method="Join"} 1.0' in text
    assert 'gpt5os_shards{state="pending"} 6.0' in text


async def test_spec_change_reaches_nodes_with_a_new_revision(server, stub, tmp_path) -> None:
    auth, reply = await join(stub)
    assert reply.spec.revision == 1
    spec = update_spec(tmp_path / "run", {"inner_lr": "0.0005", "outer.nesterov": "false"})
    assert spec.revision == 2

    async def new_revision():
        hb = await stub.Heartbeat(pb.HeartbeatRequest(auth=auth))
        return hb.spec_revision == 2

    await until(new_revision)
    _, again = await join(stub)
    assert (
        again.spec.revision == 2 and again.spec.inner.lr == 0.0005 and not again.spec.outer.nesterov
    )
    with pytest.raises(ValueError, match="unknown"):
        update_spec(tmp_path / "run", {"warp": "9"})
    with pytest.raises(ValueError, match="expected a int"):
        update_spec(tmp_path / "run", {"seq_len": "long"})
    assert load_run(tmp_path / "run").spec.revision == 2  # refused changes wrote nothing


def _disk_full(*_args, **_kwargs):
    raise sqlite3.OperationalError("database or disk is full")


async def test_disk_full_during_a_commit_fails_cleanly_and_loses_nothing(server, stub) -> None:
    auth, _ = await join(stub)
    first = (await stub.LeaseShard(pb.LeaseShardRequest(auth=auth))).lease.shard_id
    second = (await stub.LeaseShard(pb.LeaseShardRequest(auth=auth))).lease.shard_id
    done = await stub.CompleteShard(pb.CompleteShardRequest(auth=auth, shard_id=first))
    assert done.counted
    server.swarm.store.add_completion = _disk_full  # the next completion's commit fails
    code, details = await code_of(
        stub.CompleteShard(pb.CompleteShardRequest(auth=auth, shard_id=second))
    )
    assert code is Code.UNAVAILABLE and "disk is full" in details and "retry" in details
    assert await healthy(server)
    snap = await _status(stub)  # back at the last commit: the failed completion did not happen
    assert snap.run.shards.done == 1 and snap.run.shards.leased == 1
    retry = await stub.CompleteShard(pb.CompleteShardRequest(auth=auth, shard_id=second))
    assert retry.counted  # the space is back (a fresh connection): the retry counts, once
    await server.stop(grace=0.1)
    store = Store(server.run_dir / DB_NAME, readonly=True)
    try:
        assert sorted(r["shard_id"] for r in store.completions()) == sorted([first, second])
    finally:
        store.close()


async def test_real_sqlite_full_answers_unavailable_not_internal(server, stub) -> None:
    await join(stub)
    db = server.swarm.store.db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages}")  # SQLITE_FULL, as on a full disk
    names = []
    for i in range(500):
        try:
            await join(stub, name=f"filler-{i:03d}-" + "x" * 50)
        except grpc.aio.AioRpcError as e:
            assert e.code() is Code.UNAVAILABLE and "full" in e.details(), e.details()
            break
        names.append(f"filler-{i:03d}")
    else:
        raise AssertionError("the database never filled up")
    assert await healthy(server)
    snap = await _status(stub)  # every acknowledged join is there, the refused one is not
    assert len(snap.nodes) == 1 + len(names)
    await join(stub, name="after")  # the reopened connection has room again


def _can_mount_tmpfs() -> bool:
    if os.geteuid() != 0:
        return False
    probe = Path(f"/tmp/gpt5os-tmpfs-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0  # fmt: skip
        if ok:
            subprocess.run(["umount", str(probe)], check=True)
        return ok
    finally:
        probe.rmdir()


@pytest.mark.skipif(not _can_mount_tmpfs(), reason="needs root to mount a small tmpfs")
async def test_real_enospc_on_a_full_tmpfs(tmp_path) -> None:
    """The run directory on a 4 MiB tmpfs that a filler file fills up: a real ENOSPC."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    try:
        make_run(mnt / "run", n_train=4, n_val=1, shard_tokens=256)
        srv = CoordinatorServer(mnt / "run", port=0)
        await srv.start()
        try:
            async with aio_channel(srv.address) as ch:
                stub = pb_grpc.CoordinatorStub(ch)
                auth, _ = await join(stub)
                first = (await stub.LeaseShard(pb.LeaseShardRequest(auth=auth))).lease.shard_id
                second = (await stub.LeaseShard(pb.LeaseShardRequest(auth=auth))).lease.shard_id
                assert (
                    await stub.CompleteShard(pb.CompleteShardRequest(auth=auth, shard_id=first))
                ).counted
                filler = mnt / "filler"
                with open(filler, "wb") as f, contextlib.suppress(OSError):
                    while True:
                        f.write(b"\0" * 65536)
                codes = []
                for i in range(200):  # joins until a commit needs a page the disk lacks
                    try:
                        await join(stub, name=f"f{i}-" + "x" * 50)
                    except grpc.aio.AioRpcError as e:
                        codes.append(e.code())
                        break
                assert codes == [Code.UNAVAILABLE], codes
                filler.unlink()  # space is back
                retry = await stub.CompleteShard(
                    pb.CompleteShardRequest(auth=auth, shard_id=second)
                )
                assert retry.counted
        finally:
            await srv.stop(grace=0.1)
        store = Store(mnt / "run" / DB_NAME, readonly=True)
        try:
            assert sorted(r["shard_id"] for r in store.completions()) == sorted([first, second])
        finally:
            store.close()
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)
