"""The shard scheduler as pure logic: unit tests and hypothesis-driven random interleavings."""

from __future__ import annotations

import pytest
from gpt5os.coordinator.scheduler import (
    CompletionOutcome,
    ShardRef,
    ShardScheduler,
    ShardState,
    ShardStatus,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

LEASE = 10.0


def refs(n: int) -> list[ShardRef]:
    return [
        ShardRef(shard_id=f"s{i:03d}", tokens=100 + i, size_bytes=2 * (100 + i), sha256="0" * 64)
        for i in range(n)
    ]


def sched(n: int = 4, **kw) -> ShardScheduler:
    return ShardScheduler.fresh(refs(n), lease_seconds=LEASE, **kw)


def test_lease_heartbeat_expiry_and_requeue_first() -> None:
    s = sched(3)
    a = s.lease("a", now=0.0)
    assert a is not None and a.deadline == LEASE and s.holder(a.shard.shard_id) == "a"
    s.extend("a", now=8.0)
    assert s.expire(now=10.0) == []  # the heartbeat moved the deadline to 18
    expired = s.expire(now=18.0)
    assert [e.shard.shard_id for e in expired] == [a.shard.shard_id]
    assert s.holder(a.shard.shard_id) is None
    b = s.lease("b", now=19.0)  # the expired shard is retried before untouched ones
    assert b.shard.shard_id == a.shard.shard_id


def test_completion_counted_once_and_only_for_the_holder() -> None:
    s = sched(2)
    lease = s.lease("a", now=0.0)
    sid = lease.shard.shard_id
    assert s.complete("b", sid, now=1.0).outcome is CompletionOutcome.NOT_HOLDER
    assert s.complete("a", sid, now=1.0).counted
    assert s.complete("a", sid, now=2.0).outcome is CompletionOutcome.DUPLICATE
    assert s.complete("b", sid, now=2.0).outcome is CompletionOutcome.NOT_HOLDER
    assert s.states[sid].node_id == "a"


def test_late_completion_after_expiry_is_not_counted() -> None:
    s = sched(2)
    lease = s.lease("a", now=0.0)
    s.expire(now=LEASE + 1)
    result = s.complete("a", lease.shard.shard_id, now=LEASE + 2)
    assert not result.counted and "expired" in result.message
    assert s.counts()["done"] == 0


def test_epoch_rolls_over_with_every_shard_pending_in_new_order() -> None:
    s = sched(5, seed=3)
    first_order = []
    for _ in range(5):
        lease = s.lease("a", now=0.0)
        first_order.append(lease.shard.shard_id)
        result = s.complete("a", lease.shard.shard_id, now=0.0)
    assert result.new_epoch and s.epoch == 1
    assert s.counts() == {"total": 5, "pending": 5, "leased": 0, "done": 0}
    second = [s.lease(f"n{i}", now=1.0).shard.shard_id for i in range(5)]
    assert sorted(second) == sorted(first_order)


def test_cap_on_leases_per_node() -> None:
    s = sched(5, max_leases_per_node=2)
    assert s.lease("a", 0.0) and s.lease("a", 0.0)
    assert s.lease("a", 0.0) is None
    assert s.lease("b", 0.0) is not None


def test_restore_round_trips_states_and_queue_order() -> None:
    s = sched(6, seed=1)
    held = s.lease("a", now=0.0)
    done = s.lease("b", now=0.0)
    s.complete("b", done.shard.shard_id, now=1.0)
    expired = s.lease("c", now=0.0)
    s.extend("a", now=5.0)
    s.expire(now=LEASE + 0.5)  # c's lease expires, a's does not
    r = ShardScheduler.restore(
        refs(6), list(s.states.values()), epoch=s.epoch, lease_seconds=LEASE, seed=1
    )
    assert r.counts() == s.counts()
    assert r.holder(held.shard.shard_id) == "a"
    assert r.states[done.shard.shard_id].status is ShardStatus.DONE
    assert r.states[expired.shard.shard_id].status is ShardStatus.PENDING
    assert r.holder(expired.shard.shard_id) is None
    order = [r.lease("x", 20.0).shard.shard_id for _ in range(3)]
    assert order == [s.lease("x", 20.0).shard.shard_id for _ in range(3)]
    assert order[0] == expired.shard.shard_id  # the expired shard is retried first


def test_restore_puts_shards_missing_from_the_rows_after_the_saved_queue() -> None:
    s = sched(6, seed=3)
    s.lease("a", now=0.0)
    saved = [row for row in s.states.values() if row.shard_id != "s005"][:4]  # rows for 4 shards
    r = ShardScheduler.restore(refs(6), saved, epoch=0, lease_seconds=LEASE, seed=3)
    pending_saved = [
        row.shard_id
        for row in sorted(saved, key=lambda row: row.queue_pos)
        if row.status == "pending"
    ]
    missing = [
        ref.shard_id for ref in refs(6) if ref.shard_id not in {row.shard_id for row in saved}
    ]
    order = [r.lease(f"n{i}", 1.0).shard.shard_id for i in range(len(pending_saved + missing))]
    assert order == pending_saved + missing  # saved queue first, then manifest order


def test_restore_at_a_large_epoch_keeps_the_saved_rows() -> None:
    s = sched(3, seed=1)
    s.epoch = 1000
    for row in s.states.values():
        row.epoch = 1000
    held = s.lease("a", now=0.0)
    r = ShardScheduler.restore(
        refs(3), [ShardState(**vars(row)) for row in s.states.values()], epoch=int("1000"),
        lease_seconds=LEASE, seed=1,
    )  # fmt: skip
    assert r.holder(held.shard.shard_id) == "a" and not r.dirty


def test_extend_all_gives_every_lease_a_fresh_term() -> None:
    s = sched(3)
    a = s.lease("a", now=0.0)
    b = s.lease("b", now=0.0)
    s.extend_all(now=100.0)
    assert {s.states[x.shard.shard_id].deadline for x in (a, b)} == {100.0 + LEASE}
    assert s.expire(now=100.0 + LEASE - 1) == []


def test_extend_never_shortens_a_lease() -> None:
    s = sched(2)
    a = s.lease("a", now=5.0)
    s.extend("a", now=3.0)  # a heartbeat stamped earlier (clock skew) arrives late
    assert s.states[a.shard.shard_id].deadline == 5.0 + LEASE


def test_restored_leases_beyond_the_cap_still_block_new_ones() -> None:
    s = sched(4, max_leases_per_node=3)
    for _ in range(3):
        s.lease("a", now=0.0)
    r = ShardScheduler.restore(
        refs(4), list(s.states.values()), epoch=0, lease_seconds=LEASE, max_leases_per_node=2
    )
    assert r.lease("a", now=1.0) is None and r.lease("b", now=1.0) is not None


def test_not_counted_messages_say_why() -> None:
    s = sched(2)
    x = s.lease("a", now=0.0).shard.shard_id
    s.expire(now=LEASE + 1)
    assert "went back to the queue" in s.complete("a", x, now=LEASE + 2).message
    assert s.lease("b", now=LEASE + 2).shard.shard_id == x
    assert "leased to another node" in s.complete("a", x, now=LEASE + 3).message
    s.complete("b", x, now=LEASE + 3)
    assert "another node completed it" in s.complete("a", x, now=LEASE + 4).message


def test_epoch_order_is_the_documented_seeded_shuffle() -> None:
    import random

    s = sched(8, seed=5)
    order = sorted(r.shard_id for r in refs(8))
    random.Random(5 * 1_000_003 + 0).shuffle(order)
    assert [s.lease("a", 0.0).shard.shard_id for _ in range(4)] == order[:4]
    for sid in list(s.states):  # finish epoch 0: epoch 1's order uses seed * 1_000_003 + 1
        if s.holder(sid) is None:
            s.lease("a", 0.0)
        s.complete("a", sid, 1.0)
    assert s.epoch == 1
    order = sorted(r.shard_id for r in refs(8))
    random.Random(5 * 1_000_003 + 1).shuffle(order)
    assert [s.lease("b", 2.0).shard.shard_id for _ in range(4)] == order[:4]


def test_unknown_shard_raises_key_error() -> None:
    with pytest.raises(KeyError):
        sched(1).complete("a", "nope", now=0.0)


def test_empty_run_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ShardScheduler.fresh([], lease_seconds=LEASE)


NODES = ("a", "b", "c")


class SchedulerMachine(RuleBasedStateMachine):
    """Random interleavings of lease, heartbeat, clock advance, completion and node loss.

    A model tracks who was granted each shard; the checks: no shard is ever lost (every shard
    is pending, leased or done, exactly once), no completion is counted twice or credited to a
    node that does not hold the lease, and epochs keep completing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.n = 0
        self.s: ShardScheduler | None = None
        self.now = 0.0
        self.holder: dict[str, str] = {}  # model: shard -> node granted it and not released
        self.counted: set[tuple[int, str]] = set()
        self.credit: dict[tuple[int, str], str] = {}

    @precondition(lambda self: self.s is None)
    @rule(n=st.integers(1, 7), cap=st.integers(1, 3), seed=st.integers(0, 5))
    def start(self, n: int, cap: int, seed: int) -> None:
        self.n = n
        self.s = ShardScheduler.fresh(
            refs(n), lease_seconds=LEASE, seed=seed, max_leases_per_node=cap
        )

    @precondition(lambda self: self.s is not None)
    @rule(node=st.sampled_from(NODES))
    def lease(self, node: str) -> None:
        lease = self.s.lease(node, self.now)
        if lease is not None:
            sid = lease.shard.shard_id
            assert sid not in self.holder, "a shard was leased to two nodes at once"
            assert lease.deadline == self.now + LEASE
            self.holder[sid] = node

    @precondition(lambda self: self.s is not None)
    @rule(node=st.sampled_from(NODES))
    def heartbeat(self, node: str) -> None:
        leases = self.s.extend(node, self.now)
        assert {x.shard.shard_id for x in leases} == {
            k for k, v in self.holder.items() if v == node
        }
        assert all(x.deadline >= self.now + LEASE for x in leases)

    @precondition(lambda self: self.s is not None)
    @rule(dt=st.floats(0.0, 2 * LEASE))
    def advance_and_expire(self, dt: float) -> None:
        self.now += dt
        for x in self.s.expire(self.now):
            assert self.holder.pop(x.shard.shard_id) == x.node_id
            assert x.deadline <= self.now

    @precondition(lambda self: self.s is not None)
    @rule(node=st.sampled_from(NODES), data=st.data())
    def complete(self, node: str, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.s.shards)))
        epoch = self.s.epoch
        result = self.s.complete(node, sid, self.now)
        if result.counted:
            assert self.holder.get(sid) == node, "credited a node that did not hold the lease"
            assert (epoch, sid) not in self.counted, "counted twice"
            self.counted.add((epoch, sid))
            self.credit[(epoch, sid)] = node
            del self.holder[sid]
            if result.new_epoch:
                assert all((epoch, s) in self.counted for s in self.s.shards), "epoch ended early"
                assert self.holder == {}
        else:
            assert self.holder.get(sid) != node

    @precondition(lambda self: self.s is not None)
    @rule(node=st.sampled_from(NODES))
    def lose_node(self, node: str) -> None:
        released = {x.shard.shard_id for x in self.s.release_node(node)}
        assert released == {k for k, v in self.holder.items() if v == node}
        for sid in released:
            del self.holder[sid]

    @invariant()
    def every_shard_in_exactly_one_place(self) -> None:
        if self.s is None:
            return
        c = self.s.counts()
        assert c["total"] == self.n == c["pending"] + c["leased"] + c["done"]
        by_status = {status: 0 for status in ("pending", "leased", "done")}
        for state in self.s.states.values():
            by_status[state.status.value] += 1
        assert by_status == {k: c[k] for k in by_status}
        leased = {
            sid: st.node_id for sid, st in self.s.states.items() if st.status is ShardStatus.LEASED
        }
        assert leased == self.holder
        assert len(self.s._queue) == c["pending"] == len(set(self.s._queue))
        done = {sid for sid, st in self.s.states.items() if st.status is ShardStatus.DONE}
        assert done == {sid for (e, sid) in self.counted if e == self.s.epoch}

    def teardown(self) -> None:
        """Whatever happened, one node can still finish the current epoch: none was lost."""
        if self.s is None:
            return
        for node in NODES:
            self.s.release_node(node)
        epoch = self.s.epoch
        for _ in range(self.n):
            lease = self.s.lease("finisher", self.now)
            assert lease is not None
            result = self.s.complete("finisher", lease.shard.shard_id, self.now)
            assert result.counted
        assert self.s.epoch == epoch + 1


SchedulerMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_scheduler_random_interleavings = SchedulerMachine.TestCase
