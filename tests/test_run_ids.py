"""Run ids and what is derived from them (DHT and averager prefixes) are valid for every preset
and for any id a maintainer types, or refused at `init` with one line before anything is written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from gpt5os.coordinator.run_spec import PRESETS, check_run_id, default_run_id, dht_prefix
from gpt5os.coordinator.runs import create_run
from gpt5os.coordinator.testkit import make_data_dir
from gpt5os.node.swarm import swarm_prefix
from hypothesis import given
from hypothesis import strategies as st

HIVEMIND_PREFIX = re.compile(r"[^.]+")  # DecentralizedAverager asserts '.' not in prefix


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_default_run_id_makes_usable_prefixes(preset: str) -> None:
    run_id = default_run_id(preset, "3fa2c1d0")
    check_run_id(run_id)
    prefix = swarm_prefix(dht_prefix(run_id), run_id)
    assert HIVEMIND_PREFIX.fullmatch(f"{prefix}_diloco")


@given(st.text(max_size=80))
def test_any_typed_run_id_is_refused_or_safe(run_id: str) -> None:
    try:
        check_run_id(run_id)
    except ValueError as e:
        assert "run id" in str(e)
        return
    assert re.fullmatch(r"[A-Za-z0-9_-]+", dht_prefix(run_id))
    assert not run_id.startswith((".", "-")) and "/" not in run_id  # a safe file-name part


@given(st.text(max_size=40), st.text(max_size=40))
def test_prefixes_keep_run_ids_apart(a: str, b: str) -> None:
    if a != b:
        assert dht_prefix(a) != dht_prefix(b)


@pytest.mark.parametrize("bad", ["", "../etc", "-rf", ".hidden", "a/b", "a b", "x" * 65, "ü"])
def test_bad_run_ids_are_refused_before_anything_is_written(tmp_path: Path, bad: str) -> None:
    make_data_dir(tmp_path / "data", n_train=1)
    with pytest.raises(ValueError, match="run id"):
        create_run(tmp_path / "run", tmp_path / "data", run_id=bad)
    assert not (tmp_path / "run").exists()


def test_node_refuses_a_prefix_hivemind_would_crash_on() -> None:
    with pytest.raises(ValueError, match="DHT prefix"):
        swarm_prefix("gpt5os/0.1b-x", "0.1b-x")
    assert swarm_prefix("", "tiny-1") == "gpt5os_tiny-1"


def test_init_refuses_a_bad_run_id_with_one_line(tmp_path: Path) -> None:
    make_data_dir(tmp_path / "data", n_train=1)
    result = subprocess.run(
        [str(Path(sys.executable).with_name("gpt5os-coordinator")), "init", "--dir",
         str(tmp_path / "run"), "--data", str(tmp_path / "data"), "--run-id", "my run/1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "run id 'my run/1' is not valid" in lines[0], result.stderr
    assert not (tmp_path / "run").exists()
