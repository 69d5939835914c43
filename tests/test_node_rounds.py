"""When a round is due (node/rounds.py): after each node's H inner steps, however many nodes."""

from __future__ import annotations

from gpt5os.node.rounds import peer_rounds, round_due
from hivemind.utils import ValueWithExpiration

H_TOKENS = 500 * 4096  # H = 500 steps of one 4096-token sequence


def due(local_tokens: int, peers: list[tuple[int, int]], *, local_round=3, swarm_round=3) -> bool:
    return round_due(
        local_round=local_round,
        local_tokens=local_tokens,
        swarm_round=swarm_round,
        round_tokens=H_TOKENS,
        peers=peers,
    )


def test_a_round_is_due_after_this_nodes_h_steps_however_many_nodes_there_are() -> None:
    # 64 nodes that each trained H/64 steps: hivemind's sum would say "done", we say not yet
    many = [(3, H_TOKENS // 64)] * 64
    assert not due(H_TOKENS // 64, many)
    assert not due(H_TOKENS - 1, [(3, H_TOKENS - 1)] * 2)
    assert due(H_TOKENS, [(3, H_TOKENS // 64)] * 64)
    assert due(H_TOKENS, [])  # alone: its own H steps


def test_a_slow_node_joins_when_a_peer_in_its_round_finished_its_h_steps() -> None:
    assert due(1000, [(3, 1000), (3, H_TOKENS)])
    assert due(0, [(3, H_TOKENS + 5)])


def test_peers_in_another_round_do_not_make_ours_due() -> None:
    assert not due(1000, [(2, H_TOKENS), (4, H_TOKENS)], swarm_round=3)


def test_a_swarm_past_our_round_is_due_at_once_so_the_node_resyncs() -> None:
    assert due(0, [], local_round=3, swarm_round=4)


def test_peer_rounds_reads_well_formed_records_and_skips_the_rest() -> None:
    def record(epoch, samples):
        value = dict(
            peer_id=b"p", epoch=epoch, samples_accumulated=samples, samples_per_second=1.0,
            time=0.0, client_mode=False,
        )  # fmt: skip
        return ValueWithExpiration(value, 1e12)

    metadata = {
        b"a": record(2, 100),
        b"b": record(3, 7),
        b"bad": ValueWithExpiration({"epoch": "x"}, 1e12),
        b"none": ValueWithExpiration(None, 1e12),
    }
    assert sorted(peer_rounds(metadata)) == [(2, 100), (3, 7)]
    assert peer_rounds(None) == []
