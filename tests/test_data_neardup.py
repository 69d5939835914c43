"""Near-duplicate removal: MinHash LSH units, and a planted corpus through the real prepare."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from gpt5os.coordinator.data.neardup import NearDupConfig, NearDupIndex, shingles, signature
from gpt5os.coordinator.data.prepare import prepare
from gpt5os.model.tokenizer import load_tokenizer

CONFIG = NearDupConfig()


def document(seed: int, lines: int = 30) -> list[str]:
    """Lines of 8-12 random made-up words: two documents share almost no 5-gram."""
    rng = random.Random(seed)

    def word() -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 8)))

    return [" ".join(word() for _ in range(rng.randint(8, 12))) + "." for _ in range(lines)]


def one_word_changed(lines: list[str]) -> list[str]:
    out = list(lines)
    words = out[12].split()
    words[3] = "changed"
    out[12] = " ".join(words)
    return out


def lines_reordered(lines: list[str]) -> list[str]:
    out = list(lines)
    out[4], out[20] = out[20], out[4]
    return out


def test_shingles_ignore_case_punctuation_and_layout() -> None:
    a = shingles("def f(x):\n    return x + 1", 2)
    b = shingles("DEF f( x ):  return X+1", 2)
    assert sorted(a) == sorted(b)
    assert shingles("two words", 5) == ["two words"]


def sig(lines: list[str]):
    return signature("\n".join(lines), CONFIG)


def test_index_keeps_the_first_copy_and_drops_close_ones_only() -> None:
    index = NearDupIndex(CONFIG)
    base = document(1)
    assert not index.is_near_duplicate(sig(base))
    assert index.is_near_duplicate(sig(one_word_changed(base)))
    assert index.is_near_duplicate(sig(lines_reordered(base)))
    half = base[:15] + document(2)[15:]  # shares half its lines: Jaccard ~0.3, not a copy
    assert not index.is_near_duplicate(sig(half))
    assert not index.is_near_duplicate(sig(document(3)))


def test_planted_near_duplicates_are_removed_keeping_one_of_each(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    originals = {}
    for i in range(8):
        lines = document(100 + i)
        originals[i] = "\n".join(lines)
        # sorted reading order: a_ (the original) first, so it is the copy kept
        (corpus / f"a_{i}.txt").write_text(originals[i])
        (corpus / f"b_{i}.txt").write_text("\n".join(one_word_changed(lines)))
        (corpus / f"c_{i}.txt").write_text("\n".join(lines_reordered(lines)))
    m = prepare([str(corpus)], tmp_path / "out", val_tokens=0, val_fraction=0.0, progress=False)
    assert m.report["dropped"]["near_duplicate"] == 16
    assert m.report["documents"]["kept"] == 8
    assert sorted({src for s in m.shards for src in s.sources}) == sorted(
        str(corpus / f"a_{i}.txt") for i in range(8)
    )
    tokens = np.concatenate([np.fromfile(tmp_path / "out" / s.path, dtype="<u2") for s in m.shards])
    cuts = np.flatnonzero(tokens == 0)
    tok = load_tokenizer()
    docs = [
        tok.decode(tokens[a + 1 : b].tolist()) for a, b in zip([-1, *cuts[:-1]], cuts, strict=True)
    ]
    assert sorted(docs) == sorted(originals.values())

    off = prepare(
        [str(corpus)],
        tmp_path / "off",
        val_tokens=0,
        val_fraction=0.0,
        near_dup=False,
        progress=False,
    )
    assert off.report["documents"]["kept"] == 24 and off.report["dropped"]["near_duplicate"] == 0
