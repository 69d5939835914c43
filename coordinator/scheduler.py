"""The shard scheduler: which node trains which shard, as pure logic with an injected clock.

The coordinator schedules data, not compute. Every training shard is leased to one node at a
time with a deadline; a heartbeat from the node pushes the deadline of all its leases forward;
a lease whose deadline passed returns its shard to the front of the queue (it is retried next).
A completion counts only when it comes from the node that holds the shard's lease right now, so
duplicate, late (after expiry) and foreign completions are answered but counted zero times and
never credited to the wrong node. When every training shard of epoch e is done, epoch e+1 starts
with all shards pending again, in a new order drawn from the seed.

No I/O, no clock of its own: callers pass `now`. The store persists `ShardState` rows this module
hands out (`dirty`), and `ShardScheduler.restore` rebuilds it after a restart.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass, field


class ShardStatus(enum.StrEnum):
    PENDING = "pending"
    LEASED = "leased"
    DONE = "done"


@dataclass(frozen=True, kw_only=True)
class ShardRef:
    """What the scheduler needs of a manifest shard."""

    shard_id: str
    tokens: int
    size_bytes: int
    sha256: str


@dataclass(kw_only=True)
class ShardState:
    """One training shard in the current epoch. `node_id` is the holder (leased) or finisher."""

    shard_id: str
    epoch: int
    status: ShardStatus = ShardStatus.PENDING
    node_id: str = ""
    deadline: float = 0.0
    queue_pos: int = 0  # order among pending shards (lower first)


@dataclass(frozen=True, kw_only=True)
class LeaseInfo:
    shard: ShardRef
    epoch: int
    node_id: str
    deadline: float


class CompletionOutcome(enum.StrEnum):
    COUNTED = "counted"
    DUPLICATE = "duplicate"  # the same node completed it already this epoch
    NOT_HOLDER = "not_holder"  # another node holds or finished it, or it is pending (late)


@dataclass(frozen=True, kw_only=True)
class Completion:
    outcome: CompletionOutcome
    epoch: int  # the epoch the completion was judged in
    message: str
    new_epoch: bool = False  # this completion finished the epoch and started the next

    @property
    def counted(self) -> bool:
        return self.outcome is CompletionOutcome.COUNTED


@dataclass(kw_only=True)
class ShardScheduler:
    """Leases, deadlines, completions and epochs over a fixed list of training shards.

    :param shards: the run's training shards (manifest order)
    :param lease_seconds: a lease lives this long after it was granted or last extended
    :param seed: the per-epoch shard order is `random.Random(seed * 1_000_003 + epoch)`
    :param max_leases_per_node: a node may prefetch up to this many shards

    Example::

        s = ShardScheduler.fresh(shards, lease_seconds=60, seed=0)
        lease = s.lease("node-a", now=0.0)
        s.complete("node-a", lease.shard.shard_id, now=5.0).counted  # True
    """

    shards: dict[str, ShardRef]
    lease_seconds: float
    seed: int = 0
    max_leases_per_node: int = 4
    epoch: int = 0
    states: dict[str, ShardState] = field(default_factory=dict)
    _queue: deque[str] = field(default_factory=deque)
    _by_node: dict[str, set[str]] = field(default_factory=dict)
    dirty: set[str] = field(default_factory=set)  # shard ids changed since the store last saved

    @classmethod
    def fresh(cls, shards: list[ShardRef], **kw: object) -> ShardScheduler:
        if not shards:
            raise ValueError("a run needs at least one training shard")
        s = cls(shards={r.shard_id: r for r in shards}, **kw)  # type: ignore[arg-type]
        s._start_epoch(0)
        return s

    @classmethod
    def restore(
        cls, shards: list[ShardRef], states: list[ShardState], *, epoch: int, **kw: object
    ) -> ShardScheduler:
        """Rebuild from saved rows; shards missing from `states` start pending in `epoch`."""
        s = cls(shards={r.shard_id: r for r in shards}, epoch=epoch, **kw)  # type: ignore[arg-type]
        saved = {st.shard_id: st for st in states if st.shard_id in s.shards}
        base = min((st.queue_pos for st in saved.values()), default=0)
        for i, sid in enumerate(s.shards):
            st = saved.get(sid)
            if st is None or st.epoch != epoch:
                st = ShardState(shard_id=sid, epoch=epoch, queue_pos=base + len(s.shards) + i)
                s.dirty.add(sid)
            s.states[sid] = st
            if st.status is ShardStatus.LEASED:
                s._by_node.setdefault(st.node_id, set()).add(sid)
        pending = [st for st in s.states.values() if st.status is ShardStatus.PENDING]
        s._queue = deque(st.shard_id for st in sorted(pending, key=lambda st: st.queue_pos))
        return s

    # -- queries ---------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Shards of the current epoch by status (O(nodes holding leases), not O(shards))."""
        total, pending = len(self.states), len(self._queue)
        leased = sum(len(sids) for sids in self._by_node.values())
        return {
            "total": total,
            "pending": pending,
            "leased": leased,
            "done": total - pending - leased,
        }

    def leases_of(self, node_id: str) -> list[LeaseInfo]:
        return [self._lease_info(sid) for sid in sorted(self._by_node.get(node_id, ()))]

    def holder(self, shard_id: str) -> str | None:
        st = self.states.get(shard_id)
        return st.node_id if st is not None and st.status is ShardStatus.LEASED else None

    def epoch_tokens(self) -> int:
        return sum(r.tokens for r in self.shards.values())

    def done_tokens(self) -> int:
        return sum(
            self.shards[sid].tokens
            for sid, st in self.states.items()
            if st.status is ShardStatus.DONE
        )

    # -- mutations -------------------------------------------------------------------------

    def lease(self, node_id: str, now: float) -> LeaseInfo | None:
        """The next pending shard for `node_id`, or None (queue empty or node at its cap)."""
        if len(self._by_node.get(node_id, ())) >= self.max_leases_per_node or not self._queue:
            return None
        sid = self._queue.popleft()
        st = self.states[sid]
        st.status, st.node_id, st.deadline = ShardStatus.LEASED, node_id, now + self.lease_seconds
        self._by_node.setdefault(node_id, set()).add(sid)
        self.dirty.add(sid)
        return self._lease_info(sid)

    def extend(self, node_id: str, now: float) -> list[LeaseInfo]:
        """Heartbeat: every lease of `node_id` now ends `lease_seconds` from `now`."""
        for sid in self._by_node.get(node_id, ()):
            st = self.states[sid]
            deadline = now + self.lease_seconds
            if deadline > st.deadline:
                st.deadline = deadline
                self.dirty.add(sid)
        return self.leases_of(node_id)

    def extend_all(self, now: float) -> None:
        """After a coordinator restart nobody could heartbeat: give every lease a fresh term."""
        for sids in self._by_node.values():
            for sid in sids:
                self.states[sid].deadline = max(self.states[sid].deadline, now + self.lease_seconds)
                self.dirty.add(sid)

    def expire(self, now: float) -> list[LeaseInfo]:
        """Return every lease whose deadline passed to the front of the queue."""
        expired = [
            sid
            for sids in self._by_node.values()
            for sid in sids
            if self.states[sid].deadline <= now
        ]
        return [self._release(sid) for sid in sorted(expired)]

    def release_node(self, node_id: str) -> list[LeaseInfo]:
        """The node left, was lost or banned: its shards go back to the front of the queue."""
        return [self._release(sid) for sid in sorted(self._by_node.get(node_id, ()))]

    def complete(self, node_id: str, shard_id: str, now: float) -> Completion:
        """Count `shard_id` done once, and only for the node holding its lease.

        Raises KeyError for a shard that is not a training shard of this run.
        """
        st = self.states[shard_id]
        epoch = self.epoch
        if st.status is ShardStatus.LEASED and st.node_id == node_id:
            self._by_node[node_id].discard(shard_id)
            if not self._by_node[node_id]:
                del self._by_node[node_id]
            st.status, st.deadline = ShardStatus.DONE, 0.0
            self.dirty.add(shard_id)
            new_epoch = all(s.status is ShardStatus.DONE for s in self.states.values())
            if new_epoch:
                self._start_epoch(self.epoch + 1)
            return Completion(
                outcome=CompletionOutcome.COUNTED,
                epoch=epoch,
                message=f"shard {shard_id} of epoch {epoch} counted",
                new_epoch=new_epoch,
            )
        if st.status is ShardStatus.DONE and st.node_id == node_id:
            return Completion(
                outcome=CompletionOutcome.DUPLICATE,
                epoch=epoch,
                message=f"shard {shard_id} was already counted for you in epoch {epoch}",
            )
        if st.status is ShardStatus.LEASED:
            why = "it is leased to another node (your lease expired)"
        elif st.status is ShardStatus.DONE:
            why = "another node completed it"
        else:
            why = "your lease expired and it went back to the queue"
        return Completion(
            outcome=CompletionOutcome.NOT_HOLDER,
            epoch=epoch,
            message=f"shard {shard_id} not counted: {why}; lease a new shard",
        )

    # -- internals -------------------------------------------------------------------------

    def _lease_info(self, sid: str) -> LeaseInfo:
        st = self.states[sid]
        return LeaseInfo(
            shard=self.shards[sid], epoch=st.epoch, node_id=st.node_id, deadline=st.deadline
        )

    def _release(self, sid: str) -> LeaseInfo:
        info = self._lease_info(sid)
        st = self.states[sid]
        holders = self._by_node.get(st.node_id)
        if holders is not None:
            holders.discard(sid)
            if not holders:
                del self._by_node[st.node_id]
        front = min((self.states[q].queue_pos for q in self._queue), default=st.queue_pos + 1)
        st.status, st.node_id, st.deadline, st.queue_pos = ShardStatus.PENDING, "", 0.0, front - 1
        self._queue.appendleft(sid)
        self.dirty.add(sid)
        return info

    def _start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        order = sorted(self.shards)
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        self.states = {
            sid: ShardState(shard_id=sid, epoch=epoch, queue_pos=i) for i, sid in enumerate(order)
        }
        self._queue = deque(order)
        self._by_node = {}
        self.dirty |= set(order)
