"""The dashboard's picture of the swarm, rebuilt from the WatchSwarm stream.

The coordinator computes every number (tokens/s, coverage, ETA, round means); this module only
*applies* what arrives -- a full `SwarmSnapshot`, then `SwarmDelta`s -- and orders/filters it for
display. It is pure logic with no Textual and no I/O, so the widgets stay thin and the rules
(replace nodes by id, rounds by number, append histories, keep memory bounded) test in
milliseconds with synthetic protos.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from gpt5os.proto import pb

# Bounds keep a dashboard left open all day at constant memory, whatever the run's length.
MAX_HISTORY = 2000
MAX_EVENTS = 500
MAX_ROUNDS = 500

SortKey = Literal["id", "name", "state", "tps", "tokens", "loss", "seen", "device"]
# The order `s` cycles through; the first is the default (the leaderboard's order).
SORT_KEYS: tuple[SortKey, ...] = ("tokens", "tps", "loss", "seen", "state", "id", "name", "device")
# Numbers read best largest-first; names read best A..Z.
_DESCENDING_BY_DEFAULT = {"tokens", "tps"}


@dataclass(kw_only=True)
class SwarmView:
    """The swarm as last seen on the stream; `version` moves on every applied update."""

    max_history: int = MAX_HISTORY
    max_events: int = MAX_EVENTS
    max_rounds: int = MAX_ROUNDS
    run: pb.RunStatus | None = None
    nodes: dict[str, pb.NodeStatus] = field(default_factory=dict)
    rounds: dict[int, pb.RoundStatus] = field(default_factory=dict)
    loss_history: deque[tuple[int, float]] = field(init=False)
    val_loss_history: deque[tuple[int, float]] = field(init=False)
    throughput_history: deque[tuple[float, float]] = field(init=False)
    events: deque[pb.Event] = field(init=False)
    server_unix: float = 0.0
    keeper: pb.KeeperStatus | None = None  # None: the coordinator reports no keeper (older one)
    # server clock minus local clock at receipt: "last seen 12s ago" must not depend on skew.
    clock_offset: float = 0.0
    has_snapshot: bool = False
    snapshots_seen: int = 0
    version: int = 0

    def __post_init__(self) -> None:
        self.loss_history = deque(maxlen=self.max_history)
        self.val_loss_history = deque(maxlen=self.max_history)
        self.throughput_history = deque(maxlen=self.max_history)
        self.events = deque(maxlen=self.max_events)

    # -- applying the stream -----------------------------------------------------------------

    def apply(self, update: pb.SwarmUpdate, *, local_now: float) -> None:
        """Apply one message of a WatchSwarm stream received at `local_now` (local clock)."""
        kind = update.WhichOneof("update")
        if kind == "snapshot":
            self.apply_snapshot(update.snapshot, local_now=local_now)
        elif kind == "delta":
            self.apply_delta(update.delta, local_now=local_now)

    def apply_snapshot(self, snap: pb.SwarmSnapshot, *, local_now: float) -> None:
        """A snapshot replaces everything: after a reconnect the old picture may be wrong."""
        self.run = _copy(snap.run) if snap.HasField("run") else None
        self.keeper = _copy(snap.keeper) if snap.HasField("keeper") else None
        self.nodes = {n.node_id: _copy(n) for n in snap.nodes}
        self.rounds = {}
        self.loss_history.clear()
        self.val_loss_history.clear()
        self.throughput_history.clear()
        self.events.clear()
        self._merge(snap, local_now=local_now)
        self.has_snapshot = True
        self.snapshots_seen += 1

    def apply_delta(self, delta: pb.SwarmDelta, *, local_now: float) -> None:
        """A delta before any snapshot is ignored: it has nothing to be a delta of."""
        if not self.has_snapshot:
            return
        if delta.HasField("run"):
            self.run = _copy(delta.run)
        if delta.HasField("keeper"):
            self.keeper = _copy(delta.keeper)
        for node in delta.nodes:
            self.nodes[node.node_id] = _copy(node)
        self._merge(delta, local_now=local_now)

    def _merge(self, msg: pb.SwarmSnapshot | pb.SwarmDelta, *, local_now: float) -> None:
        for rnd in msg.rounds:
            self.rounds[rnd.round] = _copy(rnd)
        while len(self.rounds) > self.max_rounds:
            del self.rounds[min(self.rounds)]
        self.loss_history.extend((p.tokens, p.loss) for p in msg.loss_history)
        self.val_loss_history.extend((p.tokens, p.loss) for p in msg.val_loss_history)
        self.throughput_history.extend(
            (p.unix, p.tokens_per_second) for p in msg.throughput_history
        )
        last_id = self.events[-1].id if self.events else -1
        for ev in msg.events:
            if ev.id > last_id or ev.id == 0:  # a repeated event after a hiccup is shown once
                self.events.append(_copy(ev))
                last_id = max(last_id, ev.id)
        if msg.server_unix:
            self.server_unix = msg.server_unix
            self.clock_offset = msg.server_unix - local_now
        self.version += 1

    # -- reading it back -----------------------------------------------------------------------

    def server_now(self, local_now: float) -> float:
        """The coordinator's clock now, estimated from the last message's timestamp."""
        return local_now + self.clock_offset

    def rounds_sorted(self) -> list[pb.RoundStatus]:
        return [self.rounds[r] for r in sorted(self.rounds)]

    def node_rows(
        self, *, sort_key: SortKey = "tokens", reverse: bool | None = None, query: str = ""
    ) -> list[pb.NodeStatus]:
        """The nodes matching `query`, ordered for the table (ties broken by node id)."""
        nodes = [n for n in self.nodes.values() if matches(n, query)]
        return sort_nodes(nodes, sort_key, reverse=reverse)

    def leaderboard(self, limit: int = 10) -> list[pb.NodeStatus]:
        """Nodes by tokens trained, the credit volunteers see (the coordinator's own counts)."""
        return sort_nodes(list(self.nodes.values()), "tokens")[:limit]


def _copy(msg):
    out = type(msg)()
    out.CopyFrom(msg)
    return out


def default_descending(key: SortKey) -> bool:
    return key in _DESCENDING_BY_DEFAULT


def sort_nodes(
    nodes: list[pb.NodeStatus], key: SortKey, *, reverse: bool | None = None
) -> list[pb.NodeStatus]:
    if reverse is None:
        reverse = default_descending(key)
    getters = {
        "id": lambda n: n.node_id,
        "name": lambda n: n.display_name.lower(),
        "state": lambda n: n.state,
        "tps": lambda n: n.tokens_per_second,
        "tokens": lambda n: n.tokens_trained,
        "loss": lambda n: n.last_loss,
        "seen": lambda n: -n.last_seen_unix,  # ascending "seen" = most recently seen first
        "device": lambda n: n.device.lower(),
    }
    get = getters[key]
    by_id = sorted(nodes, key=lambda n: n.node_id)
    return sorted(by_id, key=get, reverse=reverse)


def next_sort_key(key: SortKey) -> SortKey:
    return SORT_KEYS[(SORT_KEYS.index(key) + 1) % len(SORT_KEYS)]


def matches(node: pb.NodeStatus, query: str) -> bool:
    """Case-insensitive substring match over what a person would type: id, name, device, state."""
    q = query.strip().lower()
    if not q:
        return True
    hay = " ".join((node.node_id, node.display_name, node.device, node.state)).lower()
    return all(word in hay for word in q.split())


# -- formatting ----------------------------------------------------------------------------------


def short_id(node_id: str, width: int = 8) -> str:
    return node_id[:width]


def format_count(n: float) -> str:
    """1234 -> '1.23k', 5_600_000 -> '5.60M': token counts stay readable at a glance."""
    n = float(n)
    for div, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            return f"{n / div:.2f}{suffix}"
    return f"{n:.0f}"


def format_ago(seconds: float) -> str:
    if seconds < 0:
        seconds = 0
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m ago"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h ago"
    return f"{seconds // 86400:.0f}d ago"


def checkpoint_text(run: pb.RunStatus | None, server_now: float) -> str:
    """The header's 'is the model safe' line: the newest checkpoint's round and age."""
    if run is None:
        return ""
    if not run.HasField("checkpoint"):
        return "no checkpoint yet"
    c = run.checkpoint
    return f"checkpoint round {c.round}, {format_ago(server_now - c.written_at)}"


def format_duration(seconds: float) -> str:
    """ETA text; a negative value is the coordinator's 'unknown'."""
    if seconds < 0:
        return "unknown"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {(s % 3600) // 60:02d}m"
    return f"{s // 86400}d {(s % 86400) // 3600:02d}h"


def format_loss(loss: float) -> str:
    return f"{loss:.3f}" if loss > 0 else "-"
