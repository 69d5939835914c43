"""The resume state of an unfinished prepare: a header and an append-only journal of shards.

    DIR/.prepare-state.json     {"format", "key"}: which inputs and options this run is for
    DIR/.prepare-journal.jsonl  one line per durable shard: its ShardInfo and where the next
                                shard of its split starts

Appending one fsynced line per shard keeps the cost per shard constant (rewriting one state file
with every shard so far grows quadratically: tens of thousands of shards on a large corpus). A
crash mid-append leaves a torn last line; loading drops it (and truncates it away) because its
shard is simply written again. Both files disappear when the manifest is written.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

from gpt5os.coordinator.data.shards import SplitState, write_file_atomically
from gpt5os.coordinator.manifest import ShardInfo

STATE_NAME = ".prepare-state.json"
JOURNAL_NAME = ".prepare-journal.jsonl"
STATE_FORMAT = 2
SPLITS = ("train", "val")


class StateError(Exception):
    """The saved state is unreadable or belongs to other inputs/options."""


def start(out_dir: Path, key: dict) -> None:
    """Begin a fresh run: header written, journal empty."""
    (out_dir / JOURNAL_NAME).unlink(missing_ok=True)
    header = json.dumps({"format": STATE_FORMAT, "key": key}, sort_keys=True).encode()
    write_file_atomically(out_dir / STATE_NAME, header)
    write_file_atomically(out_dir / JOURNAL_NAME, b"")


def saved_key(out_dir: Path) -> dict | None:
    """The key of an unfinished run in `out_dir`, or None when there is none."""
    path = out_dir / STATE_NAME
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        if raw.get("format") != STATE_FORMAT:
            raise ValueError(f"state format {raw.get('format')!r} is not {STATE_FORMAT}")
        return dict(raw["key"])
    except (ValueError, KeyError, TypeError) as e:
        raise StateError(f"{path} is unreadable ({e})") from None


def load(out_dir: Path) -> dict[str, SplitState]:
    """Replay the journal into each split's state, dropping (and truncating) a torn last line."""
    states = {name: SplitState() for name in SPLITS}
    path = out_dir / JOURNAL_NAME
    data = path.read_bytes() if path.is_file() else b""
    good = 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            entry = json.loads(line)
            state = states[entry["split"]]
            state.shards.append(ShardInfo(**entry["shard"]))
            state.next_doc, state.next_offset = int(entry["next_doc"]), int(entry["next_offset"])
        except (ValueError, KeyError, TypeError):
            break
        good += len(line)
    if good < len(data):
        with open(path, "r+b") as f:
            f.truncate(good)
            os.fsync(f.fileno())
    return states


def append(out_dir: Path, split: str, state: SplitState) -> None:
    """Record the shard just written for `split` (the last in `state.shards`), durably."""
    entry = {
        "split": split,
        "shard": asdict(state.shards[-1]),
        "next_doc": state.next_doc,
        "next_offset": state.next_offset,
    }
    with open(out_dir / JOURNAL_NAME, "ab") as f:
        f.write(json.dumps(entry, sort_keys=True).encode() + b"\n")
        f.flush()
        os.fsync(f.fileno())


def remove(out_dir: Path) -> None:
    (out_dir / JOURNAL_NAME).unlink(missing_ok=True)
    (out_dir / STATE_NAME).unlink(missing_ok=True)
