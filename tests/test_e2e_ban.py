"""End to end, a node banned mid-run that ignores the ban: the coordinator refuses its heartbeats
(so its swarm token is never renewed), and the node keeps its DHT, averager and trainer running
and, once its last token has expired, knocks on the volunteers' rpc_join_group with it
(tests/rogue_peer.py --ignore-ban). Within one token lifetime of `gpt5os-coordinator ban` every
admitted node refuses it ("token ... expired"), and the rounds after that average the admitted
nodes alone (common/swarm_token.py, node/swarm.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from e2e_support import (
    Proc,
    coordinator_status,
    init_run,
    join_node,
    process_env,
    start_coordinator,
    tool,
    wait_for,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]  # ~4 min

ROGUE = str(Path(__file__).with_name("rogue_peer.py"))
LIFETIME_S = 30.0  # --swarm-token-lifetime: renewed at half, so a gathered token has >= 15 s
SLACK_S = 10.0  # the server's poll of the ban (1 s), a knock's period, log flushing


def _reports(run_dir: Path) -> dict[int, list[dict]]:
    return {r["round"]: r["reports"] for r in coordinator_status(run_dir)["rounds"]}


def _line(proc: Proc, prefix: str) -> str | None:
    assert proc.alive(), f"{proc.args[1]} exited:\n{proc.tail()}"
    return next((line for line in proc.output().splitlines() if line.startswith(prefix)), None)


def test_a_banned_node_that_carries_on_drops_out_of_averaging_within_one_token_lifetime(
    tmp_path: Path, small_corpus: Path
) -> None:
    run_dir = tmp_path / "run"
    init_run(run_dir, small_corpus, "--inner-steps", "8", "--compression", "none",
             "--heartbeat-seconds", "1", "--lease-seconds", "30")  # fmt: skip
    coordinator, address = start_coordinator(
        run_dir, tmp_path / "coord-home", tmp_path / "coordinator.log",
        "--no-keeper", "--swarm-token-lifetime", str(LIFETIME_S),
    )  # fmt: skip
    nodes = [
        join_node(address, tmp_path / f"node-{n}", tmp_path / f"node-{n}.log", "--min-peers", "2")
        for n in "ab"
    ]
    rogue = None
    try:
        wait_for(lambda: coordinator_status(run_dir)["rounds"], 300, "the first round", 1.0)
        rogue = Proc(
            [sys.executable, ROGUE, "--coordinator", address, "--home", str(tmp_path / "rogue"),
             "--ignore-ban", "--", "--device", "cpu", "--threads", "1"],
            tmp_path / "rogue.log", process_env(tmp_path / "rogue"),
        )  # fmt: skip
        _, _, peer, _, rogue_id = wait_for(
            lambda: _line(rogue, "rogue peer "), 180, "the rogue's swarm peer", 0.5
        ).split()

        def averaged_with_rogue() -> bool:
            assert all(n.alive() for n in nodes), "an admitted node exited"
            return any(
                rogue_id in report["peer_node_ids"]
                for reports in _reports(run_dir).values()
                for report in reports
            )

        wait_for(averaged_with_rogue, 300, "a round that averaged the rogue in", 1.0)

        r = subprocess.run(
            [tool("gpt5os-coordinator"), "ban", "--dir", str(run_dir), rogue_id],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        banned_at = time.monotonic()
        wait_for(lambda: _line(rogue, "rogue banned"), 30, "the rogue's first refusal", 0.2)

        refusal = f"refused peer {peer} in averaging: swarm token of '{rogue_id}' expired"
        wait_for(
            lambda: any(refusal in n.output() for n in nodes),
            LIFETIME_S + 60,
            "an admitted node refusing the rogue's expired token",
            0.2,
        )
        refused_after = time.monotonic() - banned_at
        assert refused_after <= LIFETIME_S + SLACK_S, refused_after
        print(f"\nFIGURE ban-refused: refused {refused_after:.1f} s after `ban` "
              f"(token lifetime {LIFETIME_S:.0f} s)")  # fmt: skip

        # rounds whose averaging began after the refusal: the admitted nodes alone
        first_clean = max(_reports(run_dir)) + 2
        node_ids = {r["node_id"] for reports in _reports(run_dir).values() for r in reports}
        honest = node_ids - {rogue_id}
        assert len(honest) == 2, node_ids

        def clean_round_reported() -> bool:
            assert all(n.alive() for n in nodes), "an admitted node exited"
            return len(_reports(run_dir).get(first_clean, [])) == 2

        wait_for(clean_round_reported, 300, f"round {first_clean} from both admitted nodes", 1.0)
        for number, reports in _reports(run_dir).items():
            for report in reports:
                assert report["node_id"] in honest or number < first_clean, report
                if number >= first_clean:
                    assert set(report["peer_node_ids"]) == honest, f"round {number}: {report}"
        knocks = [
            json.loads(line.split(" ", 2)[2])
            for line in rogue.output().splitlines()
            if line.startswith("rogue knocks ")
        ]
        assert rogue.alive(), rogue.tail()  # it carried on, and got nowhere
        for codes in knocks:
            assert "ACCEPTED" not in codes and "BEGIN_ALLREDUCE" not in codes, knocks
    finally:
        if rogue is not None:
            rogue.stop()
        for node in nodes:
            node.stop()
        coordinator.stop()
