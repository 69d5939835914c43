"""Which kept documents are held out, and in which order each split's documents are packed.

Pure functions of the documents' digests, their token counts and a seed: the same inputs give
the same split and order on any machine and with any number of workers.

Split: a document's place in the held-out split follows its own hash (the lowest hashes first),
so it does not depend on the order documents arrive in. The split takes every document whose
hash falls below `val_fraction`, then more of the lowest-hash documents until it holds
`val_tokens` tokens (enough for the runs it must serve: run_spec.val_tokens_needed), but never
more than MAX_VAL_SHARE of all tokens, and always leaves training at least one document.

Order: documents are packed into shards in a seeded random permutation, not in reading order.
In reading order a shard is a run of neighbouring files of one package, and a node training
that shard sees one topic for dozens of steps and fits it (issue 13: a training loss of 2.1
against a validation loss of 8). Each split has its own stream of the seed.
"""

from __future__ import annotations

import numpy as np

MAX_VAL_SHARE = 0.5  # val_tokens never takes more than this share of the corpus's tokens
_SPLIT_STREAMS = {"train": 0, "val": 1}


def hash_keys(digests: bytes, digest_bytes: int) -> np.ndarray:
    """The first 8 bytes of each document's digest, as big-endian uint64 (its split hash)."""
    table = np.frombuffer(digests, dtype=np.uint8).reshape(-1, digest_bytes)
    return table[:, :8].copy().view(">u8").ravel().astype(np.uint64)


def choose_validation(
    keys: np.ndarray, lengths: np.ndarray, *, val_fraction: float, val_tokens: int
) -> np.ndarray:
    """A boolean mask over documents: True for the held-out ones (see the module docstring)."""
    n = len(keys)
    held = np.zeros(n, dtype=bool)
    if n < 2 or (val_fraction <= 0 and val_tokens <= 0):
        return held
    by_hash = np.argsort(keys, kind="stable")
    threshold = min(int(val_fraction * 2**64), 2**64 - 1)
    take = int(np.count_nonzero(keys < np.uint64(threshold)))
    if val_tokens > 0:
        cumulative = np.cumsum(lengths[by_hash])
        cap = MAX_VAL_SHARE * float(cumulative[-1])
        # documents it takes to hold val_tokens (all of them when the corpus is smaller)
        reach = min(int(np.searchsorted(cumulative, val_tokens)) + 1, n)
        while reach > take and float(cumulative[reach - 1]) > cap:
            reach -= 1
        take = max(take, reach)
    take = min(max(take, 1), n - 1)
    held[by_hash[:take]] = True
    return held


def packing_order(indices: np.ndarray, *, seed: int, split: str) -> np.ndarray:
    """`indices` (documents of one split, in reading order) in their seeded packing order."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAMS[split]]))
    return indices[rng.permutation(len(indices))]
