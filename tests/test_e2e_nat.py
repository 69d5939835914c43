"""End to end behind "NAT": a node forced into hivemind's client mode (`--client-mode`, what the
reachability check picks for a node others cannot reach) averages with a full peer, on a TLS
coordinator that both nodes and the keeper pin by fingerprint. Real processes on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_support import (
    Proc,
    coordinator_status,
    init_run,
    join_node,
    start_coordinator,
)
from gpt5os.common.tls import TlsFiles, fingerprint

pytestmark = pytest.mark.e2e

ROUNDS = 2


def test_a_client_mode_node_averages_with_a_full_peer_over_tls(
    tmp_path: Path, small_corpus: Path
) -> None:
    run_dir = tmp_path / "run"
    init_run(run_dir, small_corpus, "--inner-steps", "8", "--compression", "none", "--tls")
    fp = fingerprint(TlsFiles.of_run(run_dir).cert.read_bytes())
    coordinator, address = start_coordinator(
        run_dir, tmp_path / "coord-home", tmp_path / "coordinator.log"
    )
    nodes: dict[str, Proc] = {}
    try:
        for name, extra in (("full", []), ("client", ["--client-mode"])):
            home = tmp_path / f"node-{name}"
            nodes[name] = join_node(
                address, home, tmp_path / f"node-{name}.log", "--max-rounds", str(ROUNDS),
                "--min-peers", "2", "--coordinator-fingerprint", fp, *extra,
            )  # fmt: skip
        for name, node in nodes.items():
            rc = node.wait(timeout=600)
            assert rc == 0, f"node {name} exited with {rc}:\n{node.tail()}"
        full_log = (tmp_path / "node-full.log").read_text()
        client_log = (tmp_path / "node-client.log").read_text()
        assert "runs as a full peer" in full_log and "the coordinator reached" in full_log
        assert "client mode through relays (--client-mode)" in client_log

        status = coordinator_status(run_dir)
        node_ids = {n["node_id"] for n in status["nodes"]}
        assert len(node_ids) == 2
        rounds = {r["round"]: r for r in status["rounds"]}
        assert sorted(rounds) == list(range(1, ROUNDS + 1)), status["rounds"]
        for number, record in rounds.items():
            reports = record["reports"]
            assert {r["node_id"] for r in reports} == node_ids, f"round {number}: {reports}"
            for report in reports:  # the client-mode node was in every round's group
                assert node_ids <= set(report["peer_node_ids"]), f"round {number}: {report}"
            assert len({r["params_sha256"] for r in reports}) == 1, f"round {number}"
        assert status["keeper"]["last_report_unix"], "the keeper never reached the TLS coordinator"
    finally:
        for node in nodes.values():
            node.stop()
        coordinator.stop()
