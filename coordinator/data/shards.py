"""Cutting one split's token stream into fixed-size shard files, in a way that can resume.

A split (train or val) is the concatenation of its documents' tokens, each document followed by
END_OF_DOCUMENT, cut every `shard_tokens` tokens (the last shard may be shorter). A
`ShardWriter` takes documents in order and writes each full shard atomically (temp file, fsync,
rename). After each shard it knows exactly where the next one starts: (document ordinal, token
offset inside that document). That position, with the shards written so far, is the whole
resume state: a rerun skips every earlier document, drops `offset` tokens of the document at the
position, and continues, producing the same bytes as a run that never stopped.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from gpt5os.coordinator.manifest import ShardInfo

SHARDS_DIR = "shards"
TOKEN_NP_DTYPE = np.dtype("<u2")  # little-endian uint16, the manifest's TOKEN_DTYPE

_NUMBERED = re.compile(r"^(.*):(\d+)(?:-(\d+))?$")


def shard_id(split: str, index: int) -> str:
    return f"{split}-{index:05d}"


@dataclass(kw_only=True)
class SplitState:
    """What is durably done for one split: its shards, and where the next shard starts.

    `next_doc` is an ordinal in the input document stream: documents of this split with a
    smaller ordinal are entirely in `shards`; the document at `next_doc` (if it belongs to this
    split) contributes from token `next_offset` on.
    """

    shards: list[ShardInfo] = field(default_factory=list)
    next_doc: int = 0
    next_offset: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> SplitState:
        return cls(
            shards=[ShardInfo(**s) for s in raw["shards"]],
            next_doc=int(raw["next_doc"]),
            next_offset=int(raw["next_offset"]),
        )


def write_file_atomically(path: Path, data: bytes) -> None:
    """Temp file, fsync, rename: a crash leaves the old file or the new one, never half."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def add_source(sources: list[str], source: str) -> None:
    """Append `source` once; consecutive lines of one file collapse to a range ("a.jsonl:3-9"),
    so a shard of ten thousand short .jsonl documents lists one entry, not ten thousand."""
    if sources:
        last = sources[-1]
        if last == source:
            return
        m_last, m_new = _NUMBERED.match(last), _NUMBERED.match(source)
        if m_last and m_new and m_last.group(1) == m_new.group(1) and m_new.group(3) is None:
            first = int(m_last.group(2))
            end = int(m_last.group(3) or first)
            line = int(m_new.group(2))
            if first <= line <= end:
                return
            if line == end + 1:
                sources[-1] = f"{m_last.group(1)}:{first}-{line}"
                return
    sources.append(source)


class ShardWriter:
    """Writes one split's shards; `on_shard(split, state)` is called after each shard file is
    durable (the caller records the resume position there)."""

    def __init__(
        self,
        *,
        split: str,
        out_dir: Path,
        shard_tokens: int,
        state: SplitState,
        on_shard: Callable[[str, SplitState], None],
    ) -> None:
        self.split = split
        self.out_dir = Path(out_dir)
        self.shard_tokens = shard_tokens
        self.state = state
        self._on_shard = on_shard
        self._buf: list[np.ndarray] = []
        self._buf_len = 0
        self._sources: list[str] = []
        self.tokens = sum(s.tokens for s in state.shards)

    def wants(self, ordinal: int) -> bool:
        """Whether the document at `ordinal` still has tokens this writer has not made durable."""
        return ordinal >= self.state.next_doc

    def skip_for(self, ordinal: int) -> int:
        """How many leading tokens of the document at `ordinal` are already in written shards."""
        return self.state.next_offset if ordinal == self.state.next_doc else 0

    def add(self, ordinal: int, tokens: np.ndarray, source: str) -> None:
        """Append a document's tokens (END_OF_DOCUMENT included), minus any already written."""
        pos = self.skip_for(ordinal)
        n = len(tokens)
        while pos < n:
            take = min(self.shard_tokens - self._buf_len, n - pos)
            self._buf.append(tokens[pos : pos + take])
            self._buf_len += take
            add_source(self._sources, source)
            pos += take
            if self._buf_len == self.shard_tokens:
                self._flush(*((ordinal, pos) if pos < n else (ordinal + 1, 0)))

    def finish(self, end_ordinal: int) -> None:
        """Write the last, possibly shorter, shard."""
        if self._buf_len:
            self._flush(end_ordinal, 0)

    def _flush(self, next_doc: int, next_offset: int) -> None:
        data = np.concatenate(self._buf).astype(TOKEN_NP_DTYPE, copy=False).tobytes()
        sid = shard_id(self.split, len(self.state.shards))
        rel = f"{SHARDS_DIR}/{sid}.bin"
        _write_shard_file(self.out_dir / rel, data)
        self.state.shards.append(
            ShardInfo(
                shard_id=sid,
                split=self.split,
                tokens=self._buf_len,
                size_bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                path=rel,
                sources=self._sources,
            )
        )
        self.tokens += self._buf_len
        self.state.next_doc, self.state.next_offset = next_doc, next_offset
        self._buf, self._buf_len, self._sources = [], 0, []
        self._on_shard(self.split, self.state)


def _write_shard_file(path: Path, data: bytes) -> None:
    # A module-level seam: tests replace it to simulate a crash after k shards.
    write_file_atomically(path, data)
