"""End to end, a moderated swarm: a hivemind peer the coordinator gave no swarm token (it knows
the DHT prefix and every volunteer's address, and carries a token it signed itself) tries to
read and write the swarm's DHT records, to advertise itself as a state source and to enter the
volunteers' averaging groups, and fails at each while two admitted nodes keep training and
averaging (common/swarm_auth.py, node/swarm.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from e2e_support import (
    Proc,
    coordinator_status,
    init_run,
    join_node,
    process_env,
    start_coordinator,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # ~3 min: make test-slow, and CI

ROGUE = str(Path(__file__).with_name("rogue_peer.py"))
ROUNDS = 5
ATTACK_S = 15


def _node(address: str, home: Path, log: Path) -> Proc:
    return join_node(address, home, log, "--max-rounds", str(ROUNDS), "--min-peers", "2")


def _results(output: str) -> dict[str, object]:
    """{what: parsed JSON} from the stranger's `stranger <what> <json>` lines."""
    found = {}
    for line in output.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and parts[0] == "stranger" and parts[1] in ("read", "wrote", "joins"):
            found[parts[1]] = json.loads(parts[2])
        elif len(parts) == 3 and parts[:2] == ["stranger", "peer"]:
            found["peer"] = parts[2]
    return found


def test_a_peer_without_a_swarm_token_gets_nothing_while_nodes_train(
    tmp_path: Path, small_corpus: Path
) -> None:
    run_dir = tmp_path / "run"
    init_run(run_dir, small_corpus, "--inner-steps", "8", "--compression", "none")
    coordinator, address = start_coordinator(
        run_dir, tmp_path / "coord-home", tmp_path / "coordinator.log", "--no-keeper"
    )
    nodes = [_node(address, tmp_path / f"node-{n}", tmp_path / f"node-{n}.log") for n in "ab"]
    stranger = None
    try:
        wait_for(lambda: coordinator_status(run_dir)["rounds"], 300, "the first round", 1.0)
        stranger = Proc(
            [sys.executable, ROGUE, "--coordinator", address, "--home",
             str(tmp_path / "stranger"), "--stranger", str(ATTACK_S)],
            tmp_path / "stranger.log", process_env(tmp_path / "stranger"),
        )  # fmt: skip
        assert stranger.wait(timeout=240) == 0, stranger.tail()
        results = _results(stranger.output())
        assert set(results) == {"peer", "read", "wrote", "joins"}, stranger.tail()
        # the records exist (the nodes publish claims and membership), the stranger sees none
        assert results["read"] and not any(results["read"].values()), results
        assert results["wrote"] and not any(results["wrote"].values()), results
        joins: dict[str, int] = results["joins"]  # type: ignore[assignment]
        assert "ACCEPTED" not in joins and "BEGIN_ALLREDUCE" not in joins, joins
        assert joins.get("PROTOCOL_VIOLATION", 0) > 0, joins  # the nodes answered, and refused

        for node in nodes:
            rc = node.wait(timeout=600)
            assert rc == 0, f"node exited with {rc}:\n{node.tail()}"
        logs = "".join(node.output() for node in nodes)
        assert f"refused peer {results['peer']} in averaging" in logs
        assert "not signed by this run's coordinator" in logs

        # the admitted nodes averaged together in every round, the stranger in none
        status = coordinator_status(run_dir)
        rounds = {r["round"]: r for r in status["rounds"]}
        assert sorted(rounds) == list(range(1, ROUNDS + 1)), status["rounds"]
        node_ids = {r["node_id"] for r in rounds[1]["reports"]}
        assert len(node_ids) == 2
        for number, record in rounds.items():
            for report in record["reports"]:
                assert set(report["peer_node_ids"]) == node_ids, f"round {number}: {report}"
            assert len({r["params_sha256"] for r in record["reports"]}) == 1
    finally:
        if stranger is not None:
            stranger.stop()
        for node in nodes:
            node.stop()
        coordinator.stop()
