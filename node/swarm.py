"""The node's place in the hivemind swarm: its DHT peer, the pseudo-gradient averager and the
tracker that decides, from every peer's reported tokens, when an outer round is due (rounds.py).

Each averager installs signal handlers in its own process, so a node is one process with one
averager; tests run each node as its own process too.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import AsyncIterator  # noqa: UP035  (hivemind needs typing hints on rpc_*)

import hivemind
import torch
from gpt5os.common.hivemind_children import LinkedDHT
from gpt5os.common.lifetime import die_with_parent
from gpt5os.common.log_limit import LogLimit, held_back_note
from gpt5os.common.swarm_auth import MemberCheck, install_token
from gpt5os.coordinator.run_spec import RunSpec
from hivemind.averaging.allreduce import AllreduceException
from hivemind.averaging.partition import DEFAULT_PART_SIZE_BYTES
from hivemind.compression import CompressionInfo, NoCompression
from hivemind.p2p import P2PContext, PeerID
from hivemind.p2p.p2p_daemon_bindings.utils import P2PDaemonError
from hivemind.proto import averaging_pb2
from hivemind.utils import MPFuture, get_dht_time
from hivemind.utils.asyncio import aiter_with_timeout, as_aiter, azip

from .allreduce import SameBytesRunner, WireReport
from .claims import ClaimBoard
from .codec import Blockwise8, Codec, codec_for
from .dht_records import dht_records
from .diloco import OuterState
from .group_average import GroupAverage, GroupAverageConfig
from .memory import release_shared_pages, return_freed_memory_to_os
from .robust import RobustConfig
from .rounds import RoundTracker
from .state_wire import BUSY, Busy, Downloaded, ServeSlots, StateAssembler, state_frames
from .swarm_access import SwarmAccess

log = logging.getLogger(__name__)

CHUNK_TIMEOUT_S = 20.0
EXACT = "none"  # the spec's compression value for exact (fixed-point) averaging
WIRE_REPORT = "__wire__"  # the key under which step()'s result carries the WireReport


def swarm_prefix(dht_prefix: str, run_id: str) -> str:
    """The run's hivemind key prefix as the coordinator handed it (an old coordinator sends none).

    hivemind's averager asserts that its prefix has no '.': refuse such a prefix with a message
    instead of a crash inside hivemind."""
    prefix = dht_prefix or f"gpt5os_{run_id}"
    if "." in prefix or not prefix.isprintable() or not prefix:
        raise ValueError(
            f"the coordinator's DHT prefix {prefix!r} is not usable by hivemind (no '.' allowed): "
            "the coordinator needs a newer gpt5os"
        )
    return prefix


def start_dht(
    initial_peers: list[str],
    listen: str,
    access: SwarmAccess | None = None,
    *,
    client_mode: bool = False,
    announce: Sequence[str] = (),
) -> hivemind.DHT:
    """Start our DHT peer, bootstrapping from the peers the coordinator handed us; its process and
    p2p daemon die with this process (common/lifetime.py). With `access` its identity is our
    swarm key and it admits only peers with a coordinator-signed token (common/swarm_auth.py).

    Those are recently active nodes, and one may have died since its last heartbeat: when none
    answers, p2pd refuses to start ("failed to connect to bootstrap peers"). Then start alone;
    nodes that join later are handed our address.

    `client_mode` (a node others cannot reach, node/reachability.py): hivemind's client mode,
    reaching others through libp2p relays; `announce`: addresses to announce instead of the
    listen address (a port-forwarded public host).
    """
    kwargs: dict = {"host_maddrs": [listen]}
    if access is not None:
        from gpt5os.common.swarm_auth import OwnedRecords, SwarmAuthorizer  # noqa: PLC0415

        authorizer = SwarmAuthorizer(access.key, access.coordinator_public_key, token=access.token)
        kwargs.update(
            access.key.dht_kwargs(),
            authorizer=authorizer,
            record_validators=[OwnedRecords(authorizer)],
        )
    if client_mode:
        kwargs.update(client_mode=True, use_relay=True, use_auto_relay=True)
    if announce:
        kwargs["announce_maddrs"] = list(announce)
    try:
        return LinkedDHT(initial_peers=list(initial_peers), start=True, **kwargs)
    except P2PDaemonError as e:
        if not initial_peers:
            raise
        log.warning("no bootstrap peer answered (%s): starting the DHT alone", e)
        return LinkedDHT(initial_peers=[], start=True, **kwargs)


def visible_maddrs(dht: hivemind.DHT) -> list[str]:
    return [str(m) for m in dht.get_visible_maddrs()]


class PseudoGradientAverager(hivemind.DecentralizedAverager):
    """Averages one buffer per parameter and shares (round, θ_global, momentum) with joiners.

    With exact averaging (spec compression "none") the buffers are float64 fixed-point values
    (see fixed_point.py), hivemind's stock all-reduce sums them and every peer sends weight 1.
    With a codec ("blockwise8", "float16": codec.py) they are fp32 pseudo-gradients weighted by
    tokens, and our runner (allreduce.py) makes every member decode the same quantized average,
    so results are bitwise equal on every peer; step()'s gathered dict then also carries this
    peer's WireReport under WIRE_REPORT.
    """

    def __init__(
        self,
        outer: OuterState | None,
        dht: hivemind.DHT,
        *,
        prefix: str,
        spec: RunSpec,
        numels: Sequence[int] | None = None,
        access: SwarmAccess | None = None,
    ) -> None:
        """`outer` may come later (set `.outer` before state sharing is allowed) with `numels`
        giving the buffer sizes: hivemind forks the averager's process here, and a process forked
        after the model exists keeps a copy-on-write snapshot of every tensor that training then
        rewrites (measured: ~12 bytes per parameter for each of the DHT and averager processes)."""
        self.outer = outer
        self.access = access  # our token (host process); None: an unmoderated swarm
        self.members = MemberCheck(access.coordinator_public_key) if access else None
        self._creator_pid = os.getpid()  # hivemind forks our process inside __init__ (start=True)
        self.exact = spec.compression == EXACT
        self.codec: Codec | None = None if self.exact else codec_for(spec.compression)
        self.robust = RobustConfig.for_run(spec.robust, spec.round_tokens)
        self._wire_reports: dict[bytes, WireReport] = {}
        self._serving = ServeSlots()  # state downloads we serve at once (averager process)
        self._refusals = LogLimit()  # a peer refused again for the same reason: one line a minute
        dtype = torch.float64 if self.exact else torch.float32
        if numels is None:
            assert outer is not None, "give the outer state or the buffers' sizes"
            numels = [p.numel() for p in outer.global_params]
        buffers = [torch.zeros(n, dtype=dtype) for n in numels]
        if isinstance(self.codec, Blockwise8):  # parts must be whole blocks (codec.py)
            values = int(
                DEFAULT_PART_SIZE_BYTES / (4 * self.codec.estimate_compression_ratio(None))
            )
            assert values % self.codec.block == 0, (values, self.codec.block)
        super().__init__(
            buffers,
            dht,
            start=True,
            prefix=prefix,
            min_group_size=2,
            min_matchmaking_time=spec.matchmaking_time_s,
            # A follower that gives up on its leader a moment before the leader starts the
            # all-reduce leaves the leader in a group with a ghost; under load a short timeout
            # makes that likely. hivemind wants it below min_matchmaking_time.
            request_timeout=max(1.0, 0.6 * spec.matchmaking_time_s),
            allreduce_timeout=spec.averaging_timeout_s,
            # A peer that sends no part for this long is dropped (its data is then missing and
            # the group redoes the round, group_average.py) instead of stalling the whole
            # all-reduce until allreduce_timeout; also the per-chunk timeout of state downloads.
            next_chunk_timeout=CHUNK_TIMEOUT_S,
            compression=self.codec or NoCompression(),
            part_size_bytes=DEFAULT_PART_SIZE_BYTES,
            state_compression=NoCompression(),
            declare_state_period=10.0,
            # Shared only once this node has tried to load the swarm's state itself: two nodes that
            # start together must not download each other's state and end up swapped.
            allow_state_sharing=False,
        )
        self.release_wire()  # shared as zeros (written pages): not needed before round 1

    def release_wire(self) -> int:
        """The wire buffers' memory back to the system until the next round writes them
        (memory.py release_shared_pages); call once the round's average has been applied.
        Bytes released."""
        with self.get_tensors() as buffers:
            return sum(release_shared_pages(b) for b in buffers)

    def _set_state_sharing(self, value: bool) -> None:
        """A client-mode peer (behind NAT) cannot serve state: asking it to (here or through
        the priority below) is a no-op instead of hivemind's ValueError."""
        if value and self.client_mode:
            return
        hivemind.DecentralizedAverager.allow_state_sharing.fset(self, value)

    allow_state_sharing = property(
        hivemind.DecentralizedAverager.allow_state_sharing.fget, _set_state_sharing
    )

    def _set_sharing_priority(self, value: float) -> None:
        if value and self.client_mode:
            return
        hivemind.DecentralizedAverager.state_sharing_priority.fset(self, value)

    state_sharing_priority = property(
        hivemind.DecentralizedAverager.state_sharing_priority.fget, _set_sharing_priority
    )

    def run(self) -> None:
        """The averager's own process. hivemind's reducer sums every part in `torch.zeros(shape)`,
        the default dtype: float64 keeps the sum of our fixed-point values exact (fixed_point.py).
        The process dies with the node's, however that dies (common/lifetime.py)."""
        die_with_parent(self._creator_pid)
        # Its all-reduces and state transfers allocate and free GBs: give them back (memory.py).
        return_freed_memory_to_os()
        if self.exact:
            torch.set_default_dtype(torch.float64)
        super().run()

    async def _run_allreduce_inplace_(self, tensors, group_info, group_id=None, **kwargs):
        """Codec modes: our runner, and each result part is copied in (not added as a delta)."""
        if self.codec is None:
            return await super()._run_allreduce_inplace_(tensors, group_info, group_id, **kwargs)
        group_id = group_info.group_id if group_id is None else group_id
        runner = SameBytesRunner(
            robust=self.robust,
            p2p=self._p2p,
            servicer_type=type(self),
            prefix=self.prefix,
            tensors=tensors,
            group_id=group_id,
            ordered_peer_ids=group_info.peer_ids,
            **kwargs,
        )
        assert group_id in self._running_groups, f"group {group_id} was not registered"
        self._running_groups[group_id].set_result(runner)
        async for tensor, result in azip(as_aiter(*tensors), runner):
            tensor.copy_(result.reshape(tensor.shape))
        self.last_updated = get_dht_time()
        self._state_updated.set()
        self._wire_reports[group_id] = runner.report

    def get_current_state(self):
        """Called in this process when a peer downloads our state (hivemind's state sharing)."""
        if self.outer is None:
            raise RuntimeError("no outer state to share yet")
        meta, tensors = self.outer.export()
        if self.access is not None:  # the downloader checks that we are admitted
            meta = dict(meta, swarm_token=self.access.token_bytes())
        infos = [CompressionInfo.from_tensor(t, key=i) for i, t in enumerate(tensors)]
        return meta, tensors, infos

    # -- only peers with a coordinator-signed token average with us or serve us state ----------

    def step(self, gather=None, **kwargs):
        """hivemind's step, with our swarm token in the gather data every member checks."""
        if self.access is not None:
            gather = dict(gather or {}, swarm_token=self.access.token_bytes())
        return super().step(gather=gather, **kwargs)

    def member_problem(self, gather_bytes: bytes, peer: PeerID) -> str:
        """Why a member's gather data does not admit it ("" when it does)."""
        if self.members is None:
            return ""
        try:
            _bandwidth, _mode, user = self.serializer.loads(gather_bytes)
            user = self.serializer.loads(user)
            token, name = user.get("swarm_token"), str(user.get("node_id"))
        except Exception:  # a peer's garbage
            token, name = None, None
        return self.members.problem(token, peer, name)

    def source_problem(self, meta: object, peer: PeerID) -> str:
        """Why a state's metadata does not show its server admitted ("" when it does)."""
        if self.members is None:
            return ""
        token = meta.get("swarm_token") if isinstance(meta, dict) else None
        return self.members.problem(token, peer)

    async def rpc_join_group(
        self, request: averaging_pb2.JoinRequest, context: P2PContext
    ) -> AsyncIterator[averaging_pb2.MessageFromLeader]:
        """As a group's leader: refuse a follower without a valid token before anything else."""
        why = self.member_problem(request.gather, context.remote_id)
        if why:
            held_back = self._refusals.allow(("averaging", context.remote_id, why))
            if held_back is not None:
                log.warning("refused peer %s in averaging: %s%s", context.remote_id, why,
                            held_back_note(held_back))  # fmt: skip
            yield averaging_pb2.MessageFromLeader(code=averaging_pb2.PROTOCOL_VIOLATION)
            return
        async for message in super().rpc_join_group(request, context):
            yield message

    async def _aggregate_with_group(self, group_info, min_vector_size: int, **kwargs):
        """Every member's token, checked by every member before any tensor moves: a group with
        a peer the coordinator did not admit is abandoned (each member sees the same gathered
        data, so all of them abandon it) and hivemind looks for another. In codec modes the
        result also carries this peer's WireReport (the bytes it put on the wire)."""
        for peer, gathered in zip(group_info.peer_ids, group_info.gathered, strict=True):
            why = self.member_problem(gathered, peer)
            if why:
                log.warning("averaging group abandoned: member %s: %s", peer, why)
                raise AllreduceException(f"group member {peer} is not admitted: {why}")
        gathered = await super()._aggregate_with_group(group_info, min_vector_size, **kwargs)
        report = self._wire_reports.pop(group_info.group_id, None)  # codec modes: bytes sent
        if report is not None:
            gathered = dict(gathered)
            gathered[WIRE_REPORT] = report.to_dict()
        return gathered

    def set_min_group_size(self, size: int) -> None:
        """hivemind's matchmaking reads min_group_size on every assembly: change it per round."""
        future = MPFuture()
        self._outer_pipe.send(("_set_min_group_size", [size], dict(future=future)))
        future.result(timeout=30)

    async def _set_min_group_size(self, size: int, future: MPFuture) -> None:
        self._matchmaking.min_group_size = size
        future.set_result(None)

    # -- downloading state from one chosen peer (hivemind only offers "the highest priority") ---

    def state_sources(self) -> list[bytes]:
        """Peer ids (bytes) that declare their state downloadable now, self excluded."""
        key = f"{self.prefix}.all_averagers"
        return [
            subkey
            for subkey, value in dht_records(self.dht, key).items()
            if isinstance(value, float | int)
            and isinstance(subkey, bytes)
            and subkey != self.peer_id.to_bytes()
        ]

    def download_state(self, peer: bytes, timeout: float) -> Downloaded | Busy | None:
        """`peer`'s state (with the sha256 of its θ_global as it arrived), Busy when it serves
        too many downloads already, None when it refused or failed. The digest is not compared
        here: the caller compares it with the certified one (state_sync.py)."""
        future = MPFuture()
        self._outer_pipe.send(("_download_state_from", [peer, timeout], dict(future=future)))
        return future.result(timeout=timeout * 4 + 30)

    async def _download_state_from(self, peer: bytes, timeout: float, future: MPFuture) -> None:
        """In the averager process: stream one peer's state (per-chunk `timeout`) into shared
        memory, hashing θ_global on the way (state_wire.py)."""
        try:
            stub = self.get_stub(self._p2p, PeerID(peer), namespace=self.prefix)
            stream = await stub.rpc_download_state(averaging_pb2.DownloadRequest())
            meta, state = None, StateAssembler(hashed=len(self._averaged_tensors))
            async for message in aiter_with_timeout(stream, timeout=timeout):
                if message.metadata:
                    meta = self.serializer.loads(message.metadata)
                    if isinstance(meta, dict) and meta.get(BUSY):
                        log.info("state from peer %s: busy, trying the next source", PeerID(peer))
                        future.set_result(Busy())
                        return
                    why = self.source_problem(meta, PeerID(peer))
                    if why:
                        held_back = self._refusals.allow(("state", peer, why))
                        if held_back is not None:
                            log.warning("state from peer %s refused: %s%s", PeerID(peer), why,
                                        held_back_note(held_back))  # fmt: skip
                        future.set_result(None)
                        return
                if message.HasField("tensor_part"):
                    state.add(message.tensor_part)
            tensors, digest = state.result()
            future.set_result(Downloaded(meta, tensors, digest) if isinstance(meta, dict) else None)
        except Exception as e:  # a peer that vanished or sent garbage: the caller tries the next
            log.info("state download from %s failed: %r", PeerID(peer), e)
            if not future.done():
                future.set_result(None)

    async def rpc_download_state(
        self, _request: averaging_pb2.DownloadRequest, context: P2PContext
    ) -> AsyncIterator[averaging_pb2.DownloadData]:
        """hivemind's state sharing in big raw parts (state_wire.py; hivemind's own receiver
        still reads them), at most MAX_CONCURRENT_DOWNLOADS at once: beyond that the answer is
        "busy" and the downloader tries its next source (hivemind issue 169)."""
        if not self.allow_state_sharing:
            return  # hivemind's "no": the downloader tries the next source
        if not self._serving.acquire():
            held_back = self._refusals.allow(("busy", context.remote_id))
            if held_back is not None:
                log.info("state download by %s refused: busy (%d running)%s", context.remote_id,
                         self._serving.active, held_back_note(held_back))  # fmt: skip
            yield averaging_pb2.DownloadData(metadata=self.serializer.dumps({BUSY: True}))
            return
        try:
            metadata, tensors, _infos = await self._get_current_state_from_host_process()
            for message in state_frames(metadata, tensors):
                yield message  # a DownloadData, encoded by hand
        finally:
            self._serving.release()


def min_group_size(num_peers: int, keeper_present: bool) -> int:
    """The smallest group that may average a round: two nodes when the swarm has two, a node and
    the keeper when it has one. The keeper contributes nothing, so it must not let one fast node
    finish a round without the others (their work would be thrown away by the re-sync).
    `num_peers` is the tracker's count, self and the keeper included."""
    nodes = num_peers - (1 if keeper_present else 0)
    return 3 if keeper_present and nodes >= 2 else 2


@dataclass
class SwarmPeer:
    """Everything that ties one process to the run's hivemind swarm, as one object the trainer
    (and the keeper) is handed: the DHT peer, the pseudo-gradient averager, the tracker that
    says when a round ends, the round's group averaging, and the boards peers publish on.
    Unit tests hand the trainer a fake with the same attributes."""

    dht: hivemind.DHT
    averager: PseudoGradientAverager
    tracker: RoundTracker
    group_average: GroupAverage
    claims: ClaimBoard
    membership: Membership
    access: SwarmAccess | None = None

    @classmethod
    def start(
        cls,
        outer: OuterState | None,
        spec: RunSpec,
        *,
        initial_peers: list[str],
        listen: str,
        prefix: str,
        node_id: str,
        keeper: bool = False,
        numels: Sequence[int] | None = None,
        access: SwarmAccess | None = None,
        client_mode: bool = False,
        announce: Sequence[str] = (),
    ) -> SwarmPeer:
        """`outer` may be None with `numels` given: see PseudoGradientAverager. With `access`
        (our swarm token) we talk only to peers the coordinator admitted. `client_mode` and
        `announce`: see start_dht."""
        dht = start_dht(initial_peers, listen, access, client_mode=client_mode, announce=announce)
        if access is not None:
            access.on_renewal(lambda token: install_token(dht, token))
        averager = PseudoGradientAverager(
            outer, dht, prefix=f"{prefix}_diloco", spec=spec, numels=numels, access=access
        )
        tracker = make_tracker(
            dht,
            f"{prefix}_diloco",
            spec.round_tokens,
            private_key=access.key.private_key if access is not None else None,
        )
        claims = ClaimBoard(dht, f"{prefix}_claims")

        def group_floor() -> int:
            keeper_seen = keeper or any(c.is_keeper for c in claims.fetch().values())
            return min_group_size(tracker.global_progress.num_peers, keeper_seen)

        group_average = GroupAverage(
            averager,
            dht,
            prefix=f"{prefix}_diloco",
            config=GroupAverageConfig(
                node_id=node_id,
                tokens_per_round=spec.round_tokens,
                matchmaking_time_s=spec.matchmaking_time_s,
                keeper=keeper,
                robust=spec.robust,
            ),
            exact=averager.exact,
            min_group_size=group_floor,
        )
        return cls(
            dht=dht,
            averager=averager,
            tracker=tracker,
            group_average=group_average,
            claims=claims,
            membership=Membership(dht, f"{prefix}_members", node_id),
            access=access,
        )

    def maddrs(self) -> list[str]:
        """Addresses others can bootstrap from: none for a client-mode peer (nobody can reach it)."""
        return [] if self.averager.client_mode else visible_maddrs(self.dht)

    def close(self) -> None:
        """Leave the swarm: tracker, averager, DHT; safe to call more than once."""
        for name, stop in (
            ("tracker", lambda: self.tracker.shutdown(timeout=5)),
            ("averager", self.averager.shutdown),
            ("dht", self.dht.shutdown),
        ):
            try:
                stop()
            except Exception as e:  # shutting down: report, keep going
                log.debug("stopping %s: %s", name, e)
        if self.access is not None:
            self.access.key.close()


def make_tracker(
    dht: hivemind.DHT, prefix: str, round_tokens: int, private_key=None
) -> RoundTracker:
    """Peers report the tokens (hivemind's "samples") of their round; a round is due when one
    has trained `round_tokens` (its H inner steps; rounds.py). Its records are signed with
    `private_key` (our swarm key: the one our token names)."""
    return RoundTracker(
        dht,
        prefix,
        round_tokens,
        min_refresh_period=0.25,
        max_refresh_period=2.0,
        default_refresh_period=1.0,
        metadata_expiration=30.0,
        private_key=private_key,
        start=True,
    )


@dataclass
class Membership:
    """A DHT record per node, so a cluster can start together (`--min-peers`)."""

    dht: hivemind.DHT
    key: str
    node_id: str

    def announce(self) -> None:
        self.dht.store(
            self.key,
            subkey=self.dht.peer_id.to_bytes(),
            value=self.node_id,
            expiration_time=get_dht_time() + 120,
        )

    def count(self) -> int:
        return len(dht_records(self.dht, self.key))

    def wait_for(self, peers: int, stop: Callable[[], bool], timeout: float = 600.0) -> bool:
        """Block until `peers` nodes announced themselves (self included); False on stop/timeout."""
        deadline = time.monotonic() + timeout
        while not stop() and time.monotonic() < deadline:
            self.announce()
            if self.count() >= peers:
                return True
            time.sleep(0.25)
        return False
