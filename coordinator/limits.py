"""How much one client may ask of the coordinator: requests per node per second, WatchSwarm streams.

Pure logic first (`TokenBucket`, `RateLimiter`, `StreamSlots`, injected clock: unit tests run in
milliseconds), then one grpc.aio server interceptor (`LimitsInterceptor`) that applies them
before any handler runs, so a refused request changes no state. Beyond a limit the caller gets
RESOURCE_EXHAUSTED with a message that says which limit and when to retry.

Who is "one client": the node id of a request that carries `auth.node_id`, the node id a Join's
public key names, and the peer's IP address for everything else (status, dashboards, keeper).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

log = logging.getLogger(__name__)

# A node heartbeats every few seconds and leases, fetches and completes a shard now and then;
# 10 requests a second sustained (bursts of 50) is far above that and far below a flood.
NODE_RATE = 10.0
NODE_BURST = 50.0
MAX_WATCHERS = 64  # concurrent WatchSwarm streams (dashboards); each costs a snapshot + deltas
MAX_TRACKED = 200_000  # buckets kept; the least recently used beyond this are forgotten
UNLIMITED = ("/grpc.health.v1.Health/", "/grpc.reflection.")


@dataclass(frozen=True)
class Limits:
    """The coordinator's limits (`serve --node-rate/--node-burst/--max-watchers`)."""

    node_rate: float = NODE_RATE  # requests per second per client, sustained (0: no limit)
    node_burst: float = NODE_BURST  # requests a client may send at once
    max_watchers: int = MAX_WATCHERS  # concurrent WatchSwarm streams (0: no limit)


class TokenBucket:
    """`rate` tokens a second up to `burst`; a request takes one token."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self.tokens = self.burst
        self.last = now

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one will be there."""
        self.tokens = min(self.burst, self.tokens + max(0.0, now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One TokenBucket per key, the `max_keys` most recently used kept (older ones start full)."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_TRACKED,
    ) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def check(self, key: str) -> float:
        """0.0 when `key` may go ahead (and is charged one request), else seconds to wait."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        return bucket.take(now)

    def __len__(self) -> int:
        return len(self._buckets)


class StreamSlots:
    """At most `limit` streams at once (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def acquire(self) -> bool:
        if self.limit and self.active >= self.limit:
            return False
        self.active += 1
        return True

    def release(self) -> None:
        self.active = max(0, self.active - 1)


def client_key(request: Any, peer: str) -> str:
    """Who is asking: the node id in `auth`, the node a Join's key names, else the peer's IP."""
    auth = getattr(request, "auth", None)
    node_id = getattr(auth, "node_id", "") if auth is not None else ""
    if node_id:
        return f"node:{node_id}"
    public_key = getattr(request, "public_key", b"")
    if isinstance(public_key, bytes) and public_key:
        return "key:" + hashlib.sha256(public_key).hexdigest()[:32]
    return "peer:" + peer_host(peer)


def peer_host(peer: str) -> str:
    """`ipv4:1.2.3.4:5678` -> `1.2.3.4`, `ipv6:[::1]:5678` -> `::1` (the port changes per connection)."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host = rest.rpartition(":")[0]
        return host.strip("[]") or rest
    return peer


class LimitsInterceptor(grpc.aio.ServerInterceptor):
    """Applies `Limits` to every RPC of the coordinator before its handler runs."""

    def __init__(self, limits: Limits, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.rates = RateLimiter(limits.node_rate, limits.node_burst, clock=clock)
        self.watchers = StreamSlots(limits.max_watchers)
        self._limited: set[str] = set()  # keys refused since their last accepted request

    def _admit(self, key: str, method: str) -> str | None:
        """None to go ahead, else the refusal's message (logged once per burst of refusals)."""
        wait = self.rates.check(key)
        if wait <= 0:
            self._limited.discard(key)
            return None
        if key not in self._limited:
            self._limited.add(key)
            log.warning("rate limit: refusing %s from %s (more than %g/s)", method, key,
                        self.limits.node_rate)  # fmt: skip
        who = key.partition(":")[2]
        return (
            f"too many requests from {who}: the coordinator allows {self.limits.node_rate:g} "
            f"per second (bursts of {self.limits.node_burst:g}); retry in {wait:.1f} s "
            "and send fewer"
        )

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(UNLIMITED):
            return handler
        name = method.rpartition("/")[2]
        if handler.unary_unary is not None:
            return self._wrap_unary(handler, name)
        if handler.unary_stream is not None:
            return self._wrap_stream(handler, name)
        return handler

    def _wrap_unary(self, handler, name: str):
        inner = handler.unary_unary

        async def limited(request, context):
            refusal = self._admit(client_key(request, context.peer()), name)
            if refusal is not None:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            limited,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _wrap_stream(self, handler, name: str):
        inner = handler.unary_stream
        watch = name == "WatchSwarm"

        async def limited(request, context):
            refusal = self._admit(client_key(request, context.peer()), name)
            if refusal is not None:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
            if watch and not self.watchers.acquire():
                log.warning("refusing WatchSwarm from %s: %d streams open",
                            context.peer(), self.watchers.active)  # fmt: skip
                await context.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"the coordinator already serves {self.watchers.active} WatchSwarm streams "
                    f"(its limit, `serve --max-watchers`): close another dashboard or retry later",
                )
            try:
                async for item in inner(request, context):
                    yield item
            finally:
                if watch:
                    self.watchers.release()

        return grpc.unary_stream_rpc_method_handler(
            limited,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
