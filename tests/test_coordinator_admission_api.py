"""Admission and bans against a real in-process gRPC server on 127.0.0.1: an invite-only run
refuses strangers and spent invites with PERMISSION_DENIED and a message a person can act on,
the status before and after a refusal is the same, and `invite` / `allow` / `ban` / `unban`
(the CLI itself, writing the run's database) act on the running server without a restart."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from gpt5os.common.request_signing import node_id_of
from gpt5os.coordinator.cli import main as coordinator_cli
from gpt5os.coordinator.testkit import make_run, node_key, serving
from gpt5os.proto import pb

Code = grpc.StatusCode
pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def server(tmp_path: Path):
    make_run(tmp_path / "run", n_train=4, admission="invite-only", heartbeat_seconds=2.0)
    async with serving(tmp_path / "run") as srv:
        yield srv


def cli(*args: str) -> str:
    """`gpt5os-coordinator ARGS` in this process; its stdout (it must succeed)."""
    result = CliRunner().invoke(coordinator_cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def join_request(seed: bytes, invite: str = "") -> pb.JoinRequest:
    return pb.JoinRequest(
        public_key=node_key(seed), info=pb.NodeInfo(software_version="0.1.0"), invite=invite
    )


async def join(stub, seed: bytes, invite: str = "") -> pb.NodeAuth:
    reply = await stub.Join(join_request(seed, invite))
    return pb.NodeAuth(node_id=reply.node_id, session_token=reply.session_token)


async def status(stub) -> tuple:
    snap = await stub.GetStatus(pb.GetStatusRequest())
    return list(snap.nodes), list(snap.events), snap.run.active_nodes


async def refused_join(stub, seed: bytes, invite: str = "") -> str:
    """Join must be refused with PERMISSION_DENIED and change nothing; returns the message."""
    before = await status(stub)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Join(join_request(seed, invite))
    assert info.value.code() is Code.PERMISSION_DENIED, info.value.details()
    assert await status(stub) == before
    return info.value.details()


async def until(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while not (value := await predicate()):
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.05)
    return value


async def test_a_stranger_is_refused_with_what_to_do(server, stub, caplog) -> None:
    seed = os.urandom(32)
    message = await refused_join(stub, seed)
    assert "this run is invite-only: ask the maintainer for an invite" in message
    assert "gpt5os-coordinator invite" in message and "--invite TOKEN" in message
    node_id = node_id_of(node_key(seed))
    refusals = [r.getMessage() for r in caplog.records if "refused Join" in r.getMessage()]
    assert refusals == [f"refused Join from node {node_id}: PERMISSION_DENIED: {message}"]


async def test_an_invite_admits_once_and_its_key_for_good(server, stub, tmp_path) -> None:
    run_dir = str(tmp_path / "run")
    token = cli("invite", "--dir", run_dir).strip()
    a, b = os.urandom(32), os.urandom(32)
    assert "not valid for this run" in await refused_join(stub, a, token[:-1])
    auth = await join(stub, a, token)
    await stub.Heartbeat(pb.HeartbeatRequest(auth=auth))
    assert "already used once" in await refused_join(stub, b, token)
    await join(stub, a)  # a re-join needs no invite
    snap = await stub.GetStatus(pb.GetStatusRequest())
    assert [n.node_id for n in snap.nodes] == [auth.node_id]


async def test_an_expired_invite_is_refused(server, stub, tmp_path) -> None:
    """An invite made two hours ago that was valid for one (the server's clock cannot jump:
    signed requests must be within a minute of it)."""
    from gpt5os.coordinator.admission import Admission
    from gpt5os.coordinator.store import DB_NAME, Store

    store = Store(tmp_path / "run" / DB_NAME)
    try:
        old = Admission(store, "invite-only").create_invite(
            time.time() - 7200, uses=1, expires_s=3600
        )
    finally:
        store.close()
    message = await refused_join(stub, os.urandom(32), old)
    assert "this invite expired at" in message and "ask the maintainer for a new one" in message


async def test_an_allowed_key_joins_without_an_invite(server, stub, tmp_path) -> None:
    seed = os.urandom(32)
    await refused_join(stub, seed)
    node_id = node_id_of(node_key(seed))
    out = cli("allow", "--dir", str(tmp_path / "run"), node_id)
    assert out.strip() == f"gpt5os-coordinator: allowed node {node_id}"
    assert (await join(stub, seed)).node_id == node_id


async def test_ban_refuses_every_call_and_unban_admits_again(server, stub, tmp_path) -> None:
    run_dir = str(tmp_path / "run")
    seed = os.urandom(32)
    auth = await join(stub, seed, cli("invite", "--dir", run_dir).strip())
    assert (await stub.LeaseShard(pb.LeaseShardRequest(auth=auth))).granted
    cli("ban", "--dir", run_dir, auth.node_id[:8])

    async def heartbeat_code():
        try:
            await stub.Heartbeat(pb.HeartbeatRequest(auth=auth))
        except grpc.aio.AioRpcError as e:
            return e.code(), e.details()
        return None

    code, message = await until(heartbeat_code)  # the running server sees it within a tick
    assert code is Code.PERMISSION_DENIED and f"node {auth.node_id} is banned" in message
    for call in (
        stub.LeaseShard(pb.LeaseShardRequest(auth=auth)),
        stub.CompleteShard(pb.CompleteShardRequest(auth=auth, shard_id="train-00000")),
        stub.Leave(pb.LeaveRequest(auth=auth)),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call
        assert info.value.code() is Code.PERMISSION_DENIED
    assert "banned" in await refused_join(stub, seed)
    snap = await stub.GetStatus(pb.GetStatusRequest())
    assert [(n.node_id, n.state) for n in snap.nodes] == [(auth.node_id, "banned")]
    assert snap.run.shards.leased == 0  # its lease went back to the queue

    out = cli("unban", "--dir", run_dir, auth.node_id[:8])
    assert out.strip() == f"gpt5os-coordinator: unbanned node {auth.node_id}: it may join again"

    async def rejoined():
        try:
            return await join(stub, seed)  # no invite: the key stayed admitted
        except grpc.aio.AioRpcError as e:
            assert e.code() is Code.PERMISSION_DENIED and "banned" in e.details()
            return None

    auth = await until(rejoined)
    await stub.Heartbeat(pb.HeartbeatRequest(auth=auth))
    snap = await stub.GetStatus(pb.GetStatusRequest())
    assert [(n.node_id, n.state) for n in snap.nodes] == [(auth.node_id, "active")]
    assert [e.kind for e in snap.events if e.node_id == auth.node_id][-3:] == [
        "lease_released",
        "unbanned",
        "rejoined",
    ]
