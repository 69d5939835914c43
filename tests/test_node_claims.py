"""Claims only advertise who holds what; a keeper's claim is recognisable (pure logic)."""

from __future__ import annotations

from gpt5os.node.claims import KEEPER_NODE_ID, RoundClaim


def test_a_claim_names_its_round_digest_and_owner() -> None:
    claim = RoundClaim(round=3, digest="ab" * 32, group_size=2, node_id="n1")
    assert not claim.is_keeper
    assert RoundClaim(3, "ab" * 32, 0, KEEPER_NODE_ID).is_keeper


def test_the_keeper_never_lets_one_node_finish_a_round_without_the_others() -> None:
    from gpt5os.node.swarm import min_group_size

    assert min_group_size(2, keeper_present=False) == 2  # two nodes, no keeper: as before
    assert min_group_size(2, keeper_present=True) == 2  # a lone node averages with the keeper
    assert min_group_size(3, keeper_present=True) == 3  # two nodes + keeper: both nodes
    assert min_group_size(4, keeper_present=True) == 3  # at least two nodes, as without keeper
    assert min_group_size(1, keeper_present=True) == 2
