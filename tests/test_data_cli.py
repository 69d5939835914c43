"""`data prepare` / `data verify` as a person runs them: real subprocesses, exit codes, one-line
errors without tracebacks, and a prepare killed with SIGKILL that resumes to identical bytes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gpt5os.coordinator.data.chunks import TOKENS_DIR
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
    manifest = json.loads((out / "manifest.json").read_text())
    docs = manifest["report"]["documents"]
    assert f"documents: read 3, kept 3 (train {docs['train']}, val {docs['val']})" in res.stdout
    assert docs["train"] >= 1 and docs["val"] >= 1
    # three documents cannot hold the default --val-tokens: said on stderr, in one line
    assert "fewer than --val-tokens 262,145" in res.stderr
    for name in ("non_text 0", "too_short 0", "low_alpha 0", "long_lines 0", "duplicate 0"):
        assert name in res.stdout
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


def _killed_at(out: Path, phase: str) -> bool:
    """Whether the prepare writing `out` is in the middle of `phase`: some tokenized chunks
    durable (tokenize), or some shards journaled (pack)."""
    try:
        if phase == "tokenize":
            return any((out / TOKENS_DIR).glob("*.len"))
        return (out / JOURNAL_NAME).read_bytes().count(b"\n") >= 5
    except OSError:
        return False


@pytest.mark.parametrize("phase", ["tokenize", "pack"])
def test_sigkill_mid_prepare_then_rerun_equals_uninterrupted(tmp_path: Path, phase: str) -> None:
    """SIGKILL a 2-worker prepare mid-pass; the rerun resumes and writes exactly the bytes of an
    uninterrupted 1-worker run (so resume and the worker count both leave the output alone)."""
    args = ["--max-bytes", "1500000", "--shard-tokens", "512", "--val-tokens", "20000"]
    args += ["--no-progress", "--workers", "2", "stdlib"]
    out = tmp_path / "killed"
    proc = subprocess.Popen(
        [*CLI, "prepare", "--out", str(out), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its spawned workers share its process group: killed with it
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not _killed_at(out, phase):
            time.sleep(0.005)
        if proc.poll() is not None:
            pytest.fail(f"prepare ended before it could be killed: {proc.stderr.read()!r}")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the workers, if the kill left any
        proc.stderr.close()
    assert not (out / "manifest.json").exists() and (out / STATE_NAME).exists()
    res = cli("prepare", "--out", str(out), *args, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "resuming an interrupted prepare" in res.stderr
    assert not (out / TOKENS_DIR).exists()
    ref = tmp_path / "ref"
    prepare(
        ["stdlib"],
        ref,
        max_bytes=1_500_000,
        shard_tokens=512,
        val_tokens=20000,
        workers=1,
        progress=False,
    )
    files = sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (ref / rel).read_bytes(), rel


def test_staged_prepare_on_separate_processes_equals_one_run(tmp_path: Path) -> None:
    """The distributed path: scan, then each tokenize task as its own process (as on the
    machines of a Slurm array sharing the folder), then pack: the same bytes as one prepare."""
    rows = tmp_path / "rows.jsonl"
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    with rows.open("w") as f:
        for i in range(700):  # 256 documents a chunk: three chunks
            text = " ".join(words[(i * 7 + j * (i % 5 + 1)) % 12] for j in range(40 + i % 30))
            f.write(json.dumps({"text": f"Row {i}: {text}."}) + "\n")
    args = ["--val-tokens", "2000", "--shard-tokens", "1000", "--no-progress", str(rows)]
    out = tmp_path / "staged"
    assert_one_line_error(
        cli("prepare", "--out", str(out), "--stage", "pack", *args), "holds no scan"
    )
    assert cli("prepare", "--out", str(out), "--stage", "scan", *args).returncode == 0
    tokenize = [*CLI, "prepare", "--out", str(out), "--stage", "tokenize", "--tasks", "2"]
    first = cli(*tokenize[3:], "--task", "0", *args)
    assert first.returncode == 0, first.stderr
    assert_one_line_error(
        cli("prepare", "--out", str(out), "--stage", "pack", *args),
        "1 of 3 chunks are not tokenized yet",
    )
    second = cli(*tokenize[3:], "--task", "1", *args)
    assert second.returncode == 0, second.stderr
    packed = cli("prepare", "--out", str(out), "--stage", "pack", *args)
    assert packed.returncode == 0, packed.stderr
    assert "documents: read 700" in packed.stdout
    ref = tmp_path / "ref"
    prepare([str(rows)], ref, val_tokens=2000, shard_tokens=1000, progress=False)
    files = sorted(p.relative_to(ref) for p in ref.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(out) for p in out.rglob("*") if p.is_file())
    for rel in files:
        assert (out / rel).read_bytes() == (ref / rel).read_bytes(), rel
