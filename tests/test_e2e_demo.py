"""`make demo`'s script brings up a coordinator, two nodes and the dashboard, and stops them all
when the dashboard quits (here: --snapshot renders once and exits)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import healthy

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]


def test_demo_starts_everything_and_stops_everything(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    svg = tmp_path / "demo.svg"
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "demo.py"),
            "--dir",
            str(demo_dir),
            "--snapshot",
            str(svg),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert svg.read_text().startswith("<svg")
    assert (
        "demo-1" in svg.read_text() and "demo-2" in svg.read_text()
    )  # both nodes on the dashboard

    port = int((demo_dir / "coordinator.port").read_text())
    assert not healthy(f"127.0.0.1:{port}"), "the coordinator outlived the dashboard"
    for name in ("coordinator", "node-1", "node-2"):
        pid = int((demo_dir / f"{name}.pid").read_text())
        assert not _alive(pid), f"{name} (pid {pid}) outlived the dashboard"
    for name in ("coordinator", "node-1", "node-2"):  # left on SIGTERM, not by the SIGKILL after
        assert (demo_dir / f"{name}.exit").read_text() == "0", f"{name} did not exit cleanly"
    for i in (1, 2):
        log = (demo_dir / f"node-{i}.log").read_text()
        assert "joined run" in log and "gpt5os-node: left after" in log
        for word in ("Traceback", "ERROR", "Task was destroyed", "Exception ignored"):
            assert word not in log, f"{word!r} in node-{i}'s clean exit:\n{log[-3000:]}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
