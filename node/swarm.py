"""The node's place in the hivemind swarm: its DHT peer, the pseudo-gradient averager and the
tracker that decides, from every peer's reported tokens, when the swarm starts an outer round.

Each averager installs signal handlers in its own process, so a node is one process with one
averager; tests run each node as its own process too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import hivemind
import torch
from gpt5os.proto import pb
from hivemind.compression import CompressionInfo, Float16Compression, NoCompression
from hivemind.optim.progress_tracker import ProgressTracker
from hivemind.p2p.p2p_daemon_bindings.utils import P2PDaemonError
from hivemind.utils import get_dht_time

from .diloco import OuterState

log = logging.getLogger(__name__)

CHUNK_TIMEOUT_S = 20.0
EXACT = "none"  # the spec's compression value for exact (fixed-point) averaging


def start_dht(initial_peers: list[str], listen: str) -> hivemind.DHT:
    """Start our DHT peer, bootstrapping from the peers the coordinator handed us.

    Those are recently active nodes, and one may have died since its last heartbeat: when none
    answers, p2pd refuses to start ("failed to connect to bootstrap peers"). Then start alone;
    nodes that join later are handed our address.
    """
    try:
        return hivemind.DHT(initial_peers=list(initial_peers), host_maddrs=[listen], start=True)
    except P2PDaemonError as e:
        if not initial_peers:
            raise
        log.warning("no bootstrap peer answered (%s): starting the DHT alone", e)
        return hivemind.DHT(initial_peers=[], host_maddrs=[listen], start=True)


def visible_maddrs(dht: hivemind.DHT) -> list[str]:
    return [str(m) for m in dht.get_visible_maddrs()]


def dht_records(dht: hivemind.DHT, key: str) -> dict:
    """{subkey: value} of a DHT dictionary record (empty when absent or not a dictionary);
    values are whatever peers stored, so callers validate them."""
    found = dht.get(key, latest=True)
    if found is None or not isinstance(found.value, dict):
        return {}
    return {
        subkey: entry.value
        for subkey, entry in found.value.items()
        if getattr(entry, "value", None) is not None
    }


class PseudoGradientAverager(hivemind.DecentralizedAverager):
    """Averages one buffer per parameter and shares (round, θ_global, momentum) with joiners.

    With exact averaging (spec compression "none") the buffers are float64 fixed-point values
    (see fixed_point.py) and every peer sends weight 1; with "float16" they are fp32 pseudo-
    gradients sent as fp16 and weighted by tokens (half the bytes, results differ slightly
    between peers).
    """

    def __init__(
        self,
        outer: OuterState,
        dht: hivemind.DHT,
        *,
        prefix: str,
        spec: pb.RunSpec,
    ) -> None:
        self.outer = outer
        self.exact = spec.compression in ("", EXACT)
        dtype = torch.float64 if self.exact else torch.float32
        buffers = [torch.zeros(p.numel(), dtype=dtype) for p in outer.global_params]
        compression = NoCompression() if self.exact else Float16Compression()
        super().__init__(
            buffers,
            dht,
            start=True,
            prefix=prefix,
            min_group_size=2,
            min_matchmaking_time=spec.matchmaking_time_s or 3.0,
            # A follower that gives up on its leader a moment before the leader starts the
            # all-reduce leaves the leader in a group with a ghost; under load a short timeout
            # makes that likely. hivemind wants it below min_matchmaking_time.
            request_timeout=max(1.0, 0.6 * (spec.matchmaking_time_s or 3.0)),
            allreduce_timeout=spec.averaging_timeout_s or 120.0,
            # A peer that sends no part for this long is dropped (its data is then missing and
            # the group redoes the round, group_average.py) instead of stalling the whole
            # all-reduce until allreduce_timeout; also the per-chunk timeout of state downloads.
            next_chunk_timeout=CHUNK_TIMEOUT_S,
            compression=compression,
            state_compression=NoCompression(),
            declare_state_period=10.0,
            # Shared only once this node has tried to load the swarm's state itself: two nodes that
            # start together must not download each other's state and end up swapped.
            allow_state_sharing=False,
        )

    def run(self) -> None:
        """The averager's own process. hivemind's reducer sums every part in `torch.zeros(shape)`,
        the default dtype: float64 keeps the sum of our fixed-point values exact (fixed_point.py)."""
        if self.exact:
            torch.set_default_dtype(torch.float64)
        super().run()

    def get_current_state(self):
        """Called in this process when a peer downloads our state (hivemind's state sharing)."""
        meta, tensors = self.outer.export()
        infos = [CompressionInfo.from_tensor(t, key=i) for i, t in enumerate(tensors)]
        return meta, tensors, infos


def make_tracker(dht: hivemind.DHT, prefix: str, tokens_per_round: int) -> ProgressTracker:
    """hivemind's ProgressTracker counts tokens (its "samples") towards the round's target."""
    return ProgressTracker(
        dht,
        prefix,
        target_batch_size=tokens_per_round,
        min_refresh_period=0.25,
        max_refresh_period=2.0,
        default_refresh_period=1.0,
        metadata_expiration=30.0,
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
