"""The coordinator's gRPC server (grpc.aio): the Coordinator service, health, reflection, metrics.

`CoordinatorServer` runs in the caller's event loop (the dashboard's tests start it in-process;
`gpt5os-coordinator serve` starts it from the CLI). Every RPC validates its request
(validate.py), authenticates the node, then calls one Swarm method; ApiError becomes the gRPC
status it carries. A background task ticks the Swarm twice a second (lease expiry, lost nodes,
batched stats flush) and polls the store for `pause` / `resume` / `ban` / `unban` written by the
CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
from gpt5os.common.request_signing import node_id_of
from gpt5os.common.swarm_token import TOKEN_LIFETIME_S, TokenIssuer
from gpt5os.common.tls import TlsError, TlsFiles, fingerprint
from gpt5os.coordinator import reachability
from gpt5os.coordinator import snapshot as snap
from gpt5os.coordinator import validate as v
from gpt5os.coordinator.checkpoints import CheckpointDir, LatestCheckpoint
from gpt5os.coordinator.dht import BootstrapPeer
from gpt5os.coordinator.keeper_auth import KeeperVerifier, ensure_keeper_key
from gpt5os.coordinator.limits import Limits, LimitsInterceptor
from gpt5os.coordinator.metrics import Metrics
from gpt5os.coordinator.records import ApiError
from gpt5os.coordinator.request_auth import RequestVerifier, SignatureInterceptor
from gpt5os.coordinator.run_spec import dht_prefix
from gpt5os.coordinator.runs import RUN_FILE, load_run
from gpt5os.coordinator.swarm import Swarm, open_swarm
from gpt5os.coordinator.swarm_key import ensure_coordinator_key
from gpt5os.proto import pb, pb_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Coordinator"].full_name
MAX_RECEIVE = 4 * 1024 * 1024
MAX_SEND = 8 * 1024 * 1024
CHUNK = 1024 * 1024
MAX_PENDING_CALLS = 50_000  # calls gRPC may queue before the handlers take them (join storms)
TICK_S = 0.5
FLUSH_CHUNK = 100  # node stats rows per transaction: a few ms of event loop each
METRICS_EVERY_TICKS = 4  # gauges every 2 s (scrapers poll every 15 s or so)
WATCH_DEFAULT_S = 1.0
WATCH_KEEPALIVE_S = 10.0
KEEPER_USERNAME = "keeper"  # the keeper's name in its swarm token (node/claims.py's KEEPER_NODE_ID)

log = logging.getLogger(__name__)


MIN_TOKEN_HEARTBEATS = 3  # a swarm token outlives this many heartbeats (renewed 2 before its end)


class ServeError(RuntimeError):
    """The server cannot start (port in use, unreadable run directory); the message says why."""


def _joiner(request: Any) -> str:
    """The node id a JoinRequest's key stands for (its refusals are logged with it), or "?"."""
    key = getattr(request, "public_key", b"")
    return node_id_of(bytes(key)) if len(key) == 32 else "?"


def _rpc(method: Callable[..., Any]) -> Callable[..., Any]:
    """Count and time a unary RPC; turn ApiError into the status code it names."""
    name = method.__name__

    @functools.wraps(method)
    async def wrapper(self: Servicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
        t0 = time.perf_counter()
        code = "OK"
        try:
            return method(self, request, context)
        except ApiError as e:
            code = e.code.name
            who = getattr(getattr(request, "auth", None), "node_id", "") or _joiner(request)
            log.warning("refused %s from node %s: %s: %s", name, who, code, e.message)
            await context.abort(e.code, e.message)
        except sqlite3.Error as e:  # disk full, I/O error: nothing was acknowledged
            code = "UNAVAILABLE"
            with contextlib.suppress(Exception):  # still failing: the next request retries
                self.server.recover_store(e)
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"the coordinator could not save this request ({e}); nothing changed, retry later",
            )
        except Exception as e:  # a bug: log it, answer INTERNAL, keep serving
            code = "INTERNAL"
            log.exception("bug in %s: %r", name, e)
            await context.abort(grpc.StatusCode.INTERNAL, f"coordinator error in {name}: {e!r}")
        finally:
            self.metrics.rpcs.labels(name, code).inc()
            self.metrics.latency.labels(name).observe(time.perf_counter() - t0)

    return wrapper


class Servicer(pb_grpc.CoordinatorServicer):
    def __init__(self, server: CoordinatorServer) -> None:
        self.server = server
        self.metrics = server.metrics

    @property
    def sw(self) -> Swarm:
        return self.server.swarm

    def now(self) -> float:
        return self.server.clock()

    def _node(self, auth: pb.NodeAuth) -> Any:
        node_id, token = v.auth(auth)
        return self.sw.authenticate(node_id, token)

    def _swarm_token(self, username: str, swarm_public_key: bytes) -> dict[str, Any]:
        """The swarm token fields of a response: a token for `swarm_public_key` (none when the
        caller asked for none) and the key that checks every peer's token."""
        issuer = self.server.token_issuer
        fields: dict[str, Any] = {"coordinator_public_key": issuer.public_key}
        if swarm_public_key:
            fields["swarm_token"] = issuer.issue(username, swarm_public_key)
        return fields

    @_rpc
    def Join(self, req: pb.JoinRequest, ctx: Any) -> pb.JoinResponse:
        public_key, info = v.join(req)
        swarm_key = v.swarm_public_key(req.swarm_public_key)
        now = self.now()
        node, token = self.sw.join(public_key, info, now, invite=req.invite.strip())
        log.info("admitted node %s (%s, %s)", node.node_id, info["display_name"], info["device"])
        return pb.JoinResponse(
            **self._swarm_token(node.node_id, swarm_key),
            node_id=node.node_id,
            session_token=token,
            spec=self.sw.spec_pb,
            initial_peers=self.sw.initial_peers(self.server.dht_maddrs, node.node_id, now),
            heartbeat_interval_s=self.sw.config.heartbeat_seconds,
            lease_duration_s=self.sw.config.lease_seconds,
            outer_round=self.sw.outer_round,
            dht_prefix=dht_prefix(self.sw.run_id),
            validation_shards=self.sw.validation_shards(),
            certified=self._certified(),
        )

    def _certified(self) -> pb.CertifiedRound | None:
        latest = self.sw.latest_certified()
        return latest.to_pb() if latest is not None else None

    @_rpc
    def Heartbeat(self, req: pb.HeartbeatRequest, ctx: Any) -> pb.HeartbeatResponse:
        node = self._node(req.auth)  # a banned node stops here: its swarm token is not renewed
        stats = v.stats(req.stats)
        swarm_key = v.swarm_public_key(req.swarm_public_key)
        leases = self.sw.heartbeat(node, stats, self.now())
        renewed = self._swarm_token(node.node_id, swarm_key) if swarm_key else {}
        return pb.HeartbeatResponse(
            swarm_token=renewed.get("swarm_token"),
            leases=[snap.lease_msg(lease) for lease in leases],
            paused=self.sw.paused,
            spec_revision=self.sw.spec.revision,
            certified=self._certified(),
        )

    @_rpc
    def LeaseShard(self, req: pb.LeaseShardRequest, ctx: Any) -> pb.LeaseShardResponse:
        node = self._node(req.auth)
        lease, reason, retry = self.sw.lease(node, self.now())
        if lease is None:
            return pb.LeaseShardResponse(granted=False, retry_after_s=retry, reason=reason)
        return pb.LeaseShardResponse(granted=True, lease=snap.lease_msg(lease))

    async def FetchShard(
        self, req: pb.FetchShardRequest, ctx: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ShardChunk]:
        t0, code = time.perf_counter(), "OK"
        try:
            node = self._node(req.auth)
            d = self.sw.shard_for_fetch(node, v.shard_id(req.shard_id))
            size = d["size_bytes"]
            if req.offset > size:
                raise ApiError(
                    grpc.StatusCode.OUT_OF_RANGE,
                    f"offset {req.offset} is past the shard's {size} bytes",
                )
            path = self.sw.config.data_path(self.server.run_dir) / d["path"]
            try:
                f = open(path, "rb")  # noqa: SIM115 - closed below, across yields
            except OSError as e:
                raise ApiError(
                    grpc.StatusCode.DATA_LOSS,
                    f"shard {req.shard_id} is missing on the coordinator: {e}",
                ) from e
            with f:
                offset = req.offset
                f.seek(offset)
                if offset == size:  # nothing left: say so, with the size, in one empty chunk
                    yield pb.ShardChunk(offset=offset, data=b"", total_size=size)
                while offset < size:
                    data = f.read(min(CHUNK, size - offset))
                    if not data:
                        raise ApiError(
                            grpc.StatusCode.DATA_LOSS,
                            f"shard {req.shard_id} is shorter than its manifest says",
                        )
                    yield pb.ShardChunk(offset=offset, data=data, total_size=size)
                    offset += len(data)
        except ApiError as e:
            code = e.code.name
            await ctx.abort(e.code, e.message)
        finally:
            self.metrics.rpcs.labels("FetchShard", code).inc()
            self.metrics.latency.labels("FetchShard").observe(time.perf_counter() - t0)

    @_rpc
    def CompleteShard(self, req: pb.CompleteShardRequest, ctx: Any) -> pb.CompleteShardResponse:
        node = self._node(req.auth)
        shard_id = v.shard_id(req.shard_id)
        loss = v.number(req.mean_loss, "mean_loss", high=1e6)
        tokens = v.count(req.tokens_trained, "tokens_trained")
        result = self.sw.complete(node, shard_id, tokens, loss, self.now())
        return pb.CompleteShardResponse(counted=result.counted, message=result.message)

    @_rpc
    def ReportRound(self, req: pb.ReportRoundRequest, ctx: Any) -> pb.ReportRoundResponse:
        node = self._node(req.auth)
        self.sw.report_round(node, v.report(req), self.now())
        return pb.ReportRoundResponse()

    @_rpc
    def KeeperReport(self, req: pb.KeeperReportRequest, ctx: Any) -> pb.KeeperReportResponse:
        rep = v.keeper_report(req)  # shape first: a malformed report is not even verified
        swarm_key = v.swarm_public_key(req.swarm_public_key)
        self.server.keeper_verifier.verify(req, self.now())
        latest = self.sw.keeper_report(rep, self.now())
        return pb.KeeperReportResponse(
            **self._swarm_token(KEEPER_USERNAME, swarm_key),
            spec=self.sw.spec_pb,
            initial_peers=self.sw.initial_peers(self.server.dht_maddrs, "", self.now()),
            dht_prefix=dht_prefix(self.sw.run_id),
            certified=latest.to_pb() if latest is not None else None,
        )

    async def ProbeReachability(
        self, req: pb.ProbeReachabilityRequest, ctx: grpc.aio.ServicerContext
    ) -> pb.ProbeReachabilityResponse:
        """Connect back to the caller's address on `port` (reachability.py)."""
        t0, code = time.perf_counter(), "OK"
        try:
            self._node(req.auth)
            if not 0 < req.port < 65536:
                raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"port {req.port} is not 1..65535")
            host = reachability.caller_host(ctx.peer())
            if host is None:
                raise ApiError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"cannot probe a caller at {ctx.peer()!r} (not an IP address)",
                )
            greeting, error = await reachability.probe(host, req.port)
            address = f"[{host}]:{req.port}" if ":" in host else f"{host}:{req.port}"
            return pb.ProbeReachabilityResponse(
                reachable=not error, greeting=greeting, address=address, error=error
            )
        except ApiError as e:
            code = e.code.name
            await ctx.abort(e.code, e.message)
        finally:
            self.metrics.rpcs.labels("ProbeReachability", code).inc()
            self.metrics.latency.labels("ProbeReachability").observe(time.perf_counter() - t0)

    @_rpc
    def Leave(self, req: pb.LeaveRequest, ctx: Any) -> pb.LeaveResponse:
        node = self._node(req.auth)
        self.sw.leave(node, v.text(req.reason, "reason"), self.now())
        return pb.LeaveResponse()

    @_rpc
    def GetStatus(self, req: pb.GetStatusRequest, ctx: Any) -> pb.SwarmSnapshot:
        return snap.with_checkpoint(snap.snapshot(self.sw, self.now()), self.server.checkpoint.info)

    @_rpc
    def GetNode(self, req: pb.GetNodeRequest, ctx: Any) -> pb.NodeDetail:
        prefix = v.text(req.node_id, "node_id", required=True, limit=64)
        return snap.node_detail(self.sw, self.sw.find_node(prefix))

    async def WatchSwarm(
        self, req: pb.WatchSwarmRequest, ctx: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.SwarmUpdate]:
        try:
            interval = v.min_interval(req.min_interval_s, WATCH_DEFAULT_S)
        except ApiError as e:
            self.metrics.rpcs.labels("WatchSwarm", e.code.name).inc()
            await ctx.abort(e.code, e.message)
        self.metrics.rpcs.labels("WatchSwarm", "OK").inc()
        sent_checkpoint = self.server.checkpoint.info
        first = snap.with_checkpoint(snap.snapshot(self.sw, self.now()), sent_checkpoint)
        yield pb.SwarmUpdate(snapshot=first)
        cursor = snap.Cursor.after_snapshot(self.sw)
        last_sent = time.monotonic()
        while not self.server.stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.server.stopping.wait(), interval)
            if self.server.stopping.is_set():
                return
            if (
                self.sw.version == cursor.version
                and self.server.checkpoint.info == sent_checkpoint
                and time.monotonic() - last_sent < WATCH_KEEPALIVE_S
            ):
                continue
            sent_checkpoint = self.server.checkpoint.info
            update = snap.delta(self.sw, cursor, self.now())
            yield pb.SwarmUpdate(delta=snap.with_checkpoint(update, sent_checkpoint))
            last_sent = time.monotonic()


class CoordinatorServer:
    """A coordinator serving one run directory.

    :param run_dir: a directory made by `create_run` (run.json + coordinator.sqlite)
    :param host: address to bind; port 0 picks a free port (see `.port` after `start()`)
    :param metrics_port: serve Prometheus metrics on this port (0 = any free port; None = off)
    :param start_dht: also run a hivemind DHT bootstrap peer and hand its addresses to nodes
    :param clock: the time source for leases, heartbeats and history (tests inject one)
    :param swarm_token_lifetime_s: how long a swarm token admits its holder (swarm_token.py)
    :param tls: serve TLS with this certificate and key (`.fingerprint` names it once started)
    :param limits: requests per client per second, concurrent WatchSwarm streams (limits.py)

    Example::

        server = CoordinatorServer(run_dir, port=0)
        port = await server.start()
        ...
        await server.stop()
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        metrics_port: int | None = None,
        start_dht: bool = False,
        clock: Callable[[], float] = time.time,
        swarm_token_lifetime_s: float = TOKEN_LIFETIME_S,
        tls: TlsFiles | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.swarm_token_lifetime_s = swarm_token_lifetime_s
        self.token_issuer: TokenIssuer = None  # type: ignore[assignment]  # made in start()
        self.host = host
        self.port = port
        self.metrics_port = metrics_port
        self.start_dht = start_dht
        self.clock = clock
        self.metrics = Metrics()
        self.checkpoint = LatestCheckpoint(CheckpointDir(self.run_dir))  # polled each tick
        self.dht_maddrs: list[str] = []
        self.swarm: Swarm = None  # type: ignore[assignment]
        self.stopping = asyncio.Event()
        self._server: grpc.aio.Server | None = None
        self._health: Any = None
        self._dht: BootstrapPeer | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._spec_mtime = 0
        self.keeper_verifier = KeeperVerifier(None)
        self.tls = tls
        self.fingerprint: str | None = None  # SHA-256 of the certificate served, with TLS
        self.limiter = LimitsInterceptor(limits or Limits())

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> int:
        try:
            config = load_run(self.run_dir)
            self.swarm = open_swarm(self.run_dir, config, now=self.clock())
            self._spec_mtime = (self.run_dir / RUN_FILE).stat().st_mtime_ns
            self.keeper_verifier = KeeperVerifier(ensure_keeper_key(self.run_dir))
            self.token_issuer = TokenIssuer(
                ensure_coordinator_key(self.run_dir), self.swarm_token_lifetime_s, self.clock
            )
        except (OSError, ValueError, RuntimeError) as e:
            raise ServeError(f"cannot open run directory {self.run_dir}: {e}") from e
        shortest = MIN_TOKEN_HEARTBEATS * config.heartbeat_seconds
        if self.swarm_token_lifetime_s < shortest:
            self.swarm.store.close()
            raise ServeError(
                f"a swarm token lifetime of {self.swarm_token_lifetime_s:g} s is shorter than "
                f"{MIN_TOKEN_HEARTBEATS} heartbeats ({config.heartbeat_seconds:g} s each): nodes' "
                f"tokens would run out between renewals; use --swarm-token-lifetime {shortest:g} "
                "or more"
            )
        if self.start_dht:  # first: the DHT forks, and must not inherit gRPC threads (dht.py)
            self._dht = BootstrapPeer(self.host, self.token_issuer)
            try:
                self.dht_maddrs = self._dht.start()
            except Exception as e:
                self.swarm.store.close()
                await self._cleanup_dht()
                raise ServeError(f"cannot start the hivemind DHT bootstrap peer: {e}") from e
        self.swarm.store.start_checkpointer()  # a thread: after the DHT's fork
        self.checkpoint.refresh()  # the newest model checkpoint, before the first GetStatus
        self.request_verifier = RequestVerifier(clock=self.clock)
        interceptor = SignatureInterceptor(
            self.request_verifier, self._public_key_of, self._refused
        )
        server = grpc.aio.server(
            interceptors=[self.limiter, interceptor],
            options=[
                ("grpc.max_receive_message_length", MAX_RECEIVE),
                ("grpc.max_send_message_length", MAX_SEND),
                ("grpc.so_reuseport", 0),
                # A join storm (every node after a restart) queues more calls than the event
                # loop takes at once; beyond gRPC's default 1,000 pending calls it cancels new
                # ones (issue 11: thousands of Joins ended CANCELLED). Queue them instead: each
                # still ends by its own deadline.
                ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
                ("grpc.server.max_pending_requests_hard_limit", 2 * MAX_PENDING_CALLS),
            ],
        )
        pb_grpc.add_CoordinatorServicer_to_server(Servicer(self), server)
        self._health = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        try:
            credentials = self._credentials()
        except TlsError as e:
            self.swarm.store.close()
            await self._cleanup_dht()
            raise ServeError(str(e)) from None
        try:
            if credentials is None:
                port = server.add_insecure_port(f"{self.host}:{self.port}")
            else:
                port = server.add_secure_port(f"{self.host}:{self.port}", credentials)
        except RuntimeError:
            port = 0
        if not port:
            self.swarm.store.close()
            await self._cleanup_dht()
            raise ServeError(
                f"port {self.port} on {self.host} is in use: choose another with --port"
            )
        self.port = port
        if self.metrics_port is not None:
            try:
                self.metrics_port = self.metrics.serve(self.metrics_port, self.host)
            except OSError as e:
                await self._cleanup_dht()
                raise ServeError(
                    f"metrics port {self.metrics_port} on {self.host} is unavailable ({e.strerror}): "
                    "choose another with --metrics-port"
                ) from e
        self.metrics.refresh(self.swarm)
        await server.start()
        self._server = server
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._tick_task = asyncio.create_task(self._ticker())
        return port

    def _credentials(self) -> grpc.ServerCredentials | None:
        if self.tls is None:
            return None
        cert, key = self.tls.read()
        try:
            credentials = grpc.ssl_server_credentials([(key, cert)])
            self.fingerprint = fingerprint(cert)
        except (ValueError, RuntimeError) as e:
            raise TlsError(f"TLS certificate {self.tls.cert} or key is malformed: {e}") from None
        log.info("serving TLS, certificate sha256 fingerprint %s", self.fingerprint)
        return credentials

    def _public_key_of(self, node_id: str) -> bytes | None:
        node = self.swarm.nodes.get(node_id)
        return node.public_key if node is not None else None

    def _refused(self, method: str, node_id: str, error: ApiError) -> None:
        """A request the signature interceptor refused: count it and say so in one line."""
        self.metrics.rpcs.labels(method, error.code.name).inc()
        log.warning("refused %s from node %s: %s", method, node_id or "?", error.message)

    async def stop(self, grace: float = 1.0) -> None:
        self.stopping.set()
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._tick_task is not None:
            self._tick_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._tick_task
            self._tick_task = None
        if self.swarm is not None:
            self.swarm.flush(self.clock())
            self.swarm.store.close()
        self.metrics.close()
        await self._cleanup_dht()

    def recover_store(self, error: BaseException) -> None:
        """A commit failed (disk full, I/O error): memory may hold changes the database lacks.

        Go back to the last committed state, which is everything an RPC ever acknowledged, by
        reopening the run; if that fails too, the next request tries again.
        """
        log.error("database write failed (%s): reloading the run from its last commit", error)
        with contextlib.suppress(Exception):
            self.swarm.store.close()
        self.swarm = open_swarm(self.run_dir, load_run(self.run_dir), now=self.clock())
        self.swarm.store.start_checkpointer()

    async def _cleanup_dht(self) -> None:
        if self._dht is not None:
            await asyncio.to_thread(self._dht.stop)
            self._dht = None

    def _poll_spec(self, now: float) -> None:
        """Reload run.json when `gpt5os-coordinator spec --set` rewrote it."""
        path = self.run_dir / RUN_FILE
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            return
        if mtime != self._spec_mtime:
            self._spec_mtime = mtime
            self.swarm.set_spec(load_run(self.run_dir).spec, now)

    async def _ticker(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(TICK_S)
            try:
                now = self.clock()
                self.swarm.tick(now, flush=False)
                while self.swarm.flush(now, limit=FLUSH_CHUNK):
                    await asyncio.sleep(0)  # let RPCs in between two chunks
                ticks += 1
                if ticks % 2 == 0:
                    self.swarm.poll_control(now)
                    self._poll_spec(now)
                self.checkpoint.refresh()
                if ticks % METRICS_EVERY_TICKS == 0:
                    self.metrics.refresh(self.swarm)
            except sqlite3.Error as e:  # disk full: drop unsaved changes, retry next tick
                with contextlib.suppress(Exception):
                    self.recover_store(e)
            except Exception as e:  # keep serving; a locked database clears on the next tick
                log.error("background tick failed: %r", e)
