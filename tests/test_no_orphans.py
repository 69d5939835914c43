"""No process outlives its parent: kill -9 a training node and its coordinator, and every process
of theirs (hivemind's DHT and averager processes, the p2p daemons, torch's shared-memory manager)
is gone within 10 s, and none of them leaves a torch shared-memory segment in /dev/shm behind.
Processes are found through their process trees, never by name."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from e2e_support import Proc, coordinator_status, process_env, start_coordinator, tool, wait_for
from gpt5os.coordinator.testkit import make_run
from process_tree import ProcId, still_running, tree

pytestmark = pytest.mark.e2e

GONE_WITHIN_S = 10.0


def _names(procs: list[ProcId]) -> list[str]:
    return sorted(p.name for p in procs)


def test_kill_9_leaves_no_orphans(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    make_run(run_dir, n_train=4, preset="tiny", inner_steps=2000)
    coordinator, address = start_coordinator(
        run_dir, tmp_path / "coord-home", tmp_path / "coordinator.log"
    )
    node = Proc(
        [tool("gpt5os-node"), "join", "--coordinator", address, "--device", "cpu",
         "--threads", "1", "--home", str(tmp_path / "node")],
        tmp_path / "node.log", process_env(tmp_path / "node"),
    )  # fmt: skip
    try:
        # The coordinator: itself, its DHT process, that one's p2p daemon. The node: itself, its
        # DHT process and p2p daemon, its averager process (torch's shm manager may come too).
        coordinator_tree = wait_for(
            lambda: _tree_of_at_least(coordinator, 3), 60, "the coordinator's DHT"
        )
        wait_for(lambda: _tree_of_at_least(node, 4), 180, "the node's hivemind processes")
        # trained a few steps: every child it will start exists by now
        wait_for(lambda: _trained(tmp_path / "run"), 180, "the node to train")
        node_tree = tree(node.pid)
        assert "p2pd" in _names(node_tree) and "p2pd" in _names(coordinator_tree)

        node.kill9()
        coordinator.kill9()
        killed = time.monotonic()
        leftovers = node_tree + coordinator_tree
        while still_running(leftovers) and time.monotonic() - killed < GONE_WITHIN_S:
            time.sleep(0.1)
        left = still_running(leftovers)
        assert not left, f"orphans after {GONE_WITHIN_S:.0f} s: {left}"
        leaked = shm_segments_of(leftovers)
        assert not leaked, f"shared memory left by the killed processes: {leaked}"
    finally:
        node.stop()  # also kills the process group's leftovers when the test failed
        coordinator.stop()


def shm_segments_of(procs: list[ProcId]) -> list[str]:
    """torch's named shared-memory segments (/dev/shm/torch_<pid>_...) made by any of `procs`."""
    pids = {str(p.pid) for p in procs}
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return []
    found = []
    for f in shm.iterdir():
        parts = f.name.split("_")
        if len(parts) >= 2 and parts[0] == "torch" and parts[1] in pids:
            found.append(f.name)
    return sorted(found)


def _tree_of_at_least(proc: Proc, count: int) -> list[ProcId] | None:
    if not proc.alive():
        raise RuntimeError(f"{proc.args[0]} exited early:\n{proc.tail()}")
    found = tree(proc.pid)
    return found if len(found) >= count else None


def _trained(run_dir: Path) -> bool:
    """The coordinator heard a training loss from the node (heartbeats carry it)."""
    status = coordinator_status(run_dir)
    return any(n.get("last_loss") is not None for n in status["nodes"])
