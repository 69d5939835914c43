"""Signed coordinator requests: what a node signs and how a client attaches the signature.

Every request that carries a NodeAuth (Heartbeat, LeaseShard, FetchShard, CompleteShard,
ReportRound, Leave and any later one) and every JoinRequest is signed with the node's Ed25519
key. The signature travels in gRPC metadata next to a timestamp and a random nonce:

    gpt5os-ts             Unix seconds, as text ("1764412345.123")
    gpt5os-nonce          32 hex digits (16 random bytes), never reused by the same node
    gpt5os-signature-bin  Ed25519 over payload(method, ts, nonce, request)

The payload is a domain prefix, the full method name, the timestamp, the nonce and the request's
deterministic protobuf bytes, so a signature is good for exactly one request to one method: a
changed field, a request replayed to another method or after the clock window fails. The
coordinator checks them in one server interceptor (coordinator/request_auth.py); a Join is
checked against the public key it carries (proof of possession), every other request against
the key the node joined with.

Shared by the node (node/coordinator_client.py), the tests and the benchmarks through
`Keyring`, whose interceptors sign every call made on a channel.
"""

from __future__ import annotations

import collections
import hashlib
import os
import time
from collections.abc import Iterable
from typing import Any

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

DOMAIN = b"gpt5os-request-v1\n"
TS_HEADER = "gpt5os-ts"
NONCE_HEADER = "gpt5os-nonce"
SIGNATURE_HEADER = "gpt5os-signature-bin"
NONCE_BYTES = 16
CLOCK_WINDOW_S = 60.0  # a request's timestamp must be this close to the coordinator's clock
JOIN_METHOD = "/gpt5os.v1.Coordinator/Join"
JOIN_REQUEST = "gpt5os.v1.JoinRequest"


def node_id_of(public_key: bytes) -> str:
    """The node id the coordinator derives from a raw public key: sha256's first 20 hex digits."""
    return hashlib.sha256(public_key).hexdigest()[:20]


def raw_public_key(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def payload(method: str, ts: str, nonce: str, request: Any) -> bytes:
    """The bytes a node signs for one call (see the module docstring)."""
    head = f"{method}\n{ts}\n{nonce}\n".encode()
    return DOMAIN + head + request.SerializeToString(deterministic=True)


def signed_metadata(
    key: Ed25519PrivateKey,
    method: str,
    request: Any,
    *,
    now: float | None = None,
    nonce: str | None = None,
) -> list[tuple[str, str | bytes]]:
    """The three metadata entries that sign `request` to `method` with `key`."""
    ts = f"{time.time() if now is None else now:.3f}"
    nonce = os.urandom(NONCE_BYTES).hex() if nonce is None else nonce
    signature = key.sign(payload(method, ts, nonce, request))
    return [(TS_HEADER, ts), (NONCE_HEADER, nonce), (SIGNATURE_HEADER, signature)]


def signer_id(request: Any) -> tuple[str, bytes] | None:
    """("node", node_id) for a request with a NodeAuth, ("key", public key) for a Join, else None."""
    if request.DESCRIPTOR.full_name == JOIN_REQUEST:
        return "key", bytes(request.public_key)
    if "auth" in request.DESCRIPTOR.fields_by_name:
        return "node", request.auth.node_id.encode()
    return None


class Keyring:
    """Node keys a client signs with; its interceptors sign each call with the matching key.

    A JoinRequest is signed by the key whose public key it carries, a request with a NodeAuth by
    the key of `auth.node_id`; a request no key matches goes out unsigned (the coordinator
    refuses it if it needs a signature). The node holds one key; tests and benchmarks many.

    Example::

        ring = Keyring([identity.private_key])
        channel = grpc.intercept_channel(grpc.insecure_channel(address), ring.interceptor())
        # grpc.aio: grpc.aio.insecure_channel(address, interceptors=ring.aio_interceptors())
    """

    def __init__(self, keys: Iterable[Ed25519PrivateKey] = ()) -> None:
        self._by_public: dict[bytes, Ed25519PrivateKey] = {}
        self._by_node: dict[str, Ed25519PrivateKey] = {}
        for key in keys:
            self.add(key)

    def add(self, key: Ed25519PrivateKey) -> bytes:
        """Register `key`; returns its raw public key."""
        public = raw_public_key(key)
        self._by_public[public] = key
        self._by_node[node_id_of(public)] = key
        return public

    def key_for(self, request: Any) -> Ed25519PrivateKey | None:
        who = signer_id(request)
        if who is None:
            return None
        kind, value = who
        if kind == "key":
            return self._by_public.get(value)
        return self._by_node.get(value.decode())

    def metadata(self, method: str | bytes, request: Any) -> list[tuple[str, str | bytes]]:
        key = self.key_for(request)
        if key is None:
            return []
        name = method.decode() if isinstance(method, bytes) else method
        return signed_metadata(key, name, request)

    def interceptor(self) -> _SyncSigner:
        """For `grpc.intercept_channel` (synchronous channels)."""
        return _SyncSigner(self)

    def aio_interceptors(self) -> list[Any]:
        """For `grpc.aio.insecure_channel(..., interceptors=...)`."""
        return [_AioUnaryUnarySigner(self), _AioUnaryStreamSigner(self)]


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _SyncSigner(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    def _details(self, details: Any, request: Any) -> Any:
        extra = self.keyring.metadata(details.method, request)
        if not extra:
            return details
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), *extra],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details, request), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):
        return continuation(self._details(client_call_details, request), request)


def _aio_details(keyring: Keyring, details: Any, request: Any) -> Any:
    extra = keyring.metadata(details.method, request)
    if not extra:
        return details
    metadata = grpc.aio.Metadata(*(details.metadata or ()), *extra)
    return details._replace(metadata=metadata)


class _AioUnaryUnarySigner(grpc.aio.UnaryUnaryClientInterceptor):
    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        return await continuation(_aio_details(self.keyring, client_call_details, request), request)


class _AioUnaryStreamSigner(grpc.aio.UnaryStreamClientInterceptor):
    def __init__(self, keyring: Keyring) -> None:
        self.keyring = keyring

    async def intercept_unary_stream(self, continuation, client_call_details, request):
        return await continuation(_aio_details(self.keyring, client_call_details, request), request)
