"""Shape checks for every request: a malformed field is refused before it touches any state.

Each function raises ApiError(INVALID_ARGUMENT, "<field>: what is wrong and what is accepted")
and returns plain Python values the Swarm works with. Semantic checks (who holds a lease, is the
node banned) live in swarm.py; message size limits are enforced by gRPC itself (server.py).
"""

from __future__ import annotations

import math
import re
from typing import Any

import grpc
from gpt5os.coordinator.records import ApiError
from gpt5os.proto import pb

NODE_ID_RE = re.compile(r"^[0-9a-f]{20}$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
MAX_TEXT = 256
MAX_MADDRS = 16
MAX_MADDR_LEN = 512
MAX_PEERS = 10_000
MAX_SHARD_ID = 128
MAX_TOKEN = 128
# Counters a request may carry. SQLite stores signed 64-bit integers; these bounds sit far below
# that and far above anything honest (10^15 tokens is ~1000x a frontier pretraining run; a round a
# second for 30 years is ~10^9), so an absurd value is refused instead of poisoning the store.
MAX_TOKENS = 10**15
MAX_ROUND = 10**9


def bad(field: str, why: str) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {why}")


def text(value: str, field: str, *, required: bool = False, limit: int = MAX_TEXT) -> str:
    if required and not value:
        raise bad(field, "is required")
    if len(value) > limit:
        raise bad(field, f"is {len(value)} characters long; at most {limit}")
    return value


def number(value: float, field: str, *, low: float = 0.0, high: float = 1e15) -> float:
    if not math.isfinite(value):
        raise bad(field, f"must be a finite number, got {value}")
    if not low <= value <= high:
        raise bad(field, f"must be between {low:g} and {high:g}, got {value:g}")
    return float(value)


def count(value: int, field: str, *, high: int = MAX_TOKENS) -> int:
    """A non-negative integer counter (uint64 on the wire) bounded by `high`."""
    if not 0 <= value <= high:
        raise bad(field, f"must be between 0 and {high:,}, got {value:,}")
    return int(value)


def node_id(value: str, field: str = "node_id") -> str:
    if not NODE_ID_RE.match(value):
        raise bad(field, "must be 20 lowercase hex characters (sha256 of the public key)")
    return value


def auth(msg: pb.NodeAuth) -> tuple[str, str]:
    node_id(msg.node_id, "auth.node_id")
    text(msg.session_token, "auth.session_token", required=True, limit=MAX_TOKEN)
    return msg.node_id, msg.session_token


def join(req: pb.JoinRequest) -> tuple[bytes, dict[str, str]]:
    if len(req.public_key) != 32:
        raise bad(
            "public_key", f"must be a raw 32-byte Ed25519 key, got {len(req.public_key)} bytes"
        )
    info = {
        "software_version": text(
            req.info.software_version, "info.software_version", required=True, limit=64
        ),
        "device": text(req.info.device, "info.device"),
        "hostname": text(req.info.hostname, "info.hostname"),
        "display_name": text(req.info.display_name, "info.display_name", limit=64),
    }
    text(req.invite, "invite", limit=MAX_TOKEN)
    return bytes(req.public_key), info


def stats(msg: pb.NodeStats) -> dict[str, Any]:
    if len(msg.dht_maddrs) > MAX_MADDRS:
        raise bad("stats.dht_maddrs", f"at most {MAX_MADDRS} addresses")
    for m in msg.dht_maddrs:
        if not m.startswith("/") or len(m) > MAX_MADDR_LEN:
            raise bad(
                "stats.dht_maddrs",
                f"{m[:60]!r} is not a multiaddr like /ip4/1.2.3.4/tcp/4001/p2p/...",
            )
    loss = number(msg.last_loss, "stats.last_loss", high=1e6)
    return {
        "tokens_per_second": number(msg.tokens_per_second, "stats.tokens_per_second", high=1e12),
        "tokens_trained": count(msg.tokens_trained, "stats.tokens_trained"),
        "last_loss": loss if loss > 0 else None,  # 0 = nothing trained yet
        "outer_round": count(msg.outer_round, "stats.outer_round", high=MAX_ROUND),
        "dht_maddrs": list(msg.dht_maddrs),
    }


def shard_id(value: str) -> str:
    text(value, "shard_id", required=True, limit=MAX_SHARD_ID)
    return value


def report(req: pb.ReportRoundRequest) -> dict[str, Any]:
    if req.round < 1:
        raise bad("round", "outer rounds are numbered from 1")
    count(req.round, "round", high=MAX_ROUND)
    if len(req.peer_node_ids) > MAX_PEERS:
        raise bad("peer_node_ids", f"at most {MAX_PEERS} peers")
    peers = [node_id(p, "peer_node_ids[]") for p in req.peer_node_ids]
    if len(set(peers)) != len(peers):
        raise bad("peer_node_ids", "lists a node twice")
    if req.params_sha256 and not SHA256_RE.match(req.params_sha256):
        raise bad("params_sha256", "must be 64 lowercase hex characters (or empty)")
    val = number(req.val_loss, "val_loss", high=1e6) if req.HasField("val_loss") else None
    return {
        "round": int(req.round),
        "peer_node_ids": peers,
        "tokens": count(req.tokens, "tokens"),
        "mean_loss": number(req.mean_loss, "mean_loss", high=1e6),
        "duration_s": number(req.duration_s, "duration_s", high=1e7),
        "averaging_s": number(req.averaging_s, "averaging_s", high=1e7),
        "params_sha256": req.params_sha256,
        "val_loss": val,
        "group_tokens": count(req.group_tokens, "group_tokens"),
    }


def keeper_report(req: pb.KeeperReportRequest) -> dict[str, Any]:
    if not SHA256_RE.match(req.params_sha256) and not (req.hello and not req.params_sha256):
        raise bad("params_sha256", "must be 64 lowercase hex characters")
    if req.round > 2**40 or req.tokens > 2**62:
        raise bad("round", "round or tokens out of range")
    if len(req.dht_maddrs) > MAX_MADDRS or any(len(m) > MAX_MADDR_LEN for m in req.dht_maddrs):
        raise bad("dht_maddrs", f"at most {MAX_MADDRS} addresses of {MAX_MADDR_LEN} characters")
    return {
        "round": int(req.round),
        "tokens": int(req.tokens),
        "params_sha256": req.params_sha256,
        "dht_maddrs": list(req.dht_maddrs),
        "hello": bool(req.hello),
        "checkpoint_error": text(req.checkpoint_error, "checkpoint_error", limit=1024),
        "checkpoint_round": int(req.checkpoint_round),
    }


def min_interval(value: float, default: float) -> float:
    if value == 0:
        return default
    return max(0.1, number(value, "min_interval_s", high=3600.0))


def swarm_public_key(value: bytes, field: str = "swarm_public_key") -> bytes:
    """A hivemind RSA public key in OpenSSH form (what hivemind's RSAPublicKey.to_bytes makes);
    empty when the request asks for no swarm token."""
    if not value:
        return b""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: PLC0415
    from gpt5os.common.swarm_token import MAX_PUBLIC_KEY_BYTES  # noqa: PLC0415

    if len(value) > MAX_PUBLIC_KEY_BYTES:
        raise bad(field, f"is {len(value)} bytes; at most {MAX_PUBLIC_KEY_BYTES}")
    try:
        key = serialization.load_ssh_public_key(bytes(value))
    except (ValueError, TypeError, IndexError):
        key = None
    if not isinstance(key, rsa.RSAPublicKey) or not 2048 <= key.key_size <= 4096:
        raise bad(field, "must be an RSA key of 2048-4096 bits in OpenSSH form ('ssh-rsa ...')")
    return bytes(value)
