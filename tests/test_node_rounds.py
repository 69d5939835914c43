"""When a round is due (node/rounds.py): after each node's H inner steps, however many nodes."""

from __future__ import annotations

from gpt5os.node.rounds import (
    PUBLISH_EVERY_S,
    Published,
    peer_rounds,
    round_due,
    seconds_to_due,
    should_publish,
)
from hivemind.optim.progress_tracker import LocalTrainingProgress
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


def test_progress_reaches_the_dht_when_others_act_on_it_and_otherwise_every_few_seconds() -> None:
    """Every inner step reports progress; only what changes the others' decisions is stored at
    once (a first report, a new round, a reset, a round's first tokens, reaching H steps = 1000
    tokens here)."""
    last = Published(round=3, tokens=400, at=100.0)
    assert should_publish(None, 3, 0, 100.0, 1000)
    assert not should_publish(last, 3, 432, 101.0, 1000)  # one more step, a second later
    assert should_publish(last, 3, 432, 100.0 + PUBLISH_EVERY_S, 1000)
    assert not should_publish(last, 3, 400, 100.0 + PUBLISH_EVERY_S, 1000)  # nothing new
    assert should_publish(last, 4, 0, 100.5, 1000)  # a new round
    assert should_publish(last, 3, 0, 100.5, 1000)  # a reset
    assert should_publish(last, 3, 1000, 100.5, 1000)  # H steps: the round is due
    assert not should_publish(Published(3, 1000, 100.0), 3, 1000, 100.5, 1000)
    # the first tokens of a round: hivemind stored nothing for 0 samples (a starting node)
    assert should_publish(Published(0, 0, 100.0), 0, 32, 100.5, 1000)
    assert not should_publish(Published(0, 32, 100.0), 0, 64, 100.5, 1000)


def _peer(epoch: int, tokens: int, speed: float, at: float) -> LocalTrainingProgress:
    return LocalTrainingProgress(
        peer_id=b"p", epoch=epoch, samples_accumulated=tokens, samples_per_second=speed,
        time=at, client_mode=False,
    )  # fmt: skip


def test_the_next_round_is_due_when_the_first_peer_of_ours_should_reach_h_steps() -> None:
    """Not when the swarm's sum reaches one node's round (hivemind's estimate, after H / N steps):
    the tracker fetches at its fastest rate only near the real due time."""
    peers = [
        _peer(3, 400, 10.0, at=100.0),
        _peer(3, 100, 50.0, at=100.0),
        _peer(2, 990, 99.0, 100.0),
    ]
    # at t = 102: the first is at 420 (58 s to go), the second at 200 (16 s): 16 s
    assert abs(seconds_to_due(peers, 3, 1000, now=102.0) - 16.0) < 1e-9
    assert seconds_to_due(peers, 3, 1000, now=120.0) == 0.0  # the fast one should be done
    assert seconds_to_due([_peer(3, 0, 0.0, 100.0)], 3, 1000, now=101.0) == float("inf")
    assert seconds_to_due(peers, 4, 1000, now=102.0) == float("inf")  # no peer in round 4 yet
