"""The shard writer: fixed-size cuts, sources, and resuming after a crash at any shard (pure:
synthetic token arrays, no tokenizer)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from gpt5os.coordinator.data import shards as data_shards
from gpt5os.coordinator.data.shards import ShardWriter, SplitState, add_source
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


class Crash(Exception):
    pass


def make_docs(lengths: list[int]) -> list[np.ndarray]:
    """Document i: tokens 1000*i + 1.. (never 0), then END_OF_DOCUMENT (0)."""
    return [
        np.array([*range(1000 * i + 1, 1000 * i + 1 + n), 0], dtype="<u2")
        for i, n in enumerate(lengths)
    ]


def run(out: Path, docs: list[np.ndarray], shard_tokens: int, state: SplitState) -> SplitState:
    out.joinpath("shards").mkdir(parents=True, exist_ok=True)
    w = ShardWriter(
        split="train", out_dir=out, shard_tokens=shard_tokens, state=state, on_shard=lambda *_: None
    )
    for i, toks in enumerate(docs):
        if w.wants(i):
            w.add(i, toks, f"doc{i}")
    w.finish(len(docs))
    return state


def test_cuts_fixed_size_shards_with_sources(tmp_path: Path) -> None:
    docs = make_docs([3, 10, 1])  # 4 + 11 + 2 = 17 tokens
    state = run(tmp_path, docs, 8, SplitState())
    assert [s.tokens for s in state.shards] == [8, 8, 1]
    assert [s.sources for s in state.shards] == [["doc0", "doc1"], ["doc1", "doc2"], ["doc2"]]
    blob = b"".join((tmp_path / s.path).read_bytes() for s in state.shards)
    assert np.array_equal(np.frombuffer(blob, dtype="<u2"), np.concatenate(docs))
    for s in state.shards:
        data = (tmp_path / s.path).read_bytes()
        assert s.size_bytes == len(data) and s.sha256 == hashlib.sha256(data).hexdigest()
    assert state.shards[0].shard_id == "train-00000" and state.shards[0].path.startswith("shards/")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=12),
    shard_tokens=st.integers(1, 25),
    crash_after=st.integers(0, 30),
)
def test_resume_after_crash_at_any_shard_gives_identical_shards(
    tmp_path_factory: pytest.TempPathFactory,
    lengths: list[int],
    shard_tokens: int,
    crash_after: int,
) -> None:
    docs = make_docs(lengths)
    ref = run(tmp_path_factory.mktemp("ref"), docs, shard_tokens, SplitState())
    out = tmp_path_factory.mktemp("crash")
    saved: dict = {}
    state = SplitState()
    written = 0

    def save(
        split: str, st: SplitState
    ) -> None:  # what prepare persists after each shard (a deep copy via dicts)
        saved["state"] = state.to_dict()

    real = data_shards._write_shard_file

    def crashing(path: Path, data: bytes) -> None:
        nonlocal written
        if written == crash_after:
            real(path, data)  # the shard reached the disk, the state did not: worst case
            raise Crash
        written += 1
        real(path, data)

    out.joinpath("shards").mkdir()
    w = ShardWriter(
        split="train", out_dir=out, shard_tokens=shard_tokens, state=state, on_shard=save
    )
    data_shards._write_shard_file = crashing
    try:
        for i, toks in enumerate(docs):
            w.add(i, toks, f"doc{i}")
        w.finish(len(docs))
        crashed = False
    except Crash:
        crashed = True
    finally:
        data_shards._write_shard_file = real
    resumed = SplitState.from_dict(saved["state"]) if saved else SplitState()
    final = run(out, docs, shard_tokens, resumed) if crashed else state
    assert crashed == (crash_after < len(ref.shards))
    assert final.shards == ref.shards  # ids, token counts, sha256, sources: all identical
    for s in ref.shards:
        assert hashlib.sha256((out / s.path).read_bytes()).hexdigest() == s.sha256


def test_sources_collapse_consecutive_lines() -> None:
    out: list[str] = []
    for s in [
        "a.jsonl:1",
        "a.jsonl:2",
        "a.jsonl:3",
        "a.jsonl:5",
        "b.jsonl:6",
        "b.jsonl:7",
        "b.jsonl:7",
        "stdlib:x.py",
        "stdlib:y.py",
    ]:
        add_source(out, s)
    assert out == ["a.jsonl:1-3", "a.jsonl:5", "b.jsonl:6-7", "stdlib:x.py", "stdlib:y.py"]
