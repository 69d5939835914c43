"""Pure-logic tests of the dashboard's state (SwarmView), formatting, backoff and address parsing.

Synthetic protos are fine here: these rules have no I/O. The live path is test_dashboard_pilot.py.
"""

from __future__ import annotations

import pytest
from gpt5os.dashboard.feed import Backoff, parse_address
from gpt5os.dashboard.swarm_view import (
    SORT_KEYS,
    SwarmView,
    format_ago,
    format_count,
    format_duration,
    format_loss,
    matches,
    next_sort_key,
)
from gpt5os.proto import pb


def node(nid: str, **kw) -> pb.NodeStatus:
    return pb.NodeStatus(node_id=nid, **kw)


def snapshot(**kw) -> pb.SwarmUpdate:
    return pb.SwarmUpdate(snapshot=pb.SwarmSnapshot(**kw))


def delta(**kw) -> pb.SwarmUpdate:
    return pb.SwarmUpdate(delta=pb.SwarmDelta(**kw))


def test_snapshot_then_deltas_replace_by_key_and_append_histories() -> None:
    v = SwarmView()
    v.apply(
        snapshot(
            run=pb.RunStatus(run_id="r1", outer_round=1),
            nodes=[node("a", tokens_trained=10), node("b", tokens_trained=20)],
            rounds=[pb.RoundStatus(round=1, mean_loss=5.0)],
            loss_history=[pb.LossPoint(tokens=100, loss=9.0)],
            events=[pb.Event(id=1, kind="joined", node_id="a")],
            server_unix=1000.0,
        ),
        local_now=990.0,
    )
    assert v.has_snapshot and v.run.run_id == "r1"
    assert v.clock_offset == 10.0 and v.server_now(995.0) == 1005.0
    v.apply(
        delta(
            run=pb.RunStatus(run_id="r1", outer_round=2),
            nodes=[node("a", tokens_trained=15), node("c", tokens_trained=1)],
            rounds=[pb.RoundStatus(round=1, mean_loss=4.5), pb.RoundStatus(round=2)],
            loss_history=[pb.LossPoint(tokens=200, loss=8.0)],
            throughput_history=[pb.ThroughputPoint(unix=1001, tokens_per_second=5.0)],
            events=[pb.Event(id=2, kind="joined", node_id="c")],
            server_unix=1001.0,
        ),
        local_now=991.0,
    )
    assert v.run.outer_round == 2
    assert {k: n.tokens_trained for k, n in v.nodes.items()} == {"a": 15, "b": 20, "c": 1}
    assert [r.round for r in v.rounds_sorted()] == [1, 2]
    assert v.rounds[1].mean_loss == 4.5
    assert list(v.loss_history) == [(100, 9.0), (200, 8.0)]
    assert list(v.throughput_history) == [(1001.0, 5.0)]
    assert [e.id for e in v.events] == [1, 2]


def test_fresh_snapshot_replaces_everything() -> None:
    v = SwarmView()
    v.apply(snapshot(nodes=[node("a")], loss_history=[pb.LossPoint(tokens=1, loss=1)]), local_now=0)
    v.apply(delta(events=[pb.Event(id=5, kind="left")]), local_now=0)
    v.apply(snapshot(nodes=[node("b")], events=[pb.Event(id=3, kind="x")]), local_now=0)
    assert list(v.nodes) == ["b"]
    assert list(v.loss_history) == []
    assert [e.id for e in v.events] == [3]  # a restarted coordinator may count ids anew
    assert v.snapshots_seen == 2


def test_delta_before_snapshot_is_ignored_and_repeated_events_shown_once() -> None:
    v = SwarmView()
    v.apply(delta(nodes=[node("a")]), local_now=0)
    assert not v.has_snapshot and not v.nodes
    v.apply(snapshot(events=[pb.Event(id=1), pb.Event(id=2)]), local_now=0)
    v.apply(delta(events=[pb.Event(id=2), pb.Event(id=3)]), local_now=0)
    assert [e.id for e in v.events] == [1, 2, 3]


def test_histories_events_and_rounds_are_bounded() -> None:
    v = SwarmView(max_history=5, max_events=3, max_rounds=4)
    v.apply(snapshot(), local_now=0)
    for i in range(1, 11):
        v.apply(
            delta(
                loss_history=[pb.LossPoint(tokens=i, loss=1.0)],
                rounds=[pb.RoundStatus(round=i)],
                events=[pb.Event(id=i)],
            ),
            local_now=0,
        )
    assert [t for t, _ in v.loss_history] == [6, 7, 8, 9, 10]
    assert [e.id for e in v.events] == [8, 9, 10]
    assert sorted(v.rounds) == [7, 8, 9, 10]


def test_view_copies_protos_so_later_mutation_of_the_message_changes_nothing() -> None:
    v = SwarmView()
    snap = pb.SwarmSnapshot(nodes=[node("a", tokens_trained=1)])
    v.apply_snapshot(snap, local_now=0)
    snap.nodes[0].tokens_trained = 99
    assert v.nodes["a"].tokens_trained == 1


def test_sorting_filtering_and_leaderboard() -> None:
    v = SwarmView()
    v.apply(
        snapshot(
            nodes=[
                node(
                    "n1",
                    display_name="Zed",
                    device="cpu",
                    state="active",
                    tokens_trained=5,
                    tokens_per_second=1.0,
                    last_loss=3.0,
                    last_seen_unix=50,
                ),
                node(
                    "n2",
                    display_name="amy",
                    device="cuda:RTX 4090",
                    state="lost",
                    tokens_trained=50,
                    tokens_per_second=9.0,
                    last_loss=2.0,
                    last_seen_unix=10,
                ),
                node(
                    "n3",
                    display_name="Bo",
                    device="cuda:A100",
                    state="active",
                    tokens_trained=20,
                    tokens_per_second=5.0,
                    last_loss=4.0,
                    last_seen_unix=90,
                ),
            ]
        ),
        local_now=0,
    )
    ids = lambda rows: [n.node_id for n in rows]  # noqa: E731
    assert ids(v.node_rows()) == ["n2", "n3", "n1"]  # tokens, largest first
    assert ids(v.node_rows(sort_key="tokens", reverse=False)) == ["n1", "n3", "n2"]
    assert ids(v.node_rows(sort_key="tps")) == ["n2", "n3", "n1"]
    assert ids(v.node_rows(sort_key="loss")) == ["n2", "n1", "n3"]
    assert ids(v.node_rows(sort_key="seen")) == ["n3", "n1", "n2"]  # most recent first
    assert ids(v.node_rows(sort_key="name")) == ["n2", "n3", "n1"]  # case-insensitive
    assert ids(v.node_rows(sort_key="device")) == ["n1", "n3", "n2"]
    assert ids(v.node_rows(sort_key="state")) == ["n1", "n3", "n2"]
    assert ids(v.node_rows(query="cuda")) == ["n2", "n3"]
    assert ids(v.node_rows(query="CUDA active")) == ["n3"]
    assert ids(v.node_rows(query="nothing-like-this")) == []
    assert ids(v.leaderboard(2)) == ["n2", "n3"]
    assert matches(v.nodes["n1"], "  ")


def test_sort_cycle_visits_every_key() -> None:
    seen, key = [], SORT_KEYS[0]
    for _ in SORT_KEYS:
        seen.append(key)
        key = next_sort_key(key)
    assert sorted(seen) == sorted(SORT_KEYS) and key == SORT_KEYS[0]


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (999, "999"), (1234, "1.23k"), (5_600_000, "5.60M"), (2.5e9, "2.50G")],
)
def test_format_count(value, text) -> None:
    assert format_count(value) == text


def test_format_time_and_loss() -> None:
    assert format_ago(12.4) == "12s ago"
    assert format_ago(-3) == "0s ago"
    assert format_ago(125) == "2m ago"
    assert format_ago(7300) == "2h ago"
    assert format_ago(200_000) == "2d ago"
    assert format_duration(-1) == "unknown"
    assert format_duration(59) == "59s"
    assert format_duration(61) == "1m 01s"
    assert format_duration(3723) == "1h 02m"
    assert format_duration(90_000) == "1d 01h"
    assert format_loss(0.0) == "-" and format_loss(3.14159) == "3.142"


def test_backoff_grows_and_caps() -> None:
    b = Backoff(base=0.5, cap=10.0)
    assert [b.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert Backoff(base=0.01, cap=0.05).delay(10) == 0.05


def test_parse_address() -> None:
    assert parse_address("127.0.0.1:50051") == ("127.0.0.1", 50051)
    assert parse_address("coord.example.org:443") == ("coord.example.org", 443)
    assert parse_address("[::1]:50051") == ("::1", 50051)
    for bad in ["", "localhost", ":50051", "host:", "host:http", "host:0", "host:70000", "a b:1"]:
        with pytest.raises(ValueError, match="coordinator address"):
            parse_address(bad)


def test_the_keepers_state_follows_snapshots_and_deltas() -> None:
    v = SwarmView()
    v.apply(snapshot(run=pb.RunStatus(run_id="r")), local_now=0.0)
    assert v.keeper is None  # a coordinator that reports no keeper
    live = pb.KeeperStatus(live=True, last_round=3, last_report_unix=10.0, checkpoint_round=3)
    v.apply(delta(run=pb.RunStatus(run_id="r"), keeper=live), local_now=1.0)
    assert v.keeper.live and v.keeper.last_round == 3
    down = pb.KeeperStatus(live=False, last_round=3, last_report_unix=10.0)
    v.apply(delta(run=pb.RunStatus(run_id="r"), keeper=down), local_now=2.0)
    assert not v.keeper.live
