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
            code = proc.wait(240)
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


def test_float16_compression_gives_the_token_weighted_mean(tmp_path: Path) -> None:
    """`compression: float16`: half the bytes, one attempt, the token-weighted (700:300) mean to
    fp16 precision on both peers (not bitwise equal between them: FIELD-NOTES)."""
    results = _run_group(tmp_path, PAIR, compression="float16")
    for r in results:
        assert r["complete"] and r["attempts"] == 1, r
        assert r["node_ids"] == ["node-0", "node-1"]
        assert r["rel_err"] < 2e-3, r  # an unweighted mean would be ~0.4 off
