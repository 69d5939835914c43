"""Every counter a request carries is bounded: an absurd value is refused with INVALID_ARGUMENT
before any state changes, and the coordinator keeps serving everyone afterwards.

The bug this guards: one heartbeat with `stats.tokens_trained = 2^64-1` used to be accepted; the
next background tick then failed every second with OverflowError from SQLite, no node's stats were
saved any more, and GetStatus answered INTERNAL to everyone.
"""

from __future__ import annotations

import grpc
import pytest
from gpt5os.coordinator.validate import MAX_ROUND, MAX_TOKENS
from gpt5os.proto import pb
from test_coordinator_api import code_of, healthy, join, server  # noqa: F401 (fixture)

Code = grpc.StatusCode
pytestmark = pytest.mark.timeout(60)
U64_MAX = 2**64 - 1


def absurd_requests(auth: pb.NodeAuth, coordinator, shard_id: str):
    return [
        (
            "stats.tokens_trained",
            coordinator.Heartbeat(
                pb.HeartbeatRequest(auth=auth, stats=pb.NodeStats(tokens_trained=U64_MAX))
            ),
        ),
        (
            "stats.tokens_trained",
            coordinator.Heartbeat(
                pb.HeartbeatRequest(auth=auth, stats=pb.NodeStats(tokens_trained=MAX_TOKENS + 1))
            ),
        ),
        (
            "stats.outer_round",
            coordinator.Heartbeat(
                pb.HeartbeatRequest(auth=auth, stats=pb.NodeStats(outer_round=MAX_ROUND + 1))
            ),
        ),
        (
            "tokens_trained",
            coordinator.CompleteShard(
                pb.CompleteShardRequest(auth=auth, shard_id=shard_id, tokens_trained=U64_MAX)
            ),
        ),
        ("round", coordinator.ReportRound(pb.ReportRoundRequest(auth=auth, round=U64_MAX))),
        (
            "tokens",
            coordinator.ReportRound(pb.ReportRoundRequest(auth=auth, round=1, tokens=U64_MAX)),
        ),
        (
            "group_tokens",
            coordinator.ReportRound(
                pb.ReportRoundRequest(auth=auth, round=1, group_tokens=U64_MAX)
            ),
        ),
    ]


async def test_absurd_counters_are_refused_and_change_nothing(server, stub) -> None:  # noqa: F811
    auth, _ = await join(stub)
    lease = (await stub.LeaseShard(pb.LeaseShardRequest(auth=auth))).lease
    before = await stub.GetStatus(pb.GetStatusRequest())
    for field, call in absurd_requests(auth, stub, lease.shard_id):
        code, details = await code_of(call)
        assert code is Code.INVALID_ARGUMENT, (field, code, details)
        assert details.startswith(field) and "between 0 and" in details, details
    # the background tick runs and saves stats; status still answers, unchanged by the refusals
    server.swarm.tick(server.clock())
    after = await stub.GetStatus(pb.GetStatusRequest())
    assert after.run.shards == before.run.shards
    assert after.run.outer_round == before.run.outer_round == 0
    assert [n.tokens_trained for n in after.nodes] == [n.tokens_trained for n in before.nodes]
    assert list(after.rounds) == list(before.rounds) == []
    assert await healthy(server)


async def test_largest_accepted_counters_are_stored(server, stub) -> None:  # noqa: F811
    """The bound is where SQLite still stores the value: the tick that persists stats succeeds."""
    auth, _ = await join(stub)
    await stub.Heartbeat(
        pb.HeartbeatRequest(
            auth=auth, stats=pb.NodeStats(tokens_trained=MAX_TOKENS, outer_round=MAX_ROUND)
        )
    )
    server.swarm.tick(server.clock())
    status = await stub.GetStatus(pb.GetStatusRequest())
    assert len(status.nodes) == 1
    assert await healthy(server)
