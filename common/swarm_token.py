"""Swarm tokens: the coordinator's short-lived permission to be a peer of the run's hivemind swarm.

A token names its holder (the node id, or "keeper"), the holder's hivemind RSA public key (its
libp2p identity, so the token also names one peer id) and an expiry, signed with the
coordinator's Ed25519 key. The coordinator hands one out at Join and renews it in a Heartbeat
once half its life has passed; a banned node's heartbeats are refused, so its token runs out
within one lifetime. Every peer checks tokens with the coordinator's public key alone: DHT
requests (common/swarm_auth.py), averaging groups and state downloads (node/swarm.py).

Pure logic, no hivemind: the coordinator makes tokens without importing it. The bytes of a
`pb.SwarmToken` parse as hivemind's `AccessToken` (same fields and numbers).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from gpt5os.proto import pb

TOKEN_LIFETIME_S = 600.0  # the one default; `serve --swarm-token-lifetime` overrides it
RENEW_AFTER = 0.5  # a holder asks for a new token once this share of its life has passed
DOMAIN = b"gpt5os-swarm-token-v1\n"
MAX_PUBLIC_KEY_BYTES = 1024  # an OpenSSH RSA-4096 key is ~720 bytes
MAX_TOKEN_BYTES = 2048


def payload(username: str, public_key: bytes, expiration_time: str) -> bytes:
    """The bytes the coordinator signs (length-prefixed, so no field can bleed into the next)."""
    parts = [username.encode(), public_key, expiration_time.encode()]
    return DOMAIN + b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def expires_at(token: pb.SwarmToken) -> float:
    """The token's expiry in unix seconds (-inf when unreadable)."""
    try:
        value = float(token.expiration_time)
    except ValueError:
        return -math.inf
    return value if math.isfinite(value) else -math.inf


@dataclass(frozen=True)
class TokenIssuer:
    """Makes tokens with the coordinator's key; `clock` and `lifetime_s` are injected in tests."""

    key: Ed25519PrivateKey
    lifetime_s: float = TOKEN_LIFETIME_S
    clock: Callable[[], float] = time.time

    @property
    def public_key(self) -> bytes:
        return public_bytes(self.key)

    def issue(self, username: str, public_key: bytes) -> pb.SwarmToken:
        expiration = f"{self.clock() + self.lifetime_s:.3f}"
        return pb.SwarmToken(
            username=username,
            public_key=public_key,
            expiration_time=expiration,
            signature=self.key.sign(payload(username, public_key, expiration)),
        )


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class TokenChecker:
    """Checks tokens against the coordinator's public key (raw 32 bytes) and a clock."""

    def __init__(self, coordinator_public_key: bytes, clock: Callable[[], float] | None = None):
        self.public_key = Ed25519PublicKey.from_public_bytes(coordinator_public_key)
        self.clock = clock or time.time
        self._verified: dict[
            bytes, bool
        ] = {}  # signature -> verdict (a peer sends its token often)

    def problem(self, token: pb.SwarmToken | None) -> str:
        """Why `token` does not admit its holder now ("" when it does)."""
        if token is None or not token.signature:
            return "no swarm token"
        expiry = expires_at(token)
        if expiry == -math.inf:
            return "swarm token has no readable expiry"
        if expiry <= self.clock():
            return f"swarm token of {token.username!r} expired"
        if not self._signed(token):
            return f"swarm token of {token.username!r} is not signed by this run's coordinator"
        return ""

    def problem_bytes(self, data: object) -> str:
        """`problem` for a serialized token as it arrives from a peer (anything at all)."""
        if not isinstance(data, bytes) or not data:
            return "no swarm token"
        if len(data) > MAX_TOKEN_BYTES:
            return "swarm token too large"
        try:
            token = pb.SwarmToken.FromString(data)
        except Exception:  # protobuf's DecodeError and friends: garbage from a peer
            return "unreadable swarm token"
        return self.problem(token)

    def _signed(self, token: pb.SwarmToken) -> bool:
        signed = payload(token.username, token.public_key, token.expiration_time)
        key = bytes(token.signature) + signed
        verdict = self._verified.get(key)
        if verdict is None:
            try:
                self.public_key.verify(token.signature, signed)
                verdict = True
            except InvalidSignature:
                verdict = False
            if len(self._verified) > 4096:
                self._verified.clear()
            self._verified[key] = verdict
        return verdict


def needs_renewal(
    token: pb.SwarmToken | None, received_at: float, now: float, margin_s: float = 0.0
) -> bool:
    """True once `RENEW_AFTER` of the token's life (counted from when we got it) has passed, or
    once less than `margin_s` of it is left: a holder that asks only every N seconds passes
    2N, so that one lost request does not let a short-lived token run out."""
    if token is None or not token.signature:
        return True
    expiry = expires_at(token)
    return now >= received_at + RENEW_AFTER * (expiry - received_at) or now >= expiry - margin_s
