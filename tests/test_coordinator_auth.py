"""Proof of possession and signed requests (issue 11, items 1 and 2).

Pure checks first (RequestVerifier and NonceCache with an injected clock, milliseconds), then
every refusal against a real in-process server: the status code, a message a person can act on,
and no state change (GetStatus before == after). Then the node's key file and its CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import stat
import subprocess
import time
from pathlib import Path

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpt5os.common.request_signing import (
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TS_HEADER,
    node_id_of,
    raw_public_key,
    signed_metadata,
)
from gpt5os.coordinator.records import ApiError
from gpt5os.coordinator.request_auth import NonceCache, RequestVerifier
from gpt5os.coordinator.server import CoordinatorServer
from gpt5os.coordinator.testkit import make_run, serving
from gpt5os.node.identity import load_or_create_identity
from gpt5os.proto import pb, pb_grpc

Code = grpc.StatusCode
HEARTBEAT = "/gpt5os.v1.Coordinator/Heartbeat"
JOIN = "/gpt5os.v1.Coordinator/Join"
T0 = 1_800_000_000.0

# -- the pure checks --------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def heartbeat_for(key: Ed25519PrivateKey, loss: float = 3.0) -> pb.HeartbeatRequest:
    node_id = node_id_of(raw_public_key(key))
    return pb.HeartbeatRequest(
        auth=pb.NodeAuth(node_id=node_id, session_token="t"), stats=pb.NodeStats(last_loss=loss)
    )


def refusal(verifier: RequestVerifier, key, request, metadata, method=HEARTBEAT) -> ApiError:
    public = raw_public_key(key)
    with pytest.raises(ApiError) as info:
        verifier.verify(method, request, metadata, node_id=node_id_of(public), public_key=public)
    return info.value


def accept(verifier: RequestVerifier, key, request, metadata, method=HEARTBEAT) -> None:
    public = raw_public_key(key)
    verifier.verify(method, request, metadata, node_id=node_id_of(public), public_key=public)


def test_a_signed_request_passes_and_each_change_is_refused() -> None:
    clock, key = FakeClock(), Ed25519PrivateKey.generate()
    verifier = RequestVerifier(clock=clock)
    request = heartbeat_for(key)
    accept(verifier, key, request, signed_metadata(key, HEARTBEAT, request, now=T0))

    md = signed_metadata(key, HEARTBEAT, request, now=T0)
    tampered = heartbeat_for(key, loss=0.5)  # one field changed after signing
    e = refusal(verifier, key, tampered, md)
    assert e.code is Code.UNAUTHENTICATED and "changed after it was signed" in e.message
    e = refusal(verifier, key, request, md, method="/gpt5os.v1.Coordinator/Leave")
    assert e.code is Code.UNAUTHENTICATED and "bad signature" in e.message
    other = Ed25519PrivateKey.generate()
    e = refusal(verifier, key, request, signed_metadata(other, HEARTBEAT, request, now=T0))
    assert e.code is Code.UNAUTHENTICATED and "this node's key" in e.message
    accept(verifier, key, request, md)  # none of the refusals used up the nonce


def test_the_clock_window_is_60_seconds_and_the_message_says_sync_the_clock() -> None:
    clock, key = FakeClock(), Ed25519PrivateKey.generate()
    verifier = RequestVerifier(clock=clock)
    request = heartbeat_for(key)
    for skew in (-59.9, 59.9):
        accept(verifier, key, request, signed_metadata(key, HEARTBEAT, request, now=T0 + skew))
    for skew in (-60.5, 60.5, -3600):
        e = refusal(verifier, key, request, signed_metadata(key, HEARTBEAT, request, now=T0 + skew))
        assert e.code is Code.UNAUTHENTICATED
        assert (
            "off the coordinator's clock" in e.message and "sync this machine's clock" in e.message
        )


def test_a_nonce_is_accepted_once_per_node() -> None:
    clock, key = FakeClock(), Ed25519PrivateKey.generate()
    verifier = RequestVerifier(clock=clock)
    request = heartbeat_for(key)
    md = signed_metadata(key, HEARTBEAT, request, now=T0, nonce="ab" * 16)
    accept(verifier, key, request, md)
    clock.now += 30
    e = refusal(verifier, key, request, md)
    assert e.code is Code.UNAUTHENTICATED and "replayed" in e.message
    other = Ed25519PrivateKey.generate()  # another node may draw the same nonce
    req2 = heartbeat_for(other)
    accept(
        verifier,
        other,
        req2,
        signed_metadata(other, HEARTBEAT, req2, now=clock.now, nonce="ab" * 16),
    )


@pytest.mark.parametrize(
    ("metadata", "words"),
    [
        ([], "unsigned request"),
        ([(TS_HEADER, "nan"), (NONCE_HEADER, "ab" * 16), (SIGNATURE_HEADER, b"s" * 64)], "Unix"),
        ([(TS_HEADER, "inf"), (NONCE_HEADER, "ab" * 16), (SIGNATURE_HEADER, b"s" * 64)], "Unix"),
        ([(TS_HEADER, f"{T0}"), (NONCE_HEADER, "xyz"), (SIGNATURE_HEADER, b"s" * 64)], "hex"),
        ([(TS_HEADER, f"{T0}"), (NONCE_HEADER, "ab" * 16), (SIGNATURE_HEADER, b"s")], "64-byte"),
    ],
)
def test_missing_or_malformed_headers_are_refused(metadata, words) -> None:
    key = Ed25519PrivateKey.generate()
    e = refusal(RequestVerifier(clock=FakeClock()), key, heartbeat_for(key), metadata)
    assert e.code is Code.UNAUTHENTICATED and words in e.message


def test_an_unknown_node_is_told_to_join_first() -> None:
    key = Ed25519PrivateKey.generate()
    request = heartbeat_for(key)
    with pytest.raises(ApiError) as info:
        RequestVerifier(clock=FakeClock()).verify(
            HEARTBEAT,
            request,
            signed_metadata(key, HEARTBEAT, request, now=T0),
            node_id=request.auth.node_id,
            public_key=None,
        )
    assert info.value.code is Code.UNAUTHENTICATED and "Join first" in info.value.message


def test_the_nonce_cache_forgets_after_its_ttl_and_is_bounded() -> None:
    cache = NonceCache(ttl_s=120, per_node=3, total=5)
    cache.add("a", "n1", T0)
    with pytest.raises(ApiError, match="replayed"):
        cache.add("a", "n1", T0 + 119)
    cache.add("a", "n1", T0 + 120.5)  # expired: a request that old fails the clock check anyway
    assert len(cache) == 1
    cache.add("a", "n2", T0 + 121)
    cache.add("a", "n3", T0 + 121)
    with pytest.raises(ApiError) as info:  # per node
        cache.add("a", "n4", T0 + 121)
    assert info.value.code is Code.RESOURCE_EXHAUSTED
    cache.add("b", "n1", T0 + 121)
    cache.add("b", "n2", T0 + 121)
    with pytest.raises(ApiError) as info:  # in total
        cache.add("c", "n1", T0 + 121)
    assert info.value.code is Code.RESOURCE_EXHAUSTED
    cache.add("c", "n1", T0 + 300)  # everything expired
    assert len(cache) == 1


# -- against a real server --------------------------------------------------------------------


class StillClock:
    """The server's clock stands still (so ticks change nothing between two GetStatus calls)
    at the real time (so signatures made with the real clock are fresh)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def raw_server(tmp_path: Path):
    make_run(tmp_path / "run", n_train=4, n_val=1)
    async with (
        serving(tmp_path / "run", clock=StillClock()) as srv,
        grpc.aio.insecure_channel(srv.address) as channel,  # signs nothing itself
    ):
        yield srv, pb_grpc.CoordinatorStub(channel)


def method_of(name: str) -> str:
    return f"/gpt5os.v1.Coordinator/{name}"


async def call(stub, name: str, request, key=None, **sign) -> object:
    metadata = signed_metadata(key, method_of(name), request, **sign) if key is not None else ()
    method = getattr(stub, name)
    if name == "FetchShard":
        return [c async for c in method(request, metadata=metadata)]
    return await method(request, metadata=metadata)


async def refused(stub, name: str, request, key=None, **sign) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(stub, name, request, key, **sign)
    return info.value.code(), info.value.details()


async def state(stub) -> bytes:
    """Everything GetStatus shows, without the server's own time."""
    snap = await stub.GetStatus(pb.GetStatusRequest())
    snap.ClearField("server_unix")
    return snap.SerializeToString(deterministic=True)


async def join(stub, key: Ed25519PrivateKey) -> pb.NodeAuth:
    request = pb.JoinRequest(
        public_key=raw_public_key(key), info=pb.NodeInfo(software_version="0.1.0", device="cpu")
    )
    reply = await call(stub, "Join", request, key)
    return pb.NodeAuth(node_id=reply.node_id, session_token=reply.session_token)


async def settled(srv: CoordinatorServer, stub) -> None:
    """Wait for the first tick's throughput sample: from then on a still clock changes nothing."""
    deadline = time.monotonic() + 10
    while not (await stub.GetStatus(pb.GetStatusRequest())).throughput_history:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)


async def test_a_join_with_someone_elses_public_key_is_refused_and_changes_nothing(
    tmp_path,
) -> None:
    async with raw_server(tmp_path) as (srv, stub):
        victim, attacker = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
        auth = await join(stub, victim)
        await settled(srv, stub)
        before = await state(stub)
        stolen = pb.JoinRequest(
            public_key=raw_public_key(victim), info=pb.NodeInfo(software_version="0.1.0")
        )
        for key in (None, attacker):  # unsigned, then signed with the attacker's own key
            code, details = await refused(stub, "Join", stolen, key)
            assert code is Code.UNAUTHENTICATED, details
            assert "unsigned" in details or "signed by the key it carries" in details
        assert await state(stub) == before
        # the victim's session is untouched: its next heartbeat is accepted
        await call(stub, "Heartbeat", pb.HeartbeatRequest(auth=auth), victim)


async def test_every_node_request_refuses_what_is_not_signed_by_the_node(tmp_path) -> None:
    async with raw_server(tmp_path) as (srv, stub):
        key = Ed25519PrivateKey.generate()
        auth = await join(stub, key)
        lease = (await call(stub, "LeaseShard", pb.LeaseShardRequest(auth=auth), key)).lease
        await settled(srv, stub)
        stranger = Ed25519PrivateKey.generate()
        unknown = pb.NodeAuth(node_id=node_id_of(raw_public_key(stranger)), session_token="t")
        requests = {
            "Heartbeat": pb.HeartbeatRequest(auth=auth, stats=pb.NodeStats(last_loss=2.0)),
            "LeaseShard": pb.LeaseShardRequest(auth=auth),
            "FetchShard": pb.FetchShardRequest(auth=auth, shard_id=lease.shard_id),
            "CompleteShard": pb.CompleteShardRequest(auth=auth, shard_id=lease.shard_id),
            "ReportRound": pb.ReportRoundRequest(auth=auth, round=1, tokens=10, mean_loss=2.0),
            "Leave": pb.LeaveRequest(auth=auth, reason="x"),
        }
        before = await state(stub)
        for name, request in requests.items():
            cases = {
                "unsigned": (None, {}, "unsigned request"),
                "bad signature": (stranger, {}, "bad signature"),
                "stale": (key, {"now": time.time() - 120}, "sync this machine's clock"),
                "future": (key, {"now": time.time() + 120}, "sync this machine's clock"),
            }
            for case, (signer, sign, words) in cases.items():
                code, details = await refused(stub, name, request, signer, **sign)
                assert code is Code.UNAUTHENTICATED and words in details, (name, case, details)
            # a field changed after signing
            md = signed_metadata(key, method_of(name), request)
            changed = type(request)()
            changed.CopyFrom(request)
            changed.auth.session_token = "x" + changed.auth.session_token
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call_with(stub, name, changed, md)
            assert info.value.code() is Code.UNAUTHENTICATED, name
            assert "changed after it was signed" in info.value.details()
            # a node nobody joined as
            foreign = type(request)()
            foreign.CopyFrom(request)
            foreign.auth.CopyFrom(unknown)
            code, details = await refused(stub, name, foreign, stranger)
            assert code is Code.UNAUTHENTICATED and "Join first" in details, (name, details)
        assert await state(stub) == before


async def call_with(stub, name: str, request, metadata) -> object:
    method = getattr(stub, name)
    if name == "FetchShard":
        return [c async for c in method(request, metadata=metadata)]
    return await method(request, metadata=metadata)


async def test_a_replayed_request_is_refused_and_changes_nothing(tmp_path) -> None:
    async with raw_server(tmp_path) as (srv, stub):
        key = Ed25519PrivateKey.generate()
        auth = await join(stub, key)
        await settled(srv, stub)
        request = pb.LeaseShardRequest(auth=auth)
        md = signed_metadata(key, method_of("LeaseShard"), request)
        assert (await stub.LeaseShard(request, metadata=md)).granted
        before = await state(stub)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.LeaseShard(request, metadata=md)  # the same bytes, the same nonce
        assert info.value.code() is Code.UNAUTHENTICATED and "replayed" in info.value.details()
        assert await state(stub) == before
        # the same request with a fresh nonce is a new request
        assert (await call(stub, "LeaseShard", request, key)).granted


# -- the node's key file and CLI --------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_a_key_file_others_can_read_is_refused_on_load(tmp_path) -> None:
    ident = load_or_create_identity(tmp_path)
    assert stat.S_IMODE(ident.path.stat().st_mode) == 0o600 and ident.path.is_absolute()
    for mode in (0o640, 0o604, 0o644):
        ident.path.chmod(mode)
        with pytest.raises(ValueError, match=f"chmod 600 {ident.path}"):
            load_or_create_identity(tmp_path)
    ident.path.chmod(0o600)
    assert load_or_create_identity(tmp_path).node_id == ident.node_id


def test_gpt5os_node_identity_prints_the_id_then_the_key_path(tmp_path) -> None:
    from e2e_support import tool

    home = tmp_path / "home"
    run = subprocess.run(
        [tool("gpt5os-node"), "identity", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    ident = load_or_create_identity(home)
    assert lines == [ident.node_id, str(ident.path)]
    assert Path(lines[1]).is_absolute() and lines[1].endswith(".pem")
    (home / "node_key.pem").chmod(0o644)
    bad = subprocess.run(
        [tool("gpt5os-node"), "identity", "--home", str(home)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert [line for line in bad.stderr.splitlines() if line.strip()] == [
        f"Error: {home / 'node_key.pem'} is readable by other users (mode 0644): anyone who reads "
        f"it can act as this node; run `chmod 600 {home / 'node_key.pem'}` (or move it away to "
        "make a new key)"
    ]


# -- file modes and the coordinator's log -----------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
async def test_run_dir_is_0700_database_and_keys_0600_and_decisions_are_logged(
    tmp_path, caplog
) -> None:
    caplog.set_level("INFO", logger="gpt5os.coordinator")
    async with raw_server(tmp_path) as (srv, stub):
        key = Ed25519PrivateKey.generate()
        auth = await join(stub, key)
        await call(stub, "Heartbeat", pb.HeartbeatRequest(auth=auth), key)  # the WAL exists now
        run_dir = tmp_path / "run"
        assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
        for name in ("coordinator.sqlite", "coordinator.sqlite-wal", "keeper_key.pem"):
            assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o600, name
        await refused(stub, "Heartbeat", pb.HeartbeatRequest(auth=auth))  # unsigned
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("gpt5os.coordinator")]
    assert any(line.startswith(f"admitted node {auth.node_id}") for line in lines), lines
    assert any(
        line.startswith(f"refused Heartbeat from node {auth.node_id}: unsigned") for line in lines
    ), lines
