"""The training loop's utilization (node/loop_stats.py)."""

from __future__ import annotations

import json

from gpt5os.node.loop_stats import LoopStats


def test_utilization_counts_the_wait_on_the_swarm_from_the_first_step(tmp_path) -> None:
    stats = LoopStats()
    assert stats.utilization(now=5.0) is None  # no step yet
    stats.step_begins(now=100.0)
    stats.step_begins(now=150.0)  # only the first step starts the clock
    stats.comm_s = 10.0
    assert stats.wall_s(now=140.0) == 40.0
    assert stats.utilization(now=140.0) == 0.75
    stats.write(tmp_path / "s.json")
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["comm_s"] == 10.0 and data["first_step_at"] is not None
