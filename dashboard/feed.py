"""Where the dashboard's data comes from: the coordinator's WatchSwarm stream and GetNode.

`CoordinatorSource` opens a fresh grpc.aio channel per connection attempt, inside whatever event
loop calls it (the app's), never at import or construction time. A fresh channel per attempt also
sidesteps gRPC's own reconnect backoff (which grows to minutes): after a coordinator restart the
dashboard reconnects on *our* schedule, `Backoff`, which is pure and injectable so tests are fast.

`StaticSource` serves a fixed snapshot: used for deterministic screenshots (snapshot tests) and
for rendering a saved state; it is not a stand-in for the coordinator in integration tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

import grpc
from gpt5os.common.channels import PLAINTEXT, ChannelError, Security, credentials
from gpt5os.proto import pb, pb_grpc

MAX_MESSAGE_BYTES = 64 * 1024 * 1024  # a snapshot of a 10k-node swarm with history fits


class SwarmSource(Protocol):
    address: str

    def watch(self) -> AsyncIterator[pb.SwarmUpdate]:
        """One connection's updates: a snapshot first, then deltas; raises when it breaks."""
        ...

    async def get_node(self, node_id: str) -> pb.NodeDetail: ...

    async def close(self) -> None: ...


class SourceError(Exception):
    """The coordinator could not be reached or refused; `str()` is a line a person can act on."""


@dataclass(frozen=True, kw_only=True)
class Backoff:
    """Exponential reconnect delays: base, 2*base, 4*base, ... capped at `cap` seconds."""

    base: float = 0.5
    cap: float = 10.0
    factor: float = 2.0

    def delay(self, attempt: int) -> float:
        """Delay before reconnect attempt `attempt` (1-based)."""
        return min(self.cap, self.base * self.factor ** max(0, attempt - 1))


def parse_address(text: str) -> tuple[str, int]:
    """'host:port' -> (host, port); raises ValueError with a message that says what is wrong."""
    host, sep, port_text = text.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"coordinator address {text!r} is not HOST:PORT (e.g. 127.0.0.1:50051)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or any(c.isspace() for c in host):
        raise ValueError(f"coordinator address {text!r} has no valid host")
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(
            f"coordinator address {text!r}: port {port_text!r} is not a number"
        ) from None
    if not 0 < port < 65536:
        raise ValueError(f"coordinator address {text!r}: port {port} is not in 1..65535")
    return host, port


def _describe(err: grpc.aio.AioRpcError) -> str:
    details = (err.details() or "").strip().splitlines()
    return f"{err.code().name}: {details[0] if details else 'no details'}"


class CoordinatorSource:
    """Talks to a coordinator over gRPC, plaintext or TLS (common/channels.py)."""

    def __init__(
        self, address: str, *, min_interval_s: float = 0.5, security: Security = PLAINTEXT
    ) -> None:
        host, port = parse_address(address)
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.min_interval_s = min_interval_s
        self.security = security
        self._channel: grpc.aio.Channel | None = None

    async def _new_channel(self) -> grpc.aio.Channel:
        """A channel after the certificate check (a blocking probe: off the event loop)."""
        try:
            creds, extra = await asyncio.to_thread(credentials, self.address, self.security)
        except ChannelError as err:
            raise SourceError(str(err)) from None
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_time_ms", 20_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            *extra,
        ]
        if creds is None:  # made here, in the loop's thread: an aio channel binds to its loop
            return grpc.aio.insecure_channel(self.address, options=options)
        return grpc.aio.secure_channel(self.address, creds, options=options)

    async def watch(self) -> AsyncIterator[pb.SwarmUpdate]:
        await self.close()
        self._channel = await self._new_channel()
        stub = pb_grpc.CoordinatorStub(self._channel)
        call = stub.WatchSwarm(pb.WatchSwarmRequest(min_interval_s=self.min_interval_s))
        try:
            async for update in call:
                yield update
        except grpc.aio.AioRpcError as err:
            raise SourceError(_describe(err)) from err
        finally:
            call.cancel()
        raise SourceError("the coordinator ended the stream")

    async def get_node(self, node_id: str, *, timeout: float = 10.0) -> pb.NodeDetail:
        channel = self._channel or await self._new_channel()
        try:
            stub = pb_grpc.CoordinatorStub(channel)
            return await stub.GetNode(pb.GetNodeRequest(node_id=node_id), timeout=timeout)
        except grpc.aio.AioRpcError as err:
            raise SourceError(_describe(err)) from err
        finally:
            if channel is not self._channel:
                await channel.close()

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()


class StaticSource:
    """Serves one fixed snapshot (and node details) and then stays quiet, like an idle swarm."""

    def __init__(
        self,
        snapshot: pb.SwarmSnapshot,
        *,
        details: dict[str, pb.NodeDetail] | None = None,
        address: str = "static",
    ) -> None:
        self.address = address
        self._snapshot = snapshot
        self._details = details or {}

    async def watch(self) -> AsyncIterator[pb.SwarmUpdate]:
        yield pb.SwarmUpdate(snapshot=self._snapshot)
        await asyncio.Event().wait()  # no deltas: the picture stays put

    async def get_node(self, node_id: str) -> pb.NodeDetail:
        for full_id, detail in self._details.items():
            if full_id.startswith(node_id):
                return detail
        raise SourceError(f"NOT_FOUND: no node {node_id!r}")

    async def close(self) -> None:
        return None
