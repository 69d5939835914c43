"""The tokenized documents between the tokenize and the pack pass, spilled to disk in chunks.

Shuffling documents before packing needs random access to their tokens; a corpus does not fit
in memory, so each run of consecutive kept documents (a chunk, cut by document count and bytes,
never by worker count) is tokenized by one worker into two files:

    DIR/.prepare-tokens/NNNNNN.tok   uint16 tokens of the chunk's documents, each ending with EOD
    DIR/.prepare-tokens/NNNNNN.len   int64 token count of each document

Both are written atomically, `.len` last: a chunk whose `.len` exists is complete, so a resumed
prepare tokenizes only the chunks that are missing. The folder takes about as much disk as the
shards (2 bytes a token) and is removed once the manifest is written.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from gpt5os.coordinator.data.shards import TOKEN_NP_DTYPE, write_file_atomically

TOKENS_DIR = ".prepare-tokens"
CHUNK_DOCS = 256  # kept documents per chunk (at most)
CHUNK_BYTES = 8 << 20  # or this many bytes of text, whichever comes first
_LEN_DTYPE = np.dtype("<i8")


def chunk_paths(tokens_dir: Path, index: int) -> tuple[Path, Path]:
    return tokens_dir / f"{index:06d}.tok", tokens_dir / f"{index:06d}.len"


def is_done(tokens_dir: Path, index: int) -> bool:
    return chunk_paths(tokens_dir, index)[1].is_file()


def write_chunk(tokens_dir: Path, index: int, docs: list[np.ndarray]) -> int:
    """Write one chunk's documents (token arrays, EOD included); returns its token count."""
    tok, length = chunk_paths(tokens_dir, index)
    lengths = np.array([len(d) for d in docs], dtype=_LEN_DTYPE)
    data = np.concatenate(docs).astype(TOKEN_NP_DTYPE, copy=False) if docs else np.empty(0)
    write_file_atomically(tok, data.astype(TOKEN_NP_DTYPE, copy=False).tobytes())
    write_file_atomically(length, lengths.tobytes())
    return int(lengths.sum())


class ChunkReader:
    """Random access to every kept document's tokens, by its index in reading order."""

    def __init__(self, tokens_dir: Path, n_chunks: int) -> None:
        self.tokens_dir = Path(tokens_dir)
        per_chunk = [
            np.fromfile(chunk_paths(self.tokens_dir, i)[1], dtype=_LEN_DTYPE)
            for i in range(n_chunks)
        ]
        self.lengths = np.concatenate(per_chunk) if per_chunk else np.empty(0, _LEN_DTYPE)
        self._chunk = np.concatenate(
            [np.full(len(lens), i, dtype=np.int64) for i, lens in enumerate(per_chunk)]
            or [np.empty(0, np.int64)]
        )
        self._offset = np.concatenate(
            [np.cumsum(lens) - lens for lens in per_chunk] or [np.empty(0, np.int64)]
        )
        self._open = functools.lru_cache(maxsize=64)(self._map)

    def _map(self, chunk: int) -> np.ndarray:
        path = chunk_paths(self.tokens_dir, chunk)[0]
        if path.stat().st_size == 0:
            return np.empty(0, dtype=TOKEN_NP_DTYPE)
        return np.memmap(path, dtype=TOKEN_NP_DTYPE, mode="r")

    def tokens(self, doc: int) -> np.ndarray:
        start = int(self._offset[doc])
        return self._open(int(self._chunk[doc]))[start : start + int(self.lengths[doc])]
