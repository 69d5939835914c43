"""The group floor every member enforces (node/group_average.py required_size), as pure logic.

hivemind checks only the leader's min_group_size; a leader that had not yet seen a slow node
would let a fast node and the keeper finish the round without it."""

from __future__ import annotations

from gpt5os.node.group_average import required_size
from gpt5os.node.swarm import min_group_size


def test_the_largest_floor_any_member_declared_is_required() -> None:
    keeper = {"node_id": "keeper", "keeper": True, "floor": 2}  # it had seen one node
    fast = {"node_id": "a", "floor": 3}  # it had seen both nodes and the keeper
    assert required_size([keeper, fast]) == 3  # the pair is too small: both look again
    assert required_size([keeper, {"node_id": "a", "floor": 2}]) == 2
    assert required_size([keeper, fast, {"node_id": "b", "floor": 3}]) == 3


def test_members_without_a_floor_or_with_garbage_require_nothing() -> None:
    assert required_size([{"node_id": "a"}, {"node_id": "b"}]) == 0
    assert required_size([{"node_id": "a", "floor": "many"}, {"node_id": "b", "floor": None}]) == 0


def test_the_floor_counts_the_keeper_only_beside_two_nodes() -> None:
    assert min_group_size(num_peers=2, keeper_present=True) == 2  # one node and the keeper
    assert min_group_size(num_peers=3, keeper_present=True) == 3  # two nodes: both, and the keeper
    assert min_group_size(num_peers=2, keeper_present=False) == 2
