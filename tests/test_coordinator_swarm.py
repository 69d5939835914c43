"""The Swarm's rules as pure logic over a real SQLite store and an explicit clock, in milliseconds.

What the gRPC tests check end to end, here one rule at a time, and with the database reopened
where a rule promises to survive a restart. These tests are also the test command of
`make mutation` (bench/mutation.toml), so each assertion names the rule it guards.
"""

from __future__ import annotations

import os
from pathlib import Path

import grpc
import pytest
from gpt5os.coordinator.records import ApiError
from gpt5os.coordinator.runs import load_run, update_spec
from gpt5os.coordinator.store import DB_NAME, Store
from gpt5os.coordinator.swarm import (
    INITIAL_PEERS_MAX,
    ROUND_SETTLE_S,
    Swarm,
    node_id_of,
    open_swarm,
)
from gpt5os.coordinator.testkit import make_run

T0 = 1_000_000.0
HB = 2.0  # heartbeat_seconds: lost after 3 silent intervals (6 s)
LEASE = 5.0
INFO = {"software_version": "0.1.0", "device": "cpu", "hostname": "h", "display_name": "n"}
STATS = {
    "tokens_per_second": 10.0,
    "tokens_trained": 0,
    "last_loss": None,
    "outer_round": 0,
    "dht_maddrs": [],
}


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    make_run(
        tmp_path / "run",
        n_train=3,
        n_val=1,
        shard_tokens=64,
        heartbeat_seconds=HB,
        lease_seconds=LEASE,
        max_leases_per_node=2,
    )
    return tmp_path / "run"


@pytest.fixture
def sw(run_dir: Path):
    swarm = open_swarm(run_dir, load_run(run_dir), now=T0)
    yield swarm
    swarm.store.close()


def reopen(sw: Swarm, run_dir: Path, now: float) -> Swarm:
    sw.flush(now)
    sw.store.close()
    return open_swarm(run_dir, load_run(run_dir), now=now)


def join(sw: Swarm, now: float = T0, **info: str):
    key = os.urandom(32)
    node, token = sw.join(key, {**INFO, **info}, now)
    return node, token, key


def stats(**kw) -> dict:
    return {**STATS, **kw}


def kinds(sw: Swarm, node_id: str | None = None) -> list[str]:
    return [e[2] for e in sw.events if node_id is None or e[3] == node_id]


def code(excinfo: pytest.ExceptionInfo[ApiError]) -> grpc.StatusCode:
    return excinfo.value.code


# -- join and auth ----------------------------------------------------------------------------


def test_join_makes_an_active_node_with_a_token_that_authenticates(sw: Swarm) -> None:
    node, token, key = join(sw)
    assert node.node_id == node_id_of(key) and len(node.node_id) == 20
    assert node.state == "active" and node.last_seen_unix == T0 and node.joined_unix == T0
    assert sw.authenticate(node.node_id, token) is node
    assert kinds(sw) == ["joined"]
    with pytest.raises(ApiError) as e:
        sw.authenticate(node.node_id, token + "x")
    assert code(e) is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(ApiError) as e:
        sw.authenticate("f" * 20, token)
    assert code(e) is grpc.StatusCode.UNAUTHENTICATED and "Join first" in e.value.message


def test_rejoin_replaces_the_token_and_keeps_credit(sw: Swarm, run_dir: Path) -> None:
    node, first, key = join(sw)
    sw.heartbeat(node, stats(tokens_trained=10**12), T0 + 1)  # a claim: never credit
    assert node.tokens_trained == 0
    lease = sw.lease(node, T0 + 1)[0]
    assert sw.complete(node, lease.shard.shard_id, 10**12, 1.0, T0 + 1).counted
    assert node.tokens_trained == lease.shard.tokens  # the leased shard's tokens, not the claim
    again, second = sw.join(key, INFO, T0 + 2)
    assert again is node and second != first
    assert node.session_tokens == 0 and node.tokens_trained == lease.shard.tokens
    assert kinds(sw)[:2] == ["joined", "shard_completed"] and kinds(sw)[-1] == "rejoined"
    with pytest.raises(ApiError):
        sw.authenticate(node.node_id, first)
    sw = reopen(sw, run_dir, T0 + 4)
    assert sw.nodes[node.node_id].tokens_trained == lease.shard.tokens
    assert sw.authenticate(node.node_id, second).node_id == node.node_id
    sw.store.close()


@pytest.mark.parametrize("version", ["0.0.9", "", "not-a-version"])
def test_too_old_or_unparsable_software_is_refused(sw: Swarm, version: str) -> None:
    with pytest.raises(ApiError) as e:
        sw.join(os.urandom(32), {**INFO, "software_version": version}, T0)
    assert code(e) is grpc.StatusCode.FAILED_PRECONDITION and "pip install -U" in e.value.message
    assert sw.nodes == {} and sw.store.nodes() == []


def test_exactly_the_minimum_version_is_admitted(sw: Swarm) -> None:
    node, _, _ = join(sw, software_version=sw.spec.min_node_version)
    assert node.state == "active"


# -- leases -----------------------------------------------------------------------------------


def test_lease_until_the_cap_then_until_drained(sw: Swarm) -> None:
    a, _, _ = join(sw)
    b, _, _ = join(sw)
    v0 = sw.version
    first, reason, retry = sw.lease(a, T0)
    assert first is not None and reason == "" and retry == 0.0 and sw.version > v0
    assert first.deadline == T0 + LEASE
    assert sw.lease(a, T0)[0] is not None
    capped, reason, retry = sw.lease(a, T0)
    assert capped is None and "2 leases" in reason and retry == HB
    assert sw.lease(b, T0)[0] is not None
    drained, reason, retry = sw.lease(b, T0)
    assert drained is None and "drained" in reason and retry == HB
    held = {s.shard_id for s in sw.store.shard_states() if s.status == "leased"}
    assert len(held) == 3  # every grant was committed


def test_paused_run_grants_nothing(sw: Swarm, run_dir: Path) -> None:
    a, _, _ = join(sw)
    store = Store(run_dir / DB_NAME)
    with store.tx():
        store.set_meta("paused", 1)
    store.close()
    sw.poll_control(T0 + 1)
    assert sw.paused and kinds(sw)[-1] == "paused"
    lease, reason, retry = sw.lease(a, T0 + 1)
    assert lease is None and "paused" in reason and retry == HB
    sw.store.set_meta("paused", 0)
    sw.poll_control(T0 + 2)
    assert not sw.paused and kinds(sw)[-1] == "resumed"
    assert sw.lease(a, T0 + 2)[0] is not None


def test_heartbeat_extends_leases(sw: Swarm) -> None:
    a, _, _ = join(sw)
    lease = sw.lease(a, T0)[0]
    leases = sw.heartbeat(a, stats(), T0 + 4)
    assert [x.shard.shard_id for x in leases] == [lease.shard.shard_id]
    assert leases[0].deadline == T0 + 4 + LEASE
    sw.tick(T0 + LEASE + 1)  # past the first term, inside the extended one
    assert sw.sched.holder(lease.shard.shard_id) == a.node_id


def test_expired_lease_returns_while_the_node_stays_active(sw: Swarm, run_dir: Path) -> None:
    a, _, _ = join(sw)
    lease = sw.lease(a, T0)[0]
    sw.tick(T0 + LEASE - 0.1)
    assert sw.sched.holder(lease.shard.shard_id) == a.node_id
    v0 = sw.version
    sw.tick(T0 + LEASE + 0.5)  # < 3 heartbeats: not lost
    assert sw.sched.holder(lease.shard.shard_id) is None and a.state == "active"
    assert kinds(sw, a.node_id)[-1] == "lease_expired" and "lost" not in kinds(sw)
    assert sw.version > v0
    sw = reopen(sw, run_dir, T0 + 6)  # the release was written
    assert sw.sched.holder(lease.shard.shard_id) is None
    assert sw.sched.counts()["pending"] == 3
    sw.store.close()


def test_silent_node_is_lost_and_releases_its_leases(sw: Swarm, run_dir: Path) -> None:
    sw.sched.lease_seconds = 60.0  # so that only the lost-node rule can free the shard
    a, token, _ = join(sw)
    b, _, _ = join(sw)
    lease = sw.lease(a, T0)[0]
    sw.heartbeat(a, stats(), T0 + 1)
    sw.tick(T0 + 1 + 3 * HB)  # exactly 3 intervals: not yet
    assert a.state == "active"
    sw.heartbeat(b, stats(), T0 + 9.1)
    sw.tick(T0 + 9.1)
    assert a.state == "lost" and b.state == "active"
    assert sw.sched.holder(lease.shard.shard_id) is None
    assert kinds(sw, a.node_id)[-2:] == ["lost", "lease_expired"]
    assert a.token_hash != ""  # a lost node may come back with its token
    assert sw.authenticate(a.node_id, token) is a
    sw.heartbeat(a, stats(), T0 + 10)
    assert a.state == "active" and kinds(sw, a.node_id)[-1] == "rejoined"
    sw = reopen(sw, run_dir, T0 + 11)
    assert sw.sched.holder(lease.shard.shard_id) is None
    sw.store.close()


def test_lost_check_runs_at_most_every_two_seconds(sw: Swarm) -> None:
    a, _, _ = join(sw)
    sw.tick(T0 + 5)
    sw.tick(T0 + 6.5)  # silent 6.5 s, but the last check was 1.5 s ago
    assert a.state == "active"
    sw.tick(T0 + 7)
    assert a.state == "lost"


def test_leave_releases_leases_and_ends_the_token(sw: Swarm, run_dir: Path) -> None:
    a, token, _ = join(sw)
    held = {sw.lease(a, T0)[0].shard.shard_id, sw.lease(a, T0)[0].shard.shard_id}
    a.tokens_per_second = 5.0
    sw.leave(a, "", T0 + 1)
    assert a.state == "left" and a.tokens_per_second == 0.0
    assert sw.sched.counts()["leased"] == 0
    assert kinds(sw, a.node_id)[-3:] == ["left", "lease_released", "lease_released"]
    assert sw.events[-3][4] == "left cleanly"
    with pytest.raises(ApiError) as e:
        sw.authenticate(a.node_id, token)
    assert code(e) is grpc.StatusCode.UNAUTHENTICATED
    sw = reopen(sw, run_dir, T0 + 2)
    assert sw.nodes[a.node_id].state == "left" and sw.sched.counts()["leased"] == 0
    b, _, _ = join(sw, now=T0 + 2)
    regranted = {sw.lease(b, T0 + 2)[0].shard.shard_id, sw.lease(b, T0 + 2)[0].shard.shard_id}
    assert regranted == held  # released shards go to the front of the queue
    sw.store.close()


def test_ban_releases_leases_refuses_the_node_and_its_rejoin(sw: Swarm, run_dir: Path) -> None:
    a, token, key = join(sw)
    sw.lease(a, T0)
    sw.store.add_ban(a.node_id, T0, "spam")
    sw.poll_control(T0 + 1)
    assert a.state == "banned" and sw.sched.counts()["leased"] == 0
    assert kinds(sw, a.node_id)[-2:] == ["banned", "lease_released"]
    with pytest.raises(ApiError) as e:
        sw.authenticate(a.node_id, token)
    assert code(e) is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(ApiError) as e:
        sw.join(key, INFO, T0 + 2)
    assert code(e) is grpc.StatusCode.PERMISSION_DENIED
    n_events = len(sw.events)
    sw.poll_control(T0 + 3)  # a ban is applied once
    assert len(sw.events) == n_events
    sw = reopen(sw, run_dir, T0 + 4)
    assert sw.nodes[a.node_id].state == "banned"
    with pytest.raises(ApiError):
        sw.join(key, INFO, T0 + 5)
    sw.store.close()


def test_ban_of_an_unknown_node_still_refuses_its_join(sw: Swarm) -> None:
    key = os.urandom(32)
    sw.apply_ban(node_id_of(key), "", T0)
    with pytest.raises(ApiError) as e:
        sw.join(key, INFO, T0)
    assert code(e) is grpc.StatusCode.PERMISSION_DENIED


# -- fetch and completion ---------------------------------------------------------------------


def test_fetch_needs_the_lease_for_train_shards_only(sw: Swarm) -> None:
    a, _, _ = join(sw)
    b, _, _ = join(sw)
    lease = sw.lease(a, T0)[0]
    assert sw.shard_for_fetch(a, lease.shard.shard_id)["sha256"] == lease.shard.sha256
    with pytest.raises(ApiError) as e:
        sw.shard_for_fetch(b, lease.shard.shard_id)
    assert code(e) is grpc.StatusCode.FAILED_PRECONDITION
    val = [v.shard_id for v in sw.validation_shards()]
    assert val == ["val-00003"] and sw.shard_for_fetch(b, val[0])["split"] == "val"
    with pytest.raises(ApiError) as e:
        sw.shard_for_fetch(a, "nope")
    assert code(e) is grpc.StatusCode.NOT_FOUND


def test_completion_counts_once_for_the_holder_and_is_durable(sw: Swarm, run_dir: Path) -> None:
    a, _, _ = join(sw)
    b, _, _ = join(sw)
    lease = sw.lease(a, T0)[0]
    sid = lease.shard.shard_id
    assert not sw.complete(b, sid, 64, 1.0, T0 + 1).counted
    done = sw.complete(a, sid, 64, 2.5, T0 + 1)
    assert done.counted and a.shards_done == 1 and b.shards_done == 0
    assert not sw.complete(a, sid, 64, 2.5, T0 + 2).counted and a.shards_done == 1
    assert kinds(sw).count("shard_completed") == 1
    sw = reopen(sw, run_dir, T0 + 3)
    rows = sw.store.completions()
    assert [(r["shard_id"], r["node_id"], r["tokens_trained"]) for r in rows] == [
        (sid, a.node_id, 64)
    ]
    assert rows[0]["mean_loss"] == 2.5
    assert sw.nodes[a.node_id].shards_done == 1 and sw.sched.counts()["done"] == 1
    sw.store.close()


def test_completion_of_unknown_or_validation_shard_is_refused(sw: Swarm) -> None:
    a, _, _ = join(sw)
    with pytest.raises(ApiError) as e:
        sw.complete(a, "nope", 1, 1.0, T0)
    assert code(e) is grpc.StatusCode.NOT_FOUND
    with pytest.raises(ApiError) as e:
        sw.complete(a, "val-00003", 1, 1.0, T0)
    assert code(e) is grpc.StatusCode.INVALID_ARGUMENT


def test_late_completion_after_expiry_is_not_counted(sw: Swarm) -> None:
    a, _, _ = join(sw)
    b, _, _ = join(sw)
    sid = sw.lease(a, T0)[0].shard.shard_id
    sw.tick(T0 + LEASE + 1)
    sw.heartbeat(b, stats(), T0 + LEASE + 1)
    assert sw.lease(b, T0 + LEASE + 1)[0].shard.shard_id == sid
    assert not sw.complete(a, sid, 64, 1.0, T0 + LEASE + 2).counted
    assert sw.complete(b, sid, 64, 1.0, T0 + LEASE + 2).counted
    assert (a.shards_done, b.shards_done) == (0, 1)


def test_finishing_every_shard_starts_the_next_epoch_durably(sw: Swarm, run_dir: Path) -> None:
    a, _, _ = join(sw, now=T0)
    for i in range(3):
        sid = sw.lease(a, T0)[0].shard.shard_id
        result = sw.complete(a, sid, 64, 1.0, T0 + i)
        assert result.counted and result.new_epoch is (i == 2)
    assert sw.sched.epoch == 1 and kinds(sw)[-1] == "epoch_started"
    sw = reopen(sw, run_dir, T0 + 5)
    assert sw.sched.epoch == 1 and sw.sched.counts()["pending"] == 3
    sw.store.close()


# -- rounds -----------------------------------------------------------------------------------


def report(r: int, peers: list[str], tokens: int = 100, loss: float = 2.0, **kw) -> dict:
    return {
        "round": r,
        "peer_node_ids": peers,
        "tokens": tokens,
        "mean_loss": loss,
        "duration_s": 1.0,
        "averaging_s": 0.5,
        "params_sha256": "",
        "val_loss": None,
        "group_tokens": tokens,
        **kw,
    }


def test_round_finishes_when_every_peer_reported(sw: Swarm, run_dir: Path) -> None:
    a, _, _ = join(sw)
    b, _, _ = join(sw)
    peers = [a.node_id, b.node_id]
    sw.report_round(a, report(1, peers, 300, 6.0), T0 + 1)
    assert not sw.rounds[1].finished and sw.loss_points == []
    sw.report_round(a, report(1, peers, 300, 6.0), T0 + 1.5)  # a repeat is not a second round
    assert a.rounds == 1
    sw.report_round(b, report(1, peers, 100, 10.0, val_loss=5.0), T0 + 2)
    agg = sw.rounds[1]
    assert agg.finished and agg.finished_unix == T0 + 2
    assert sw.loss_points == [(1, 400, pytest.approx(7.0))]
    assert sw.val_points == [(1, 400, 5.0)]
    assert (a.rounds, b.rounds, a.outer_round, sw.outer_round) == (1, 1, 1, 1)
    assert kinds(sw)[-1] == "round_finished"
    sw.report_round(a, report(2, [a.node_id], 50, 4.0), T0 + 3)
    assert sw.loss_points[-1] == (2, 450, 4.0)  # cumulative tokens of finished rounds
    sw = reopen(sw, run_dir, T0 + 4)
    assert [p[:2] for p in sw.loss_points] == [(1, 400), (2, 450)]
    assert set(sw.rounds[1].reports) == set(peers) and sw.nodes[a.node_id].rounds == 2
    sw.store.close()


def test_later_round_or_settle_time_finishes_an_open_round(sw: Swarm) -> None:
    a, _, _ = join(sw)
    b, _, _ = join(sw)
    sw.report_round(a, report(1, [a.node_id, b.node_id]), T0)
    sw.report_round(a, report(2, [a.node_id, b.node_id]), T0 + 1)
    assert sw.rounds[1].finished and not sw.rounds[2].finished
    sw.tick(T0 + ROUND_SETTLE_S)  # 29 s after round 2's first report
    assert not sw.rounds[2].finished
    sw.tick(T0 + 1 + ROUND_SETTLE_S)
    assert sw.rounds[2].finished and sw.rounds[2].finished_unix == T0 + 1 + ROUND_SETTLE_S


# -- periodic work, spec, queries -------------------------------------------------------------


def test_throughput_is_sampled_every_five_seconds_from_active_nodes(sw: Swarm) -> None:
    a, _, _ = join(sw)
    b, _, _ = join(sw)
    sw.heartbeat(a, stats(tokens_per_second=30.0), T0)
    sw.heartbeat(b, stats(tokens_per_second=12.0), T0)
    assert sw.tokens_per_second() == 42.0
    n = len(sw.throughput)
    sw.tick(T0 + 1)
    sw.tick(T0 + 3)
    assert len(sw.throughput) == n + 1 and sw.throughput[-1][2] == 42.0
    sw.leave(b, "", T0 + 4)
    sw.heartbeat(a, stats(tokens_per_second=30.0), T0 + 5)
    sw.tick(T0 + 6.1)
    assert len(sw.throughput) == n + 2 and sw.throughput[-1][2] == 30.0
    assert sw.throughput[-1][0] == sw.throughput[-2][0] + 1


def test_heartbeat_stats_reach_the_database_on_flush(sw: Swarm, run_dir: Path) -> None:
    a, _, _ = join(sw)
    maddrs = ["/ip4/127.0.0.1/tcp/1/p2p/QmA"]
    sw.heartbeat(a, stats(tokens_trained=77, last_loss=3.5, outer_round=4, dht_maddrs=maddrs), T0)
    assert a.last_loss == 3.5 and a.outer_round == 4
    sw.heartbeat(a, stats(tokens_trained=80, outer_round=2), T0 + 1)  # None keeps the last loss
    assert a.last_loss == 3.5 and a.outer_round == 4
    assert sw.flush(T0 + 1) is False
    row = next(r for r in Store(run_dir / DB_NAME, readonly=True).nodes())
    assert row["session_tokens"] == 80 and row["last_loss"] == 3.5 and row["outer_round"] == 4
    assert row["tokens_trained"] == 0  # credit comes from completed leases only


def test_flush_with_a_limit_reports_what_remains(sw: Swarm) -> None:
    nodes = [join(sw)[0] for _ in range(3)]
    for n in nodes:
        sw.heartbeat(n, stats(), T0)
    assert sw.flush(T0, limit=2) is True
    assert sw.flush(T0, limit=2) is False


def test_restart_gives_leases_a_fresh_term_and_nodes_a_fresh_last_seen(
    sw: Swarm, run_dir: Path
) -> None:
    a, _, _ = join(sw)
    sid = sw.lease(a, T0)[0].shard.shard_id
    later = T0 + 100  # the coordinator was down for 100 s
    sw = reopen(sw, run_dir, later)
    assert sw.sched.states[sid].deadline == later + LEASE
    assert sw.nodes[a.node_id].last_seen_unix == later
    sw.tick(later + 1)
    assert sw.nodes[a.node_id].state == "active" and sw.sched.holder(sid) == a.node_id
    sw.store.close()


def test_spec_change_is_handed_out_and_logged_once(sw: Swarm, run_dir: Path) -> None:
    new = update_spec(run_dir, {"inner_lr": "0.0005"})
    sw.set_spec(new, T0)
    assert sw.spec.revision == 2 and sw.spec_pb.revision == 2 and sw.spec_pb.inner.lr == 0.0005
    assert kinds(sw) == ["spec_changed"]
    sw.set_spec(load_run(run_dir).spec, T0 + 1)  # the same revision again: nothing happens
    assert kinds(sw) == ["spec_changed"]


def test_initial_peers_are_own_then_newest_active_nodes(sw: Swarm) -> None:
    own = ["/ip4/127.0.0.1/tcp/9/p2p/QmCoord"]
    nodes = []
    for i in range(INITIAL_PEERS_MAX + 2):
        n = join(sw)[0]
        sw.heartbeat(n, stats(dht_maddrs=[f"/ip4/10.0.0.{i}/tcp/1/p2p/Qm{i}"]), T0 + i)
        nodes.append(n)
    sw.leave(nodes[-2], "", T0 + 20)
    peers = sw.initial_peers(own, exclude=nodes[-1].node_id, now=T0 + 20)
    newest_first = [nodes[i].dht_maddrs[0] for i in range(INITIAL_PEERS_MAX - 1, -1, -1)]
    assert peers == own + newest_first  # neither the asker nor a node that left
    assert len(peers) == 9  # INITIAL_PEERS_MAX (8) nodes after the coordinator's own


def test_find_node_by_id_or_unique_prefix(sw: Swarm) -> None:
    a, _, _ = join(sw)
    assert sw.find_node(a.node_id) is a and sw.find_node(a.node_id[:6]) is a
    with pytest.raises(ApiError) as e:
        sw.find_node("zz")
    assert code(e) is grpc.StatusCode.NOT_FOUND
    while True:  # a second node whose id shares a's first hex digit
        b, _, _ = join(sw)
        if b.node_id[0] == a.node_id[0]:
            break
    with pytest.raises(ApiError) as e:
        sw.find_node(a.node_id[0])
    assert code(e) is grpc.StatusCode.INVALID_ARGUMENT and "matches" in e.value.message


def test_readonly_swarm_writes_nothing(sw: Swarm, run_dir: Path) -> None:
    a, _, _ = join(sw)
    sw.heartbeat(a, stats(tokens_trained=5), T0)
    sw.flush(T0)
    ro = open_swarm(run_dir, load_run(run_dir), now=T0 + 1000, readonly=True)
    try:
        assert ro.nodes[a.node_id].last_seen_unix == T0  # not refreshed to "now"
        assert ro.flush(T0 + 1000) is False
    finally:
        ro.store.close()


# -- pinned by mutation testing (bench/mutation.py survivors) ----------------------------------


def test_a_fresh_run_starts_at_epoch_zero_round_zero(sw: Swarm) -> None:
    assert sw.sched.epoch == 0 and sw.outer_round == 0


def test_events_are_numbered_one_by_one_and_name_the_node(sw: Swarm) -> None:
    a, _, _ = join(sw, display_name="")
    b, _, _ = join(sw, display_name="bob")
    sw.leave(a, "", T0 + 1)
    ids = [e[0] for e in sw.events]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert sw.events[0][4] == f"{a.node_id} on cpu" and sw.events[1][4] == "bob on cpu"


def test_nodes_that_left_or_were_banned_are_never_marked_lost(sw: Swarm) -> None:
    a, _, _ = join(sw)
    b, _, _ = join(sw)
    sw.leave(a, "", T0)
    sw.apply_ban(b.node_id, "", T0)
    sw.tick(T0 + 100)
    assert (a.state, b.state) == ("left", "banned")
    assert "lost" not in kinds(sw)


def test_ban_of_a_node_that_left_marks_it_banned(sw: Swarm) -> None:
    a, _, _ = join(sw)
    sw.leave(a, "", T0)
    sw.apply_ban(a.node_id, "late ban", T0 + 1)
    assert a.state == "banned" and kinds(sw, a.node_id)[-1] == "banned"


def test_initial_peers_exclude_the_asker_by_value(sw: Swarm) -> None:
    a, _, _ = join(sw)
    sw.heartbeat(a, stats(dht_maddrs=["/ip4/10.0.0.1/tcp/1/p2p/QmA"]), T0)
    same_id = "".join(list(a.node_id))  # equal, not the same object (as from a request)
    assert sw.initial_peers([], exclude=same_id, now=T0) == []


def test_a_round_settles_after_the_settle_time_even_between_ticks(sw: Swarm) -> None:
    a, _, _ = join(sw)
    b, _, _ = join(sw)
    sw.report_round(a, report(1, [a.node_id, b.node_id]), T0)
    sw.tick(T0 + ROUND_SETTLE_S + 0.7)  # the ticker never lands exactly on the settle time
    assert sw.rounds[1].finished


def test_throughput_history_survives_a_restart(sw: Swarm, run_dir: Path) -> None:
    a, _, _ = join(sw)
    sw.heartbeat(a, stats(tokens_per_second=8.0), T0)
    sw.tick(T0 + 1)
    sw.heartbeat(a, stats(tokens_per_second=8.0), T0 + 6)
    sw.tick(T0 + 6.5)
    before = [(unix, tps) for _, unix, tps in sw.throughput]
    sw = reopen(sw, run_dir, T0 + 7)
    assert [(unix, tps) for _, unix, tps in sw.throughput] == before
    assert [seq for seq, _, _ in sw.throughput] == list(range(1, len(before) + 1))
    sw.store.close()
