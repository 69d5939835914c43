"""The node's gRPC client for the coordinator: one place that turns transport failures into errors
a volunteer can act on, that keeps the session (node id + token) for every call and signs every
request with the node's key (common/request_signing.py)."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import grpc
from gpt5os.common.backoff import Backoff, retry, retryable
from gpt5os.common.channels import PLAINTEXT, ChannelError, Security, open_channel
from gpt5os.common.request_signing import Keyring
from gpt5os.coordinator.run_spec import RunSpec
from gpt5os.proto import pb, pb_grpc

from .identity import NodeIdentity

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 8 * 1024 * 1024
CONNECT_TIMEOUT_S = 15.0
CALL_TIMEOUT_S = 30.0
JOIN_ATTEMPTS = 8  # with JOIN_BACKOFF: up to ~2 min of retries while the coordinator recovers
JOIN_BACKOFF = Backoff(base=1.0, cap=30.0)


class CoordinatorError(RuntimeError):
    """A coordinator call failed in a way the volunteer should read (bad address, refused join...)."""


class Banned(CoordinatorError):
    """The coordinator refused this node for good (PERMISSION_DENIED): retrying never helps."""


class ShardCorrupt(RuntimeError):
    """A downloaded shard did not match the sha256 its lease promised."""


def parse_address(address: str) -> str:
    """Check HOST:PORT early, so a typo gets a clear message instead of a gRPC stack."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise CoordinatorError(
            f"invalid coordinator address {address!r}: expected HOST:PORT, e.g. 127.0.0.1:50051"
        )
    return address


@dataclass
class Session:
    node_id: str
    token: str
    spec: RunSpec
    join: pb.JoinResponse

    @property
    def auth(self) -> pb.NodeAuth:
        return pb.NodeAuth(node_id=self.node_id, session_token=self.token)


class CoordinatorClient:
    """Synchronous calls to one coordinator; safe to use from the trainer and heartbeat threads."""

    def __init__(
        self,
        address: str,
        identity: NodeIdentity,
        *,
        display_name: str = "",
        security: Security = PLAINTEXT,
        invite: str = "",
        on_banned: Callable[[str], None] | None = None,
    ) -> None:
        self.address = parse_address(address)
        self.identity = identity
        self.display_name = display_name
        self.security = security
        self.invite = invite
        self.on_banned = on_banned  # called once with the reason when a call is refused for good
        self.banned: str | None = None
        self._raw_channel: grpc.Channel | None = None  # made by join(): it checks the certificate
        self._channel: grpc.Channel | None = None  # the raw one, signing every call
        self._stub: pb_grpc.CoordinatorStub = None  # type: ignore[assignment]
        self._lock = threading.Lock()
        self.session: Session | None = None
        self.join_backoff = JOIN_BACKOFF  # after a restart every node joins at once: jitter
        self.sleep: Callable[[float], object] = time.sleep

    def close(self) -> None:
        if self._raw_channel is not None:
            self._raw_channel.close()

    def _connect(self) -> None:
        """Open the channel once: plaintext, or TLS with the certificate checked (channels.py);
        every call on it is signed with the node's key (common/request_signing.py)."""
        if self._channel is not None:
            return
        try:
            self._raw_channel = open_channel(
                self.address,
                self.security,
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ],
            )
        except ChannelError as e:
            raise CoordinatorError(str(e)) from None
        if self.security.fingerprint:
            log.info("coordinator certificate matches the pinned fingerprint; talking TLS")
        self._channel = grpc.intercept_channel(
            self._raw_channel, Keyring([self.identity.private_key]).interceptor()
        )
        self._stub = pb_grpc.CoordinatorStub(self._channel)

    # -- calls ------------------------------------------------------------------------------

    def join(self, device: str, swarm_public_key: bytes = b"") -> Session:
        self._connect()
        try:
            grpc.channel_ready_future(self._raw_channel).result(timeout=CONNECT_TIMEOUT_S)
        except grpc.FutureTimeoutError:
            raise CoordinatorError(
                f"cannot reach the coordinator at {self.address} (no answer in "
                f"{CONNECT_TIMEOUT_S:.0f} s): check the address and that it is running"
            ) from None
        info = pb.NodeInfo(
            software_version=version("gpt5os"),
            device=device,
            hostname=socket.gethostname(),
            display_name=self.display_name,
        )
        request = pb.JoinRequest(
            public_key=self.identity.public_key,
            info=info,
            swarm_public_key=swarm_public_key,
            invite=self.invite,
        )
        response = retry(
            lambda: self._call("Join", request),
            should_retry=lambda e: retryable(getattr(e, "code", None)),
            backoff=self.join_backoff,
            attempts=JOIN_ATTEMPTS,
            sleep=self.sleep,
            on_retry=lambda e, n, delay: log.warning(
                "join attempt %d failed (%s); retrying in %.1f s", n, e, delay
            ),
        )
        try:
            spec = RunSpec.from_pb(response.spec)
        except (ValueError, TypeError) as e:
            raise CoordinatorError(
                f"the coordinator's run spec is not usable by this node ({e}): the node or the "
                "coordinator needs another gpt5os version"
            ) from None
        with self._lock:
            self.session = Session(response.node_id, response.session_token, spec, response)
        return self.session

    def heartbeat(self, stats: pb.NodeStats, swarm_public_key: bytes = b"") -> pb.HeartbeatResponse:
        request = pb.HeartbeatRequest(
            auth=self._auth(), stats=stats, swarm_public_key=swarm_public_key
        )
        return self._call("Heartbeat", request)

    def lease_shard(self) -> pb.LeaseShardResponse:
        return self._call("LeaseShard", pb.LeaseShardRequest(auth=self._auth()))

    def complete_shard(
        self, shard_id: str, tokens: int, mean_loss: float
    ) -> pb.CompleteShardResponse:
        request = pb.CompleteShardRequest(
            auth=self._auth(), shard_id=shard_id, tokens_trained=tokens, mean_loss=mean_loss
        )
        return self._call("CompleteShard", request)

    def report_round(self, request: pb.ReportRoundRequest) -> None:
        request.auth.CopyFrom(self._auth())
        self._call("ReportRound", request)

    def probe_reachability(self, port: int) -> pb.ProbeReachabilityResponse:
        """Ask the coordinator to connect back to this machine on `port` (node/reachability.py)."""
        request = pb.ProbeReachabilityRequest(auth=self._auth(), port=port)
        return self._call("ProbeReachability", request)

    def leave(self, reason: str) -> None:
        self._call("Leave", pb.LeaveRequest(auth=self._auth(), reason=reason), timeout=5.0)

    def fetch_shard(
        self,
        lease: pb.Lease,
        dest: Path,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> Path:
        """Download a leased shard to `dest`, resuming a partial file, and check its sha256.

        A file that fails the check is deleted and ShardCorrupt raised: the caller fetches again.
        """
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_suffix(".part")
        offset = partial.stat().st_size if partial.exists() else 0
        if offset > lease.size_bytes:
            partial.unlink()
            offset = 0
        request = pb.FetchShardRequest(auth=self._auth(), shard_id=lease.shard_id, offset=offset)
        try:
            with open(partial, "ab") as f:
                for chunk in self._stub.FetchShard(request, timeout=600.0):
                    f.write(chunk.data)
                    if on_progress is not None:
                        on_progress(chunk.offset + len(chunk.data), chunk.total_size)
        except grpc.RpcError as e:
            raise self._translate("FetchShard", e) from None
        digest = hashlib.sha256()
        with open(partial, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != lease.sha256:
            partial.unlink(missing_ok=True)
            raise ShardCorrupt(
                f"shard {lease.shard_id} failed its sha256 check "
                f"(got {digest.hexdigest()[:12]}, want {lease.sha256[:12]}); fetching again"
            )
        partial.replace(dest)
        return dest

    # -- plumbing ---------------------------------------------------------------------------

    def _auth(self) -> pb.NodeAuth:
        with self._lock:
            if self.session is None:
                raise CoordinatorError("not joined: call join() first")
            return self.session.auth

    def _call(self, method: str, request, timeout: float = CALL_TIMEOUT_S):
        try:
            return getattr(self._stub, method)(request, timeout=timeout)
        except grpc.RpcError as e:
            raise self._translate(method, e) from None

    def _translate(self, method: str, error: grpc.RpcError) -> CoordinatorError:
        code = error.code() if hasattr(error, "code") else None
        details = error.details() if hasattr(error, "details") else str(error)
        if code == grpc.StatusCode.UNAVAILABLE:
            message = f"coordinator at {self.address} is unavailable ({details})"
        else:
            name = code.name if code is not None else "UNKNOWN"
            message = f"coordinator refused {method}: {name}: {details}"
        if code == grpc.StatusCode.PERMISSION_DENIED:  # banned, or not invited: final
            err: CoordinatorError = Banned(message)
            first = self.banned is None
            self.banned = self.banned or details
            if first and self.on_banned is not None:
                self.on_banned(details)
        else:
            err = CoordinatorError(message)
        err.code = code  # type: ignore[attr-defined]
        return err
