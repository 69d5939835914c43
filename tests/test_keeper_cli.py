"""The keeper's command line: what a maintainer can get wrong ends in one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from e2e_support import tool
from gpt5os.coordinator.keeper_auth import (
    KEEPER_PUB_FILE,
    ensure_keeper_key,
    load_keeper_public_key,
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120)


def test_keeper_without_the_runs_key_says_where_it_is_missing(tmp_path: Path) -> None:
    result = run(tool("gpt5os-coordinator"), "keeper", "--dir", str(tmp_path))
    assert result.returncode == 1
    assert "keeper_key.pem not found" in result.stderr and "Traceback" not in result.stderr


def test_keeper_against_no_coordinator_fails_in_one_line(tmp_path: Path) -> None:
    ensure_keeper_key(tmp_path)
    result = run(sys.executable, "-m", "gpt5os.node.keeper_cli", "--dir", str(tmp_path),
                 "--coordinator", "127.0.0.1:1")  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "coordinator at 127.0.0.1:1" in result.stderr and "UNAVAILABLE" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_keeper_key_is_made_once_and_kept(tmp_path: Path) -> None:
    public = ensure_keeper_key(tmp_path)
    assert len(public) == 32 and load_keeper_public_key(tmp_path) == public
    assert ensure_keeper_key(tmp_path) == public  # a second serve does not replace it
    assert (tmp_path / "keeper_key.pem").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / KEEPER_PUB_FILE).exists()
