"""End to end: a real coordinator process and two real `gpt5os-node join` processes on 127.0.0.1
train the tiny RWKV-7 for three DiLoCo outer rounds over hivemind."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_support import (
    coordinator_status,
    init_run,
    join_node,
    start_coordinator,
    two_nodes_trained,
    wait_for,
)

pytestmark = pytest.mark.e2e

ROUNDS = 3


def test_two_nodes_average_every_round_and_learn(tmp_path: Path, small_corpus: Path) -> None:
    with two_nodes_trained(tmp_path, small_corpus, ROUNDS, init=["--inner-steps", "8"]) as trained:
        run_dir, _ = trained
        status = coordinator_status(run_dir)
        node_ids = {n["node_id"] for n in status["nodes"]}
        assert len(node_ids) == 2
        assert {n["state"] for n in status["nodes"]} == {"left"}

        rounds = {r["round"]: r for r in status["rounds"]}
        assert sorted(rounds) == list(range(1, ROUNDS + 1)), status["rounds"]
        for number, record in rounds.items():
            reports = record["reports"]
            assert {r["node_id"] for r in reports} == node_ids, f"round {number}: {reports}"
            for report in reports:  # both nodes were in the averaging group of every round
                assert set(report["peer_node_ids"]) == node_ids, f"round {number}: {report}"
            digests = {r["params_sha256"] for r in reports}
            assert len(digests) == 1, f"round {number}: global parameters differ: {digests}"
            assert record["peers"] == 2
        assert rounds[ROUNDS]["mean_loss"] < rounds[1]["mean_loss"]
        assert all(r["val_loss"] is not None for r in rounds.values()), (
            "no validation loss reported"
        )
        assert len(status["val_loss_history"]) == ROUNDS

        shards = status["shards"]
        assert shards["done"] > 0
        assert shards["total"] == shards["pending"] + shards["leased"] + shards["done"]
        credited = sum(n["shards_done"] for n in status["nodes"])
        assert credited == shards["done"], "a completed shard was counted twice or not at all"
        assert status["loss_history"] and all(len(p) == 2 for p in status["loss_history"])


def test_a_lone_node_trains_alone_and_a_late_joiner_averages_with_it(
    tmp_path: Path, small_corpus: Path
) -> None:
    run_dir = tmp_path / "run"
    init_run(run_dir, small_corpus, "--inner-steps", "4")
    coordinator, address = start_coordinator(
        run_dir, tmp_path / "coord-home", tmp_path / "coordinator.log"
    )
    first = late = None
    try:
        first = join_node(
            address, tmp_path / "node-first", tmp_path / "node-first.log", "--max-rounds", "4"
        )

        def first_round_done() -> dict | None:
            status = coordinator_status(run_dir)
            return status if status["rounds"] else None

        status = wait_for(first_round_done, 300, "the first node's first round", interval=1.0)
        [first_id] = [n["node_id"] for n in status["nodes"]]
        alone = status["rounds"][0]
        assert alone["round"] == 1 and [r["peer_node_ids"] for r in alone["reports"]] == [
            [first_id]
        ]

        late = join_node(
            address, tmp_path / "node-late", tmp_path / "node-late.log", "--max-rounds", "2"
        )
        assert late.wait(timeout=600) == 0, late.tail()
        assert first.wait(timeout=600) == 0, first.tail()

        status = coordinator_status(run_dir)
        [late_id] = [n["node_id"] for n in status["nodes"] if n["node_id"] != first_id]
        assert "adopted the certified state of round" in late.output()
        together = [
            r
            for r in status["rounds"]
            if {p["node_id"] for p in r["reports"]} == {first_id, late_id}
        ]
        assert together, f"the late joiner never averaged with the first node: {status['rounds']}"
        for record in together:
            assert record["round"] > 1
            assert {r["params_sha256"] for r in record["reports"]} == {
                record["reports"][0]["params_sha256"]
            }
            for report in record["reports"]:
                assert set(report["peer_node_ids"]) == {first_id, late_id}
    finally:
        for proc in (first, late):
            if proc is not None:
                proc.stop()
        coordinator.stop()


def test_overlapped_rounds_leave_the_same_global_model_on_every_node(
    tmp_path: Path, small_corpus: Path
) -> None:
    """join --overlap: each round's all-reduce runs while the next round trains; every node's
    θ_global after every round is bitwise the same (and the keeper's certificate)."""
    rounds = 3
    init = ["--inner-steps", "6", "--compression", "none"]
    with two_nodes_trained(tmp_path, small_corpus, rounds, init, ["--overlap"]) as trained:
        run_dir, nodes = trained
        status = coordinator_status(run_dir)
        by_round = {r["round"]: r for r in status["rounds"]}
        assert sorted(by_round) == list(range(1, rounds + 1)), status["rounds"]
        for number, record in by_round.items():
            reports = record["reports"]
            assert len(reports) == 2, f"round {number}: {reports}"
            digests = {r["params_sha256"] for r in reports}
            assert len(digests) == 1, f"round {number}: global parameters differ: {digests}"
            assert all(len(r["peer_node_ids"]) == 2 for r in reports), reports
        cert = status["keeper"]["certified"]
        assert cert["round"] == rounds and cert["params_sha256"] in digests
        assert all(r["val_loss"] is not None for r in by_round.values())
        logs = [n.output() for n in nodes]
        assert all("round 3:" in text for text in logs)
