"""Limits (coordinator/limits.py): the token bucket and stream slots as pure logic with an injected
clock, then a real server that refuses a node's flood and a dashboard too many with
RESOURCE_EXHAUSTED, a message that says what to do, and no state change."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from gpt5os.coordinator.limits import (
    Limits,
    RateLimiter,
    StreamSlots,
    TokenBucket,
    client_key,
    peer_host,
)
from gpt5os.coordinator.server import CoordinatorServer
from gpt5os.coordinator.testkit import aio_channel, make_run, node_key
from gpt5os.proto import pb, pb_grpc


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    b = TokenBucket(rate=2.0, burst=3, now=0.0)
    assert [b.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take(0.0) == pytest.approx(0.5)  # one token every 0.5 s
    assert b.take(0.25) == pytest.approx(0.25)
    assert b.take(0.5) == 0.0
    assert b.take(100.0) == 0.0 and b.tokens == pytest.approx(2.0)  # refills to the burst only


def test_rate_limiter_keeps_keys_apart_and_forgets_the_oldest() -> None:
    clock = Clock()
    limiter = RateLimiter(1.0, 2, clock=clock, max_keys=2)
    assert limiter.check("a") == 0 and limiter.check("a") == 0
    assert limiter.check("a") == pytest.approx(1.0)
    assert limiter.check("b") == 0  # another node is not slowed down by a's flood
    clock.t += 1.0
    assert limiter.check("a") == 0
    limiter.check("c")  # a third key: the least recently used one (b) is forgotten
    assert len(limiter) == 2
    assert RateLimiter(0.0, 1, clock=clock).check("x") == 0  # rate 0: no limit


def test_stream_slots() -> None:
    slots = StreamSlots(2)
    assert slots.acquire() and slots.acquire() and not slots.acquire()
    slots.release()
    assert slots.acquire()
    unlimited = StreamSlots(0)
    assert all(unlimited.acquire() for _ in range(1000))


def test_client_key() -> None:
    hb = pb.HeartbeatRequest(auth=pb.NodeAuth(node_id="abc", session_token="t"))
    assert client_key(hb, "ipv4:1.2.3.4:5") == "node:abc"
    join_a = client_key(pb.JoinRequest(public_key=b"k" * 32), "ipv4:1.2.3.4:5")
    assert join_a.startswith("key:") and join_a != client_key(
        pb.JoinRequest(public_key=b"j" * 32), "ipv4:1.2.3.4:5"
    )
    assert client_key(pb.GetStatusRequest(), "ipv4:1.2.3.4:5678") == "peer:1.2.3.4"
    assert peer_host("ipv6:[::1]:5678") == "::1" and peer_host("unix:/x") == "unix:/x"


@pytest.fixture
async def limited(tmp_path: Path):
    make_run(tmp_path / "run", n_train=4, n_val=1)
    srv = CoordinatorServer(
        tmp_path / "run", port=0, limits=Limits(node_rate=1.0, node_burst=3, max_watchers=1)
    )
    clock = Clock()
    srv.limiter.rates.clock = clock  # the buckets refill only when the test says so
    await srv.start()
    srv.test_clock = clock  # type: ignore[attr-defined]
    try:
        async with aio_channel(srv.address) as channel:  # signs with keys from node_key()
            yield srv, pb_grpc.CoordinatorStub(channel)
    finally:
        await srv.stop(grace=0.1)


async def _join(stub) -> pb.NodeAuth:
    reply = await stub.Join(
        pb.JoinRequest(public_key=node_key(), info=pb.NodeInfo(software_version="99.0"))
    )
    return pb.NodeAuth(node_id=reply.node_id, session_token=reply.session_token)


async def test_a_flooding_node_is_refused_and_others_are_not(limited) -> None:
    srv, stub = limited
    auth = await _join(stub)  # the Join is charged to the key, not to the node id
    stats = pb.NodeStats(tokens_per_second=5.0, tokens_trained=10, last_loss=4.0)
    for _ in range(3):
        await stub.Heartbeat(pb.HeartbeatRequest(auth=auth, stats=stats))
    node = srv.swarm.nodes[auth.node_id]
    before = (node.last_seen_unix, node.tokens_per_second, srv.swarm.version)
    flood = pb.NodeStats(tokens_per_second=99.0, tokens_trained=10, last_loss=1.0)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.Heartbeat(pb.HeartbeatRequest(auth=auth, stats=flood))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "too many requests" in err.value.details() and "retry in 1.0 s" in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.LeaseShard(pb.LeaseShardRequest(auth=auth))
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (node.last_seen_unix, node.tokens_per_second, srv.swarm.version) == before
    assert not srv.swarm.sched.leases_of(auth.node_id)

    other = await _join(stub)  # another node, same address: its own budget
    await stub.Heartbeat(pb.HeartbeatRequest(auth=other, stats=stats))
    srv.test_clock.t += 1.0  # a second later the flooding node gets one request again
    await stub.Heartbeat(pb.HeartbeatRequest(auth=auth, stats=flood))
    assert node.tokens_per_second == 99.0


async def test_watch_streams_are_bounded_and_a_closed_one_frees_its_slot(limited) -> None:
    srv, stub = limited
    first = stub.WatchSwarm(pb.WatchSwarmRequest(min_interval_s=0.5))
    assert (await first.read()).HasField("snapshot")
    second = stub.WatchSwarm(pb.WatchSwarmRequest(min_interval_s=0.5))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await second.read()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "--max-watchers" in err.value.details()
    first.cancel()
    for _ in range(100):  # the server sees the cancel a moment later
        if srv.limiter.watchers.active == 0:
            break
        await asyncio.sleep(0.05)
    assert srv.limiter.watchers.active == 0
    srv.test_clock.t += 10.0  # the peer's request budget is not what is tested here
    third = stub.WatchSwarm(pb.WatchSwarmRequest(min_interval_s=0.5))
    assert (await third.read()).HasField("snapshot")
    third.cancel()
