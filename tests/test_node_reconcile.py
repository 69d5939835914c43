"""Which θ_global wins when peers disagree about a round (pure logic)."""

from __future__ import annotations

from gpt5os.node.reconcile import RoundClaim, better_claim


def claim(round: int, digest: str, group: int, node: str = "n") -> RoundClaim:
    return RoundClaim(round=round, digest=digest, group_size=group, node_id=node)


def test_the_state_more_peers_averaged_into_wins() -> None:
    solo = claim(3, "aaa", 1)
    pair = claim(3, "fff", 2)
    assert pair.beats(solo) and not solo.beats(pair)
    assert better_claim(solo, [pair]) == pair
    assert better_claim(pair, [solo]) is None


def test_equal_groups_are_settled_by_the_smaller_digest_on_every_node() -> None:
    a, b = claim(2, "0123", 1, "a"), claim(2, "abcd", 1, "b")
    assert better_claim(b, [a, b]) == a
    assert better_claim(a, [a, b]) is None  # the winner keeps its state


def test_agreeing_peers_and_other_rounds_change_nothing() -> None:
    mine = claim(4, "same", 2)
    assert (
        better_claim(mine, [claim(4, "same", 2, "x"), claim(5, "zzz", 9), claim(3, "000", 9)])
        is None
    )


def test_the_best_of_several_rivals_is_chosen() -> None:
    mine = claim(1, "m", 1)
    rivals = [claim(1, "b", 2, "x"), claim(1, "a", 3, "y"), claim(1, "c", 3, "z")]
    assert better_claim(mine, rivals) == rivals[1]
