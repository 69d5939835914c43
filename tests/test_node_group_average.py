"""A round's averaging across real processes: real DHTs on 127.0.0.1, our real averager.

The failure these tests inject is the one seen under load: hivemind finishes the all-reduce but
one peer never got one part of the result (`Averaging: received 99.x% results`). The whole group
must notice, average again, and end with the exact mean on every peer.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from e2e_support import Proc, process_env, wait_for

pytestmark = pytest.mark.e2e

WORKER = str(Path(__file__).with_name("group_average_worker.py"))
PAIR = "11:700,22:300"
TRIO = "11:700,22:300,33:123"


def _run_group(
    tmp_path: Path,
    group: str,
    *,
    sabotage: int | None = None,
    staggered: bool = False,
    compression: str = "none",
    rounds: int = 0,
    attack: tuple[int, str] | None = None,
) -> list[dict]:
    """Run one worker per group member; `staggered`: the second starts only once the first
    has failed to find a group and is looking again."""
    size = len(group.split(","))
    procs: list[Proc] = []
    try:
        maddrs = tmp_path / "maddrs"
        for me in range(size):
            home = tmp_path / f"home{me}"
            home.mkdir()
            args = [sys.executable, WORKER, "--me", str(me), "--group", group,
                    "--out", str(tmp_path / f"result-{me}.json"), "--compression", compression]  # fmt: skip
            if me == 0:
                args += ["--maddrs-file", str(maddrs)]
            else:
                args += ["--peers", wait_for(lambda: _read(maddrs), 120, "worker 0's DHT")]
            if sabotage == me:
                args.append("--lose-part")
            if rounds:
                args += ["--rounds", str(rounds)]
            if attack is not None and attack[0] == me:
                args += ["--attack", attack[1]]
            if staggered:
                args.append("--no-barrier")
                if me > 0:
                    wait_for(
                        lambda: "no group yet; looking again" in procs[0].output(),
                        240,
                        "worker 0 to fail its first matchmaking",
                        interval=0.2,
                    )
            procs.append(Proc(args, tmp_path / f"worker{me}.log", process_env(home)))
        for me, proc in enumerate(procs):
            code = proc.wait(240 + 15 * rounds)
            assert code == 0, f"worker {me} failed:\n{proc.tail()}"
        return [json.loads((tmp_path / f"result-{me}.json").read_text()) for me in range(size)]
    finally:
        for proc in procs:
            proc.stop()


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def test_three_peers_settle_on_the_exact_mean(tmp_path: Path) -> None:
    """Three peers: exact only because hivemind's reducer adds in float64 in our averager (with
    its stock float32 accumulator, these sums and the division by 3 would round)."""
    results = _run_group(tmp_path, TRIO)
    for r in results:
        assert r["complete"] and r["exact"], r
        assert r["node_ids"] == ["node-0", "node-1", "node-2"]
    assert len({r["digest"] for r in results}) == 1
    # Usually one attempt; under heavy load hivemind really does lose a part now and then
    # (seen in a loop of these tests), and then all three must have redone it together.
    assert len({r["attempts"] for r in results}) == 1, results


@pytest.mark.parametrize("sabotage", [0, 1])
def test_a_lost_part_makes_the_whole_group_average_again(tmp_path: Path, sabotage: int) -> None:
    results = _run_group(tmp_path, PAIR, sabotage=sabotage)
    for r in results:
        assert r["complete"] and r["exact"], r
        assert r["attempts"] == 2, r  # the peer that lost nothing redid it too
        assert r["node_ids"] == ["node-0", "node-1"]
    assert results[0]["digest"] == results[1]["digest"]
    log = (tmp_path / f"worker{sabotage}.log").read_text()
    assert "received" in log and "% results" in log  # hivemind itself saw the loss


def test_a_peer_that_found_no_group_keeps_looking_instead_of_stepping_alone(
    tmp_path: Path,
) -> None:
    """The late-joiner race: one peer's matchmaking fails while the swarm has other peers; it
    must look again and average with the peer that comes, not take the round alone."""
    results = _run_group(tmp_path, PAIR, staggered=True)
    for r in results:
        assert r["complete"] and r["exact"], r
        assert r["node_ids"] == ["node-0", "node-1"]
    assert results[0]["digest"] == results[1]["digest"]


@pytest.mark.parametrize(("codec", "rel_err", "bytes_per_value"), [
    ("float16", 2e-3, 2.0), ("blockwise8", 2e-2, 1.0),
    # one round's error is mostly the reducer's unbiased rounding of the mean (measured 0.26 and
    # 1.23 here): 2 bits cannot tell the weighting apart in one round, only bound the damage
    ("blockwise4", 0.35, 0.5), ("blockwise2", 1.6, 0.25),
])  # fmt: skip
def test_each_codec_gives_the_token_weighted_mean_bitwise_equal_on_every_peer(
    tmp_path: Path, codec: str, rel_err: float, bytes_per_value: float
) -> None:
    """Every codec end to end through a real all-reduce: the token-weighted (700:300) mean to the
    codec's precision, the same bits on both peers (each decodes the reducer's same bytes,
    node/allreduce.py), and the bytes each put on the wire, counted as serialized."""
    results = _run_group(tmp_path, PAIR, compression=codec)
    for r in results:
        assert r["complete"] and r["attempts"] == 1, r
        assert r["node_ids"] == ["node-0", "node-1"]
        assert r["rel_err"] < rel_err, r  # an unweighted mean would be ~0.4 off
        wire = r["wire"]
        assert wire["parts"] > 0 and wire["incomplete_parts"] == 0, wire
        # both ways: a peer sends its parts and the averages of the parts it reduces
        assert wire["sent_values"] > 0 and wire["received_values"] > 0
        # scales and protobuf framing: 0.0024 bytes a value here (256-value biases), 0.001 on
        # large tensors
        assert wire["sent_bytes"] / wire["sent_values"] < bytes_per_value + 0.005, wire
        assert wire["received_bytes"] / wire["received_values"] < bytes_per_value + 0.005, wire
    assert results[0]["digest"] == results[1]["digest"]


def test_twenty_blockwise8_rounds_leave_bitwise_equal_results_and_track_exact_averaging(
    tmp_path: Path,
) -> None:
    """3 peers, 20 rounds of 8-bit blockwise averaging with error feedback and outer steps:
    every round's result and the final θ_global are bitwise equal on all three, with no state
    download. The stated tolerance: each round's result is within 3% of the exact
    token-weighted mean, and the sum of the 20 results within 2% of the sum of exact means
    (measured 1.7% and 1.2%: the reducers' unbiased rounding, ~1.1% of a Gaussian block's
    values per round, is a random walk; the senders' rounding is fed back and does not add up)."""
    results = _run_group(tmp_path, TRIO, compression="blockwise8", rounds=20)
    for r in results:
        assert r["outcome"] == "Settled", r
        assert len(r["digests"]) == 20
        assert r["max_round_rel_err"] < 3e-2, r
        assert r["sum_rel_err"] < 2e-2, r
        assert r["error_feedback_norm"] > 0  # the node carries its quantization error
        assert all(w["sent_bytes"] / w["sent_values"] < 1.005 for w in r["wire"]), r["wire"]
    assert results[0]["digests"] == results[1]["digests"] == results[2]["digests"]
    assert len({r["theta_digest"] for r in results}) == 1


QUARTET = "11:500,22:500,33:500,44:500"


@pytest.mark.parametrize("attack", ["x1e6", "signflip", "nan"])
def test_one_hostile_peer_of_four_moves_the_mean_a_bounded_distance(
    tmp_path: Path, attack: str
) -> None:
    """Peer 3 of 4 (equal tokens) sends ×1e6, −Δ or NaN past our sender's guard. Every reducer
    drops NaN parts and clips parts to 2× the group's median norm (node/robust.py), so the
    result stays within (1/4)·(2 + 1)·max‖Δ‖ of the clean mean (plus 2% for 8-bit rounding),
    bitwise equal on all four; a plain mean would be ~250,000× the clean one's norm off."""
    results = _run_group(tmp_path, QUARTET, compression="blockwise8", attack=(3, attack))
    for r in results:
        assert r["complete"], r
        bound = 0.25 * 3 * r["max_delta_norm"] + 0.02 * r["clean_norm"]
        assert r["distance"] < bound, r
    assert len({r["digest"] for r in results}) == 1
    reducers_saw = sum(r["wire"]["dropped"] + r["wire"]["clipped"] for r in results)
    if attack == "nan":  # every reducer dropped the NaN part it got
        assert sum(r["wire"]["dropped"] for r in results) >= 1, results
    elif attack == "x1e6":
        assert reducers_saw >= 1, results


def test_a_peer_claiming_1e9_tokens_counts_for_two_rounds_of_tokens_at_most(
    tmp_path: Path,
) -> None:
    """Peer 3 of 4 claims 1e9 tokens (gather data and all-reduce weight) for an honest Δ. Every
    member counts it for claim_bound(round_tokens) = 2 x 1024 (node/robust.py "Claimed
    weight"): the result is the mean weighted 700:700:700:2048 to blockwise8's precision (the
    median cap alone, 4 x 700, would put it ~10% off), the group's tokens are 2100 + 2048 on
    every member, and the reducers logged the bound."""
    group = "11:700,22:700,33:700,44:2048"
    results = _run_group(tmp_path, group, compression="blockwise8", attack=(3, "tokens1e9"))
    for r in results:
        assert r["complete"], r
        assert r["group_tokens"] == 2100 + 2048, r
        assert r["rel_err"] < 2e-2, r
    assert len({r["digest"] for r in results}) == 1
    assert sum(r["wire"]["bounded"] for r in results) >= 1, results
    logs = "".join((tmp_path / f"worker{me}.log").read_text() for me in range(3))
    assert "member node-3 claims 1000000000 tokens, more than a member may (2048)" in logs
