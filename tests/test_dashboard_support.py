"""Shared by the dashboard's integration tests (no tests here): a prepared run, a coordinator
started in-process, and volunteers acting through the real gRPC API.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

from gpt5os.coordinator.testkit import node_key
from gpt5os.proto import pb, pb_grpc

# -- a run with prepared data --------------------------------------------------------------------


def make_run(tmp_path: Path) -> Path:
    """A fresh run directory over a tiny prepared data set."""
    from gpt5os.coordinator.runs import create_run
    from gpt5os.coordinator.testkit import make_data_dir

    data = tmp_path / "data"
    make_data_dir(data, n_train=6, n_val=1, shard_tokens=4096)
    run = tmp_path / "run"
    # long heartbeats: a slow CI machine must not see our idle test nodes turn "lost"
    create_run(run, data, run_id="dash-test", heartbeat_seconds=60.0, lease_seconds=300.0)
    return run


async def start_server(run_dir: Path, port: int = 0):
    from gpt5os.coordinator.server import CoordinatorServer

    server = CoordinatorServer(run_dir, host="127.0.0.1", port=port, start_dht=False)
    await server.start()
    return server


# -- acting as nodes through the real API ----------------------------------------------------


class ApiNode:
    """A volunteer as the coordinator sees it: only gRPC calls, no training."""

    def __init__(self, stub: pb_grpc.CoordinatorStub, name: str, device: str) -> None:
        self.stub, self.name, self.device = stub, name, device
        self.key = node_key(hashlib.sha256(name.encode()).digest())  # stable per name
        self.auth: pb.NodeAuth | None = None

    @property
    def node_id(self) -> str:
        return self.auth.node_id

    async def join(self) -> ApiNode:
        resp = await self.stub.Join(
            pb.JoinRequest(
                public_key=self.key,
                info=pb.NodeInfo(
                    software_version="0.1.0",
                    device=self.device,
                    hostname="h",
                    display_name=self.name,
                ),
            )
        )
        self.auth = pb.NodeAuth(node_id=resp.node_id, session_token=resp.session_token)
        return self

    async def heartbeat(self, tps: float, tokens: int, loss: float, rnd: int = 0) -> None:
        stats = pb.NodeStats(
            tokens_per_second=tps, tokens_trained=tokens, last_loss=loss, outer_round=rnd
        )
        await self.stub.Heartbeat(pb.HeartbeatRequest(auth=self.auth, stats=stats))

    async def train_one_shard(self, loss: float) -> pb.Lease:
        resp = await self.stub.LeaseShard(pb.LeaseShardRequest(auth=self.auth))
        assert resp.granted, resp.reason
        await self.stub.CompleteShard(
            pb.CompleteShardRequest(
                auth=self.auth,
                shard_id=resp.lease.shard_id,
                tokens_trained=resp.lease.tokens,
                mean_loss=loss,
            )
        )
        return resp.lease

    async def lease(self) -> pb.Lease:
        resp = await self.stub.LeaseShard(pb.LeaseShardRequest(auth=self.auth))
        assert resp.granted, resp.reason
        return resp.lease

    async def report(self, rnd: int, peers: list[str], tokens: int, loss: float) -> None:
        await self.stub.ReportRound(
            pb.ReportRoundRequest(
                auth=self.auth,
                round=rnd,
                peer_node_ids=peers,
                tokens=tokens,
                mean_loss=loss,
                duration_s=30.0,
                averaging_s=1.0,
                group_tokens=tokens * len(peers),
            )
        )

    async def leave(self) -> None:
        await self.stub.Leave(pb.LeaveRequest(auth=self.auth, reason="test over"))


async def fill(stub: pb_grpc.CoordinatorStub) -> dict[str, ApiNode]:
    """Three volunteers: two rounds together, shards done, one holds a lease, one leaves."""
    alice = await ApiNode(stub, "alice", "cuda:NVIDIA GeForce RTX 4090").join()
    bob = await ApiNode(stub, "bob", "cuda:NVIDIA A100-SXM4-80GB").join()
    carol = await ApiNode(stub, "carol", "cpu").join()
    everyone = [alice, bob, carol]
    peers = [n.node_id for n in everyone]
    for rnd, (a, b, c) in enumerate([(5.1, 5.3, 5.6), (4.2, 4.4, 4.9)], start=1):
        for node, loss, tokens in zip(everyone, (a, b, c), (12_000, 30_000, 800), strict=True):
            await node.report(rnd, peers, tokens, loss)
    await alice.train_one_shard(4.1)
    await bob.train_one_shard(4.3)
    await bob.train_one_shard(4.3)  # credit is completed shards: bob leads the leaderboard
    await alice.lease()  # held: shows up in alice's detail
    await alice.heartbeat(41_000.0, 3_120_000, 4.05, 2)
    await bob.heartbeat(88_000.0, 6_480_000, 4.21, 2)
    await carol.heartbeat(690.0, 52_000, 4.9, 2)
    await carol.leave()
    return {n.name: n for n in everyone}


# -- waiting on the app --------------------------------------------------------------------------


def screen_text(app) -> str:
    """What a person sees: the rendered characters of the active screen."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def wait_for(pilot, cond: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await pilot.pause(0.05)
