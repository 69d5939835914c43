"""prepare() end to end with the real World tokenizer, in-process (it loads once, ~2.4 s):
formats, report counts, round trip of the tokens, determinism, resume, refusals, the val split."""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path

import numpy as np
import pytest
from gpt5os.coordinator.data import shards as data_shards
from gpt5os.coordinator.data.filters import FILTER_NAMES, normalize
from gpt5os.coordinator.data.prepare import PrepareError, prepare
from gpt5os.coordinator.data.sources import DataSourceError
from gpt5os.coordinator.data.state import STATE_NAME
from gpt5os.coordinator.manifest import Manifest, load_manifest
from gpt5os.model.tokenizer import load_tokenizer

WORDS = "river stone quiet lamp orbit garden signal copper window thunder paper maple".split()


def prose(seed: int, sentences: int = 12) -> str:
    rng = random.Random(seed)
    lines = [
        f"Note {seed}.{i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 14))) + "."
        for i in range(sentences)
    ]
    return "\n".join(lines) + "\n"


@pytest.fixture
def corpus(tmp_path: Path) -> dict:
    """A directory with good documents and one of each kind of junk, a .jsonl and a gzip file."""
    d = tmp_path / "corpus"
    (d / "sub").mkdir(parents=True)
    good = {}
    for i in range(12):
        p = d / ("sub" if i % 3 == 0 else ".") / f"doc{i:02d}.txt"
        p.write_text(prose(i))
        good[str(p)] = prose(i)
    (d / "dup.txt").write_text(prose(3).replace("\n", "  \r\n"))  # same after normalization
    (d / "short.txt").write_text("tiny")
    (d / "blob.bin").write_bytes(bytes(range(256)) * 8)
    (d / "numbers.txt").write_text("0.125 3.75 99.5 12.0 7.25 " * 40)
    (d / "minified.txt").write_text(prose(100) + "var " + "a=1;" * 800 + "\n")
    jsonl = tmp_path / "extra.jsonl"
    rows = [{"body": prose(200 + i), "id": i} for i in range(5)]
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    gz = tmp_path / "notes.txt.gz"
    gz.write_bytes(gzip.compress(prose(300).encode()))
    expected = (
        list(good.values()) + [r["body"] for r in rows] + [prose(300)]
    )  # every kept document, in any order
    return {"inputs": [str(d), str(jsonl), str(gz)], "expected": expected, "field": "body"}


def split_documents(out: Path, manifest: Manifest, split: str) -> list[str]:
    """Decode a split's shards back into documents (token 0 separates them)."""
    shards = [s for s in manifest.shards if s.split == split]
    blob = b"".join((out / s.path).read_bytes() for s in shards)
    tokens = np.frombuffer(blob, dtype="<u2")
    assert len(tokens) == 0 or tokens[-1] == 0
    cuts = np.flatnonzero(tokens == 0)
    tok = load_tokenizer()
    docs, start = [], 0
    for end in cuts:
        docs.append(tok.decode(tokens[start:end].tolist()))
        start = end + 1
    return docs


def tree_bytes(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def run(corpus: dict, out: Path, **kw) -> Manifest:
    kw.setdefault("shard_tokens", 256)
    kw.setdefault("val_fraction", 0.2)
    kw.setdefault("val_tokens", 0)  # the split by hash alone (val_tokens: test_data_order.py)
    return prepare(corpus["inputs"], out, field=corpus["field"], progress=False, **kw)


def test_mixed_inputs_report_and_token_round_trip(corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    m = run(corpus, out)
    r = m.report
    assert r["dropped"] == {
        "non_text": 1,
        "too_short": 1,
        "low_alpha": 1,
        "long_lines": 1,
        "duplicate": 1,
        "near_duplicate": 0,
    }
    assert set(r["dropped"]) == set(FILTER_NAMES)
    kept = len(corpus["expected"])
    assert r["documents"] == {
        "read": kept + 5,
        "kept": kept,
        "train": r["documents"]["train"],
        "val": r["documents"]["val"],
    }
    assert r["documents"]["train"] + r["documents"]["val"] == kept and r["documents"]["val"] >= 1
    # Every kept document comes back exactly once, across the two splits, normalized.
    train, val = split_documents(out, m, "train"), split_documents(out, m, "val")
    assert len(train) == r["documents"]["train"] and len(val) == r["documents"]["val"]
    assert sorted(train + val) == sorted(normalize(t) for t in corpus["expected"])
    # Fixed-size shards, the last of each split shorter or equal; files match the manifest.
    for split in ("train", "val"):
        sizes = [s.tokens for s in m.shards if s.split == split]
        assert sizes and all(n == 256 for n in sizes[:-1]) and 1 <= sizes[-1] <= 256
        assert r["tokens"][split] == sum(sizes) and r["shards"][split] == len(sizes)
    for s in m.shards:
        data = (out / s.path).read_bytes()
        assert len(data) == s.size_bytes == 2 * s.tokens
        assert hashlib.sha256(data).hexdigest() == s.sha256
        assert s.sources
    sources = {src for s in m.shards for src in s.sources}
    assert any(src.startswith(corpus["inputs"][1] + ":") for src in sources)  # jsonl lines
    assert corpus["inputs"][2] in sources
    assert not (out / STATE_NAME).exists()
    assert load_manifest(out).to_json() == m.to_json()


def test_same_inputs_give_byte_identical_output(corpus: dict, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    run(corpus, a)
    run(corpus, b)
    assert tree_bytes(a) == tree_bytes(b)
    assert "time" not in (a / "manifest.json").read_text()
    # Running again into a finished directory changes nothing and returns the same manifest.
    again = run(corpus, a)
    assert again.to_json() == load_manifest(b).to_json() and tree_bytes(a) == tree_bytes(b)


@pytest.mark.parametrize("crash_after", [0, 3, 7])
def test_resume_after_interruption_matches_uninterrupted(
    corpus: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash_after: int
) -> None:
    ref = tmp_path / "ref"
    run(corpus, ref)
    out = tmp_path / "out"
    real = data_shards._write_shard_file
    calls = 0

    def crash(path: Path, data: bytes) -> None:
        nonlocal calls
        if calls == crash_after:
            real(path, data)  # the shard is on disk but the state does not know it yet
            raise KeyboardInterrupt
        calls += 1
        real(path, data)

    monkeypatch.setattr(data_shards, "_write_shard_file", crash)
    with pytest.raises(KeyboardInterrupt):
        run(corpus, out)
    monkeypatch.setattr(data_shards, "_write_shard_file", real)
    assert (out / STATE_NAME).exists() and not (out / "manifest.json").exists()
    notes: list[str] = []
    run(corpus, out, log=notes.append)
    assert notes and notes[0].startswith("resuming an interrupted prepare")
    assert f"{crash_after} shards already written" in notes[0]
    assert tree_bytes(out) == tree_bytes(ref)


def test_refuses_other_options_or_inputs_unless_forced(corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    run(corpus, out)
    before = tree_bytes(out)
    with pytest.raises(PrepareError, match=r"other options \(shard_tokens\).*--force"):
        run(corpus, out, shard_tokens=300)
    with pytest.raises(PrepareError, match="other inputs"):
        prepare(corpus["inputs"][:2], out, field="body", progress=False, shard_tokens=256)
    first = Path(corpus["inputs"][0]) / "doc01.txt"
    first.write_text(prose(1) + "An edit.\n")
    with pytest.raises(PrepareError, match="input contents"):
        run(corpus, out)
    assert tree_bytes(out) == before  # a refused run changes nothing
    forced = run(corpus, out, force=True)
    fresh = tmp_path / "fresh"
    run(corpus, fresh)
    assert tree_bytes(out) == tree_bytes(fresh) and forced.report["documents"]["kept"] > 0


def test_interrupted_state_with_other_options_is_refused(
    corpus: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"

    def crash(path: Path, data: bytes) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(data_shards, "_write_shard_file", crash)
    with pytest.raises(OSError):
        run(corpus, out)
    monkeypatch.undo()
    with pytest.raises(PrepareError, match=r"interrupted prepare of other options \(val_fraction"):
        run(corpus, out, val_fraction=0.5)
    assert run(corpus, out, val_fraction=0.5, force=True).report["options"]["val_fraction"] == 0.5


def test_val_split_is_by_document_not_by_order(corpus: dict, tmp_path: Path) -> None:
    m1 = run(corpus, tmp_path / "a")
    reordered = dict(corpus, inputs=list(reversed(corpus["inputs"])))
    m2 = run(reordered, tmp_path / "b")
    val1 = split_documents(tmp_path / "a", m1, "val")
    val2 = split_documents(tmp_path / "b", m2, "val")
    assert sorted(val1) == sorted(val2) and val1
    # A document's split does not move when other documents join the corpus.
    more = tmp_path / "more"
    more.mkdir()
    for i in range(20):
        (more / f"m{i}.txt").write_text(prose(500 + i))
    m3 = run(dict(corpus, inputs=corpus["inputs"] + [str(more)]), tmp_path / "c")
    val3 = set(split_documents(tmp_path / "c", m3, "val"))
    train3 = set(split_documents(tmp_path / "c", m3, "train"))
    assert set(val1) <= val3 and not set(val1) & train3


def test_stdlib_small_corpus_has_train_and_val(tmp_path: Path) -> None:
    m = prepare(["stdlib"], tmp_path / "out", max_documents=4, val_tokens=0, progress=False)
    assert m.report["documents"]["kept"] == 4 and m.report["documents"]["val"] == 1
    assert len(m.val) == 1 and len(m.train) >= 1
    assert all(src.startswith("stdlib:") for s in m.shards for src in s.sources)
    assert m.shard_tokens == 65536 and m.tokenizer == "rwkv-world-v20230424"
    none = prepare(
        ["stdlib"],
        tmp_path / "noval",
        max_documents=4,
        val_fraction=0.0,
        val_tokens=0,
        progress=False,
    )
    assert not none.val and none.report["tokens"]["total"] == m.report["tokens"]["total"]


def test_max_bytes_stops_early(corpus: dict, tmp_path: Path) -> None:
    m = run(corpus, tmp_path / "out", max_bytes=1000)
    assert 1000 <= m.report["bytes"]["kept"] < 1000 + len(prose(0)) * 2
    assert m.report["documents"]["kept"] < len(corpus["expected"])


def test_bad_inputs_fail_before_touching_the_output(corpus: dict, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with pytest.raises(DataSourceError, match="no such file"):
        prepare(["stdlib", str(tmp_path / "missing")], out, progress=False)
    junk = tmp_path / "junk.txt"
    junk.write_text("x")
    with pytest.raises(PrepareError, match="no documents left after the filters: read 1"):
        prepare([str(junk)], out, progress=False)
    with pytest.raises(DataSourceError, match="no field 'text'"):
        prepare(corpus["inputs"], out, progress=False)
    assert not out.exists()
    with pytest.raises(ValueError, match="val_fraction"):
        prepare(["stdlib"], out, val_fraction=1.0, progress=False)


def test_any_worker_count_gives_byte_identical_output(corpus: dict, tmp_path: Path) -> None:
    one = run(corpus, tmp_path / "one", workers=1, val_tokens=1000)
    two = run(corpus, tmp_path / "two", workers=2, val_tokens=1000)
    assert tree_bytes(tmp_path / "one") == tree_bytes(tmp_path / "two")
    assert one.to_json() == two.to_json()
    assert "workers" not in one.report["options"]


def test_documents_are_packed_in_seeded_order(corpus: dict, tmp_path: Path) -> None:
    a = run(corpus, tmp_path / "a", seed=0, val_fraction=0.0)
    b = run(corpus, tmp_path / "b", seed=1, val_fraction=0.0)
    assert a.report["options"]["seed"] == 0 and b.report["options"]["seed"] == 1
    docs_a = split_documents(tmp_path / "a", a, "train")
    docs_b = split_documents(tmp_path / "b", b, "train")
    assert sorted(docs_a) == sorted(docs_b)  # the same documents ...
    assert docs_a != docs_b  # ... in another order
    reading = [normalize(t) for t in corpus["expected"]]  # the directory's sorted order
    assert [d for d in docs_a if d in reading] != [d for d in reading if d in docs_a]
