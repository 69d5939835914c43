"""Checking signed requests: one server interceptor in front of every node request.

A node signs each request (common/request_signing.py); `SignatureInterceptor` checks the
signature before the request reaches its handler, so a refused request changes no state:

- JoinRequest: against the public key it carries. Whoever sends it proves they hold that key.
- any request with a NodeAuth: against the public key the node joined with.

`RequestVerifier` is the pure part (injected clock, no gRPC server): the signature headers are
present and well-formed, the node is known, the timestamp is within ±60 s of the coordinator's
clock, the Ed25519 signature holds over method + timestamp + nonce + the request's bytes, and
the nonce was not used by this node within the window (`NonceCache`). Every refusal is
UNAUTHENTICATED with a message that says what to do.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from gpt5os.common.request_signing import (
    CLOCK_WINDOW_S,
    JOIN_REQUEST,
    NONCE_BYTES,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    TS_HEADER,
    node_id_of,
    payload,
)
from gpt5os.coordinator import validate as v
from gpt5os.coordinator.records import ApiError
from gpt5os.proto import pb

log = logging.getLogger(__name__)

NONCE_RE = re.compile(rf"^[0-9a-f]{{{2 * NONCE_BYTES}}}$")
NONCES_PER_NODE = 4096  # within 2 minutes; an honest node sends a few dozen requests
NONCES_TOTAL = 1_000_000  # ~100 bytes each: ~100 MB at worst, then refusals until they expire
SERVICE = pb.DESCRIPTOR.services_by_name["Coordinator"]


def _signed_methods() -> dict[str, str]:
    """Full method name -> "join" or "node", from the service's descriptor: a new RPC whose
    request carries a NodeAuth is signed and checked without touching this file."""
    kinds = {}
    for m in SERVICE.methods:
        if m.input_type.full_name == JOIN_REQUEST:
            kinds[f"/{SERVICE.full_name}/{m.name}"] = "join"
        elif "auth" in m.input_type.fields_by_name:
            kinds[f"/{SERVICE.full_name}/{m.name}"] = "node"
    return kinds


SIGNED_METHODS = _signed_methods()


def unauthenticated(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.UNAUTHENTICATED, message)


@dataclass(frozen=True)
class Signature:
    ts: float
    ts_text: str
    nonce: str
    signature: bytes


def read_signature(metadata: Sequence[tuple[str, Any]] | None) -> Signature:
    """The signature headers of a request, or UNAUTHENTICATED saying which one is wrong."""
    found: dict[str, Any] = {}
    for key, value in metadata or ():
        if key in (TS_HEADER, NONCE_HEADER, SIGNATURE_HEADER):
            found[key] = value
    if len(found) < 3:
        raise unauthenticated(
            "unsigned request: every node request must be signed with the node's key "
            "(gpt5os-node does this; upgrade with `pip install -U gpt5os`)"
        )
    ts_text, nonce, signature = found[TS_HEADER], found[NONCE_HEADER], found[SIGNATURE_HEADER]
    try:
        ts = float(ts_text)
    except (TypeError, ValueError):
        ts = math.nan
    if not isinstance(ts_text, str) or not math.isfinite(ts):
        raise unauthenticated(f"{TS_HEADER} must be Unix seconds, got {str(ts_text)[:40]!r}")
    if not isinstance(nonce, str) or not NONCE_RE.match(nonce):
        raise unauthenticated(f"{NONCE_HEADER} must be {2 * NONCE_BYTES} lowercase hex digits")
    if not isinstance(signature, bytes) or len(signature) != 64:
        raise unauthenticated(f"{SIGNATURE_HEADER} must be a 64-byte Ed25519 signature")
    return Signature(ts, ts_text, nonce, signature)


class NonceCache:
    """Nonces seen per node, each kept until no request carrying it could pass the clock check.

    A request is fresh while |ts - now| <= window, so a nonce must be remembered for 2 x window
    after it was first seen. Entries expire in the order they arrive (one ordered dict), so
    pruning is cheap. Bounded per node and in total: a node that sends more than
    `per_node` requests within the window is refused until its nonces expire (a flood, never
    an honest node), and so is everybody once `total` is reached.
    """

    def __init__(
        self, *, ttl_s: float, per_node: int = NONCES_PER_NODE, total: int = NONCES_TOTAL
    ) -> None:
        self.ttl_s = ttl_s
        self.per_node = per_node
        self.total = total
        self._expiry: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._count: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._expiry)

    def _prune(self, now: float) -> None:
        while self._expiry:
            (node_id, nonce), expiry = next(iter(self._expiry.items()))
            if expiry > now:
                return
            del self._expiry[(node_id, nonce)]
            self._count[node_id] -= 1
            if self._count[node_id] <= 0:
                del self._count[node_id]

    def add(self, node_id: str, nonce: str, now: float) -> None:
        """Record `nonce` for `node_id`; ApiError when it was seen or the cache is full."""
        self._prune(now)
        if (node_id, nonce) in self._expiry:
            raise unauthenticated(
                f"replayed request: node {node_id} already sent nonce {nonce[:8]}…; "
                "every request needs a fresh nonce (a copy of a request is never accepted twice)"
            )
        if self._count[node_id] >= self.per_node or len(self._expiry) >= self.total:
            raise ApiError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"too many requests from node {node_id} within {self.ttl_s:.0f} s: slow down",
            )
        self._expiry[(node_id, nonce)] = now + self.ttl_s
        self._count[node_id] += 1


class RequestVerifier:
    """Checks one signed request: headers, known key, clock window, signature, fresh nonce.

    :param clock: the coordinator's time (tests inject one)
    :param window_s: how far a request's timestamp may be from `clock()`
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.time, window_s: float = CLOCK_WINDOW_S
    ) -> None:
        self.clock = clock
        self.window_s = window_s
        self.nonces = NonceCache(ttl_s=2 * window_s)

    def verify(
        self,
        method: str,
        request: Any,
        metadata: Sequence[tuple[str, Any]] | None,
        *,
        node_id: str,
        public_key: bytes | None,
    ) -> None:
        """Raise ApiError unless `request` to `method` is signed by `public_key` (node_id's)."""
        sig = read_signature(metadata)
        if public_key is None:
            raise unauthenticated(f"unknown node {node_id}: Join first")
        now = self.clock()
        skew = sig.ts - now
        if abs(skew) > self.window_s:
            raise unauthenticated(
                f"request timestamp is {skew:+.0f} s off the coordinator's clock (allowed: "
                f"±{self.window_s:.0f} s): sync this machine's clock (e.g. turn on NTP with "
                "`timedatectl set-ntp true`) and start the node again"
            )
        try:
            Ed25519PublicKey.from_public_bytes(public_key).verify(
                sig.signature, payload(method, sig.ts_text, sig.nonce, request)
            )
        except (InvalidSignature, ValueError):
            raise unauthenticated(
                f"bad signature for node {node_id}: the request was changed after it was signed, "
                "or not signed with this node's key (a Join must be signed by the key it carries)"
            ) from None
        self.nonces.add(node_id, sig.nonce, now)


class SignatureInterceptor(grpc.aio.ServerInterceptor):
    """The one place node requests are authenticated (see the module docstring).

    :param verifier: the pure checks
    :param public_key_of: the public key a node joined with (None: unknown node)
    :param refused: called with (method name, node id, ApiError) for every refusal (metrics, log)
    """

    def __init__(
        self,
        verifier: RequestVerifier,
        public_key_of: Callable[[str], bytes | None],
        refused: Callable[[str, str, ApiError], None] | None = None,
    ) -> None:
        self.verifier = verifier
        self.public_key_of = public_key_of
        self.refused = refused

    def check(self, method: str, kind: str, request: Any, metadata: Any) -> None:
        if kind == "join":
            v.join(request)  # shape first (INVALID_ARGUMENT, the handler's words): no state read
            public_key = bytes(request.public_key)
            node_id = node_id_of(public_key)
        else:
            node_id = v.node_id(request.auth.node_id, "auth.node_id")
            public_key = self.public_key_of(node_id)
        self.verifier.verify(method, request, metadata, node_id=node_id, public_key=public_key)

    def _refusal(self, method: str, kind: str, request: Any, metadata: Any) -> ApiError | None:
        try:
            self.check(method, kind, request, metadata)
        except ApiError as e:
            if self.refused is not None:
                if kind == "join" and len(request.public_key) == 32:
                    who = node_id_of(bytes(request.public_key))
                else:
                    who = getattr(getattr(request, "auth", None), "node_id", "")
                self.refused(method.rsplit("/", 1)[-1], who[:20], e)
            return e
        return None

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        kind = SIGNED_METHODS.get(method)
        if handler is None or kind is None:
            return handler
        refusal = functools.partial(
            self._refusal, method, kind, metadata=handler_call_details.invocation_metadata
        )
        if handler.unary_unary is not None:
            inner_unary = handler.unary_unary

            async def unary(request, context):
                error = refusal(request)
                if error is not None:
                    await context.abort(error.code, error.message)
                return await inner_unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream

            async def stream(request, context):
                error = refusal(request)
                if error is not None:
                    await context.abort(error.code, error.message)
                async for item in inner_stream(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
