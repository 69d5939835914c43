"""The settlement rules every member applies to the same gathered data (node/settle.py), and the
group floor's source (node/swarm.py min_group_size): pure logic, milliseconds."""

from __future__ import annotations

import math

from gpt5os.node.settle import (
    Verdict,
    contributors,
    declared_norms,
    group_name,
    required_size,
    settled,
)
from gpt5os.node.swarm import min_group_size


def test_the_settle_rule() -> None:
    members = ["a", "b", "k"]
    ok = {m: Verdict(m, "g", True, "x") for m in members}
    assert settled(True, "x", ok, members)
    assert not settled(False, "", ok, members)  # our own check failed: redo
    assert not settled(True, "x", ok | {"b": Verdict("b", "g", False, "")}, members)
    assert not settled(True, "x", ok | {"b": Verdict("b", "g", True, "y")}, members)
    assert settled(True, "x", {"a": ok["a"]}, members)  # silent members do not block us
    assert not settled(False, "x", {"a": ok["a"]}, members)  # ...but our own check still counts
    made = "".join(["x", ""])  # equal to "x", not the same object
    assert settled(True, made, ok, members)
    assert not settled(True, "x", ok | {"b": Verdict("b", "g", True, "a")}, members)  # "a" < "x"
    stranger = {"z": Verdict("z", "g", False, "")}  # a verdict from outside the group: ignored
    assert settled(True, "x", ok | stranger, members)
    assert settled(True, "x", {"a": ok["a"], "b": ok["b"]} | stranger, members)  # k silent
    # with a member silent our checked result stands even beside a dissent (the certificate
    # repairs whichever side was wrong; a silent member must never block the round)
    assert settled(True, "x", {"a": ok["a"], "b": Verdict("b", "g", True, "y")}, members)


def test_group_names_are_the_same_on_every_member_and_differ_between_groups() -> None:
    name = group_name(["n2", "n1", "n3"])
    assert name == group_name(["n1", "n3", "n2"])  # member order does not matter
    assert len(name) == 32 and int(name, 16) >= 0
    assert name != group_name(["n1", "n2"])
    assert group_name(["ab", "c"]) != group_name(["a", "bc"])  # the separator counts


def test_contributors_leave_out_keepers_and_refused_members() -> None:
    group = [
        {"node_id": "a", "tokens": 10},
        {"node_id": "keeper", "keeper": True, "tokens": 0},
        {"node_id": "b", "refused": True, "tokens": 0},
        {"node_id": 7, "tokens": 5},
    ]
    assert contributors(group) == ["a", "7"]


def test_declared_norms_come_from_contributors_and_skip_garbage() -> None:
    group = [
        {"node_id": "a", "norm": 2.5},
        {"node_id": "k", "keeper": True, "norm": 1e9},
        {"node_id": "r", "refused": True, "norm": 1e9},
        {"node_id": "b", "norm": "3"},
        {"node_id": "c"},
        {"node_id": "d", "norm": None},
        {"node_id": "e", "norm": "lots"},
        {"node_id": "f", "norm": math.inf},
    ]
    assert declared_norms(group) == [2.5, 3.0, math.inf]  # SendGuard.observe drops inf


def test_the_largest_floor_any_member_declared_is_required() -> None:
    keeper = {"node_id": "keeper", "keeper": True, "floor": 2}  # it had seen one node
    fast = {"node_id": "a", "floor": 3}  # it had seen both nodes and the keeper
    assert required_size([keeper, fast]) == 3  # the pair is too small: both look again
    assert required_size([fast, keeper]) == 3
    assert required_size([keeper, {"node_id": "a", "floor": 2}]) == 2
    assert required_size([keeper, fast, {"node_id": "b", "floor": 3}]) == 3


def test_members_without_a_floor_or_with_garbage_require_nothing() -> None:
    assert required_size([]) == 0
    assert required_size([{"node_id": "a"}, {"node_id": "b"}]) == 0
    assert required_size([{"node_id": "a", "floor": "many"}, {"node_id": "b", "floor": None}]) == 0
    assert required_size([{"node_id": "a", "floor": "x"}, {"node_id": "b", "floor": 2}]) == 2


def test_the_floor_counts_the_keeper_only_beside_two_nodes() -> None:
    assert min_group_size(num_peers=2, keeper_present=True) == 2  # one node and the keeper
    assert min_group_size(num_peers=3, keeper_present=True) == 3  # two nodes: both, and the keeper
    assert min_group_size(num_peers=2, keeper_present=False) == 2
    assert min_group_size(num_peers=5, keeper_present=False) == 2


def test_the_round_line_sums_up_what_the_reducers_did() -> None:
    from gpt5os.node.group_average import robust_summary

    assert robust_summary({"sent_bytes": 1, "dropped": 0, "clipped": 0, "capped": 0}) == ""
    assert robust_summary({}) == ""
    line = robust_summary({"dropped": 1, "clipped": 44, "capped": 0})
    assert line == "; as reducer: dropped 1, clipped 44 sender part(s)"
