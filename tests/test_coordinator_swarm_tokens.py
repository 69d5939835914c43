"""The coordinator hands out swarm tokens (common/swarm_token.py) against a real in-process
server: at Join, renewed by Heartbeat, never to a banned node, refused for a malformed key; its
key is made once, 0600, and a readable one is refused."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from gpt5os.common.swarm_token import TokenChecker, expires_at
from gpt5os.coordinator.server import CoordinatorServer, ServeError
from gpt5os.coordinator.store import DB_NAME, Store
from gpt5os.coordinator.swarm_key import COORDINATOR_KEY_FILE
from gpt5os.coordinator.testkit import make_run, node_key, serving
from gpt5os.proto import pb

pytestmark = pytest.mark.timeout(60)
LIFETIME = 60.0


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def rsa_key() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )


@pytest.fixture
async def server(tmp_path: Path):
    make_run(tmp_path / "run", n_train=4, n_val=1)
    async with serving(tmp_path / "run", clock=Clock(), swarm_token_lifetime_s=LIFETIME) as srv:
        yield srv


async def join(stub, swarm_key: bytes) -> pb.JoinResponse:
    return await stub.Join(
        pb.JoinRequest(
            public_key=node_key(),
            info=pb.NodeInfo(software_version="0.1.0"),
            swarm_public_key=swarm_key,
        )
    )


def auth(reply: pb.JoinResponse) -> pb.NodeAuth:
    return pb.NodeAuth(node_id=reply.node_id, session_token=reply.session_token)


async def test_join_hands_out_a_token_for_the_nodes_key(server, stub, rsa_key) -> None:
    reply = await join(stub, rsa_key)
    token = reply.swarm_token
    assert token.username == reply.node_id and token.public_key == rsa_key
    assert TokenChecker(reply.coordinator_public_key).problem(token) == ""
    assert abs(expires_at(token) - (time.time() + LIFETIME)) < 5
    # a node that asks for none (an older node) gets none, but learns the key that checks others
    bare = await join(stub, b"")
    assert not bare.HasField("swarm_token") and bare.coordinator_public_key


async def test_heartbeat_renews_the_token_only_when_asked(server, stub, rsa_key) -> None:
    reply = await join(stub, rsa_key)
    beat = await stub.Heartbeat(pb.HeartbeatRequest(auth=auth(reply)))
    assert not beat.HasField("swarm_token")
    server.clock.offset = LIFETIME * 0.6  # type: ignore[attr-defined]
    beat = await stub.Heartbeat(pb.HeartbeatRequest(auth=auth(reply), swarm_public_key=rsa_key))
    renewed = beat.swarm_token
    assert expires_at(renewed) > expires_at(reply.swarm_token) + LIFETIME * 0.5
    assert TokenChecker(reply.coordinator_public_key, server.clock).problem(renewed) == ""
    assert "expired" in TokenChecker(
        reply.coordinator_public_key, lambda: time.time() + LIFETIME + 1
    ).problem(reply.swarm_token)


async def test_a_banned_node_gets_no_renewal(server, stub, rsa_key, tmp_path) -> None:
    reply = await join(stub, rsa_key)
    store = Store(tmp_path / "run" / DB_NAME)
    with store.tx():
        store.add_ban(reply.node_id, time.time(), "test ban")
    store.close()
    deadline = time.monotonic() + 10
    while True:
        try:
            await stub.Heartbeat(pb.HeartbeatRequest(auth=auth(reply), swarm_public_key=rsa_key))
        except grpc.aio.AioRpcError as e:
            assert e.code() is grpc.StatusCode.PERMISSION_DENIED
            break
        assert time.monotonic() < deadline, "the ban was never applied"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize(
    "bad_key",
    [b"ssh-rsa garbage", b"x" * 2000, b"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIEkY4n8ZQ3w1Lq3m"],
)
async def test_a_malformed_swarm_key_is_refused_and_changes_nothing(server, stub, bad_key) -> None:
    before = await stub.GetStatus(pb.GetStatusRequest())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await join(stub, bad_key)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "swarm_public_key" in info.value.details()
    after = await stub.GetStatus(pb.GetStatusRequest())
    assert len(after.nodes) == len(before.nodes)


async def test_the_coordinator_key_is_made_once_and_private(tmp_path: Path) -> None:
    make_run(tmp_path / "run", n_train=4, n_val=1)
    path = tmp_path / "run" / COORDINATOR_KEY_FILE
    publics = []
    for _ in range(2):
        srv = CoordinatorServer(tmp_path / "run", port=0)
        await srv.start()
        publics.append(srv.token_issuer.public_key)
        await srv.stop(grace=0.1)
    assert publics[0] == publics[1]
    assert path.stat().st_mode & 0o777 == 0o600
    path.chmod(0o644)
    with pytest.raises(ServeError, match="chmod 600"):
        await CoordinatorServer(tmp_path / "run", port=0).start()


async def test_serve_refuses_a_token_lifetime_shorter_than_three_heartbeats(tmp_path: Path) -> None:
    """Nodes renew once per heartbeat: a token shorter than that would run out between two."""
    make_run(tmp_path / "run", n_train=4, n_val=1)  # heartbeat_seconds: 5 s
    with pytest.raises(ServeError, match="shorter than 3 heartbeats.*lifetime 15 or more"):
        await CoordinatorServer(tmp_path / "run", port=0, swarm_token_lifetime_s=10.0).start()
    async with serving(tmp_path / "run", swarm_token_lifetime_s=15.0) as srv:
        assert srv.token_issuer.lifetime_s == 15.0
