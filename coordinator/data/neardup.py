"""Near-duplicate removal: MinHash signatures over word 5-gram shingles, LSH to find candidates.

Exact dedup (filters.py) only catches byte-identical documents; most duplication in web text and
code is near: a licence header with another year, a vendored file with one line changed, the same
functions in another order. Two documents are near-duplicates when the Jaccard similarity of
their sets of word 5-grams is at least `threshold` (0.8, the usual setting: datatrove's and
FineWeb's MinHash dedup use 5-grams and ~0.75-0.8).

MinHash and LSH come from `rensa` (Rust, no dependencies, ~the speed of a hash per shingle):
`signature` runs in worker processes; `NearDupIndex` runs in one process, over documents in
stream order, so the kept copy is always the first one read, whatever the worker count.
LSH only proposes candidates (16 bands of 8 rows: a pair at Jaccard 0.8 is proposed with
probability ~0.95); a candidate is dropped only when its estimated Jaccard with a kept document
reaches the threshold, so unrelated documents that share a band are never lost.

The index keeps every kept document's signature (128 x 4 bytes): ~0.5 GB per million documents.
Beyond one machine's memory, datatrove's multi-stage MinHash dedup (signatures, buckets, clusters
on disk) is the tool; see the README.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import rensa

_WORD = re.compile(r"\w+")
MINHASH_SEED = 1729  # fixed: signatures must be equal across runs, machines and workers


@dataclass(frozen=True, kw_only=True)
class NearDupConfig:
    """Recorded in the prepared directory's options: changing it changes which documents stay."""

    enabled: bool = True
    threshold: float = 0.8
    ngram: int = 5
    num_perm: int = 128
    num_bands: int = 16

    def validate(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"near-dup threshold must be in (0, 1], got {self.threshold}")
        if self.ngram < 1 or self.num_perm < 1 or self.num_perm % self.num_bands:
            raise ValueError("need ngram >= 1 and num_perm a multiple of num_bands")

    def to_dict(self) -> dict:
        return {**asdict(self), "algorithm": f"rensa-rminhash-{rensa.RMinHash.ALGORITHM_VERSION}"}


def shingles(text: str, ngram: int) -> list[str]:
    """The document's set of word n-grams (lowercased words; punctuation and layout ignored, so
    re-indented or re-wrapped copies still match). A document shorter than n words is one
    shingle."""
    words = _WORD.findall(text.lower())
    if len(words) <= ngram:
        return [" ".join(words)]
    return list({" ".join(words[i : i + ngram]) for i in range(len(words) - ngram + 1)})


def signature(text: str, config: NearDupConfig) -> rensa.RMinHash:
    """The document's MinHash (picklable: computed in a worker, indexed in the main process)."""
    minhash = rensa.RMinHash(num_perm=config.num_perm, seed=MINHASH_SEED)
    minhash.update(shingles(text, config.ngram))
    return minhash


class NearDupIndex:
    """The kept documents' signatures; `is_near_duplicate` answers and, when not, remembers."""

    def __init__(self, config: NearDupConfig) -> None:
        self.config = config
        self._lsh = rensa.RMinHashLSH(
            threshold=config.threshold, num_perm=config.num_perm, num_bands=config.num_bands
        )
        self._kept: list[rensa.RMinHash] = []

    def is_near_duplicate(self, minhash: rensa.RMinHash) -> bool:
        """True when a document already kept is at least `threshold` similar; otherwise the
        document is added to the index (it is the kept copy of its cluster) and False."""
        for key in sorted(self._lsh.query(minhash)):
            if minhash.jaccard(self._kept[key]) >= self.config.threshold:
                return True
        self._lsh.insert(len(self._kept), minhash)
        self._kept.append(minhash)
        return False
