"""`data prepare --workers N`: the per-document work of both passes, on N processes.

What runs in a worker is pure per document or per chunk (cleaning, MinHash, tokenizing), and
every decision that depends on other documents (exact and near dedup, the split, the packing
order) is taken in the main process in reading order. Results come back in task order, so the
output is byte-identical for any N. With N = 1 the same functions run in-process, no pool.

Workers are spawned (not forked: the parent may hold threads) and each loads the tokenizer once
(~2.4 s). At most `window` tasks are in flight, so a huge corpus never queues up in memory.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from gpt5os.coordinator.data import chunks
from gpt5os.coordinator.data.filters import FilterConfig, clean, digest_of
from gpt5os.coordinator.data.neardup import NearDupConfig, signature
from gpt5os.coordinator.data.shards import TOKEN_NP_DTYPE
from gpt5os.model.tokenizer import END_OF_DOCUMENT, TOKENIZER_NAME, load_tokenizer

DIGEST_BYTES = 16  # digest prefix kept per document (dedup key, split hash, change check)


class ChangedInput(Exception):
    """A document's text differs between the scan and the tokenize pass."""


@dataclass(frozen=True)
class WorkerConfig:
    filters: FilterConfig
    near_dup: NearDupConfig
    tokenizer: str


@dataclass(frozen=True, slots=True)
class Scanned:
    """One document after cleaning: `dropped_by` or its digest (and MinHash when enabled)."""

    dropped_by: str | None
    digest: bytes = b""
    minhash: Any = None


_config: WorkerConfig | None = None


def _init(config: WorkerConfig) -> None:
    global _config
    _config = config


def scan_batch(datas: list[bytes]) -> list[Scanned]:
    """Clean each document and compute what dedup needs; no cross-document state."""
    assert _config is not None
    out = []
    for data in datas:
        dropped_by, text = clean(data, _config.filters)
        if dropped_by is not None:
            out.append(Scanned(dropped_by))
            continue
        minhash = signature(text, _config.near_dup) if _config.near_dup.enabled else None
        out.append(Scanned(None, digest_of(text)[:DIGEST_BYTES], minhash))
    return out


def tokenize_chunk(task: tuple[int, list[bytes], list[bytes], str]) -> int:
    """Tokenize one chunk of kept documents into its chunk files; returns its token count."""
    assert _config is not None
    index, datas, digests, tokens_dir = task
    tokenizer = (
        load_tokenizer()
        if _config.tokenizer == TOKENIZER_NAME
        else load_tokenizer(_config.tokenizer)
    )
    docs = []
    for data, expected in zip(datas, digests, strict=True):
        _dropped, text = clean(data, _config.filters)
        if digest_of(text)[:DIGEST_BYTES] != expected:
            raise ChangedInput("an input changed while being prepared; run again")
        ids = tokenizer.encode_bytes(text.encode("utf-8"))
        tokens = np.empty(len(ids) + 1, dtype=TOKEN_NP_DTYPE)
        tokens[:-1] = ids
        tokens[-1] = END_OF_DOCUMENT
        docs.append(tokens)
    return chunks.write_chunk(Path(tokens_dir), index, docs)


class Workers:
    """`map(fn, tasks)`: fn over tasks on N processes (or in-process for N = 1), in order."""

    def __init__(self, n: int, config: WorkerConfig) -> None:
        if n < 1:
            raise ValueError(f"workers must be >= 1, got {n}")
        self.n = n
        self._pool = None
        _init(config)  # the in-process path, and the main process's own view of the config
        if n > 1:
            ctx = multiprocessing.get_context("spawn")
            self._pool = ctx.Pool(n, initializer=_init, initargs=(config,))

    def map(self, fn: Callable[[Any], Any], tasks: Iterable[Any]) -> Iterator[Any]:
        if self._pool is None:
            yield from map(fn, tasks)
            return
        window = 4 * self.n
        pending: deque = deque()
        for task in tasks:
            pending.append(self._pool.apply_async(fn, (task,)))
            if len(pending) >= window:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
