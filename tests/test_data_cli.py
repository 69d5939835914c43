"""`data prepare` / `data verify` as a person runs them: real subprocesses, exit codes, one-line
errors without tracebacks, and a prepare killed with SIGKILL that resumes to identical bytes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gpt5os.coordinator.data.prepare import prepare
from gpt5os.coordinator.data.state import JOURNAL_NAME, STATE_NAME

CLI = [sys.executable, "-m", "gpt5os.coordinator.data.cli"]


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def assert_one_line_error(res: subprocess.CompletedProcess[str], *fragments: str) -> None:
    assert res.returncode != 0, res
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), res.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_cli_import_is_torch_free() -> None:
    code = (
        "import sys, gpt5os.coordinator.data.cli as m; "
        "assert m.data.name == 'data'; "
        "assert 'torch' not in sys.modules and 'rwkv' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_bad_inputs_end_with_one_line_and_nonzero_exit(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    assert_one_line_error(
        cli("prepare", "--out", out, str(tmp_path / "missing.txt")),
        "missing.txt: no such file or directory",
    )
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"body": "hello"}\n')
    assert_one_line_error(
        cli("prepare", "--out", out, str(rows)), "rows.jsonl:1: no field 'text'", "--field"
    )
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("hi")
    assert_one_line_error(
        cli("prepare", "--out", out, str(tiny)), "no documents left", "too_short 1"
    )
    bad_gz = tmp_path / "x.gz"
    bad_gz.write_bytes(b"not gzip at all")
    assert_one_line_error(cli("prepare", "--out", out, str(bad_gz)), "x.gz: not a valid gzip file")
    assert_one_line_error(cli("verify", str(tmp_path / "nothing")), "manifest.json not found")
    assert not Path(out).exists()
    # Click's own usage errors: non-zero, no traceback.
    res = cli("prepare", "--out", out, "--val-fraction", "2", "stdlib")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "--val-fraction" in res.stderr


def test_prepare_report_refusal_and_verify(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = cli(
        "prepare", "--out", str(out), "--max-documents", "3", "--shard-tokens", "4096", "stdlib"
    )
    assert res.returncode == 0, res.stderr
    assert "documents: read 3, kept 3 (train 2, val 1)" in res.stdout
    for name in ("non_text 0", "too_short 0", "low_alpha 0", "long_lines 0", "duplicate 0"):
        assert name in res.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    n_train = manifest["report"]["shards"]["train"]
    assert f"shards: train {n_train}, val 1 of 4096 tokens" in res.stdout
    assert_one_line_error(
        cli("prepare", "--out", str(out), "--max-documents", "4", "stdlib"),
        "other options (max_documents, shard_tokens)",
        "--force",
    )
    ok = cli("verify", str(out))
    assert ok.returncode == 0 and f"ok: {n_train + 1} shards" in ok.stdout
    shard = out / manifest["shards"][0]["path"]
    shard.write_bytes(shard.read_bytes()[:-2] + b"\x01\x00")
    bad = cli("verify", str(out))
    assert bad.returncode == 1 and "train-00000: size or sha256 differs" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_sigkill_mid_prepare_then_rerun_equals_uninterrupted(tmp_path: Path) -> None:
    args = ["--max-bytes", "1500000", "--shard-tokens", "512", "--no-progress", "stdlib"]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [*CLI, "prepare", "--out", str(out), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        shards_written = 0
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                shards_written = (out / JOURNAL_NAME).read_bytes().count(b"\n")
            except OSError:
                pass
            if shards_written >= 5:
                break
            time.sleep(0.005)
        if proc.poll() is not None:
            pytest.fail(f"prepare ended before it could be killed: {proc.stderr.read()!r}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        proc.stderr.close()
    assert not (out / "manifest.json").exists() and (out / STATE_NAME).exists()
    res = cli("prepare", "--out", str(out), *args)
    assert res.returncode == 0, res.stderr
    assert "resuming an interrupted prepare" in res.stderr
    ref = tmp_path / "ref"
    prepare(["stdlib"], ref, max_bytes=1_500_000, shard_tokens=512, progress=False)
    files = sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (ref / rel).read_bytes(), rel
