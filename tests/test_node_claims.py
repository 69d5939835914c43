"""Claims only advertise who holds what; a keeper's claim is recognisable (pure logic)."""

from __future__ import annotations

from gpt5os.node.claims import KEEPER_NODE_ID, RoundClaim


def test_a_claim_names_its_round_digest_and_owner() -> None:
    claim = RoundClaim(round=3, digest="ab" * 32, group_size=2, node_id="n1")
    assert not claim.is_keeper
    assert RoundClaim(3, "ab" * 32, 0, KEEPER_NODE_ID).is_keeper
