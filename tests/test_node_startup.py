"""A node that cannot start says why in one line: a run too big for this machine is refused before
anything is allocated, and any failure while hivemind starts ends without a traceback."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from e2e_support import process_env, start_coordinator, tool
from gpt5os.coordinator.testkit import make_run

pytestmark = pytest.mark.timeout(480)


def _join(address: str, home: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("gpt5os-node"), "join", "--coordinator", address, "--device", "cpu",
         "--threads", "1", "--home", str(home), *extra],
        capture_output=True, text=True, timeout=300,
        env=process_env(home, GPT5OS_SKIP_MEMORY_CHECK="0"),
    )  # fmt: skip


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def _serve(tmp_path: Path, preset: str):
    run_dir = tmp_path / f"run-{preset}"
    make_run(run_dir, n_train=2, preset=preset, seq_len=64, batch_size=1)
    return start_coordinator(
        run_dir, tmp_path / "coord", tmp_path / f"coord-{preset}.log", "--no-dht"
    )


def test_join_refuses_a_preset_this_machine_cannot_hold(tmp_path: Path) -> None:
    coordinator, address = _serve(tmp_path, "7b")  # ~7.2 G parameters: > 250 GB on a CPU node
    try:
        line = _one_error_line(_join(address, tmp_path / "node"))
    finally:
        coordinator.stop()
    assert "preset 7b needs" in line and "GiB of RAM" in line, line


def test_a_failure_while_hivemind_starts_is_one_line(tmp_path: Path) -> None:
    coordinator, address = _serve(tmp_path, "tiny")
    try:
        result = _join(address, tmp_path / "node", "--dht-listen", "/ip4/999.1.1.1/tcp/0")
        line = _one_error_line(result)
    finally:
        coordinator.stop()
    # the reachability check (node/reachability.py) is the first to bind the listen address
    assert "cannot listen on /ip4/999.1.1.1/tcp/0" in line, line
