"""The on-disk format of prepared data: a manifest plus one file of uint16 tokens per shard.

Layout of a data directory (written by `gpt5os-coordinator data prepare`):

    DIR/manifest.json           this file's Manifest, as JSON
    DIR/shards/<shard_id>.bin   little-endian uint16 token ids, documents separated by token 0

The manifest is the contract between the data pipeline (which writes it), the coordinator's
scheduler and server (which lease and stream shards) and the nodes (which check each shard's
sha256). No torch here.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

MANIFEST_FORMAT = 1
MANIFEST_NAME = "manifest.json"
TOKEN_DTYPE = "uint16"  # every World token id fits (vocab 65,536)
BYTES_PER_TOKEN = 2


@dataclass(frozen=True, kw_only=True)
class ShardInfo:
    """One shard: `split` is "train" or "val"; `path` is relative to the data directory."""

    shard_id: str
    split: str
    tokens: int
    size_bytes: int
    sha256: str
    path: str
    sources: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class Manifest:
    tokenizer: str
    shard_tokens: int  # target tokens per shard (the last shard of a split may be shorter)
    shards: list[ShardInfo]
    report: dict = field(default_factory=dict)  # what prepare counted: documents, filters, ...
    format: int = MANIFEST_FORMAT

    @property
    def train(self) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == "train"]

    @property
    def val(self) -> list[ShardInfo]:
        return [s for s in self.shards if s.split == "val"]

    def by_id(self) -> dict[str, ShardInfo]:
        return {s.shard_id: s for s in self.shards}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        if raw.get("format") != MANIFEST_FORMAT:
            raise ValueError(
                f"manifest format {raw.get('format')!r} is not {MANIFEST_FORMAT}; "
                "prepare the data again with this version of gpt5os"
            )
        raw["shards"] = [ShardInfo(**s) for s in raw["shards"]]
        return cls(**raw)


def load_manifest(data_dir: Path) -> Manifest:
    """Read DIR/manifest.json; raises FileNotFoundError or ValueError with an actionable message."""
    path = Path(data_dir) / MANIFEST_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: run `gpt5os-coordinator data prepare --out {data_dir} ...` first"
        )
    return Manifest.from_json(path.read_text())


def save_manifest(data_dir: Path, manifest: Manifest) -> Path:
    """Write the manifest atomically (temp file, fsync, rename) so a crash never leaves half of it."""
    path = Path(data_dir) / MANIFEST_NAME
    tmp = path.with_suffix(".json.tmp")
    with open(tmp, "w") as f:
        f.write(manifest.to_json())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path
