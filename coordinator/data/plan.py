"""The scan's result (`Plan`), and its copy on disk that lets the passes run as separate jobs.

A plan says, per document read, whether it is kept; per kept document, its digest and source;
and where each tokenize chunk starts (chunks are cut by document count and bytes in reading
order, so the same plan gives the same chunks on any machine). `data prepare --stage scan`
writes it next to the resume state; `--stage tokenize --task i --tasks N` (on N machines sharing
the output folder, e.g. a Slurm array) and `--stage pack` read it instead of scanning again:

    DIR/.prepare-plan.json      counts, fingerprint, chunk starts, sources of kept documents
    DIR/.prepare-plan.bin       one verdict byte per document read, then the kept digests
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from gpt5os.coordinator.data.filters import FILTER_NAMES
from gpt5os.coordinator.data.shards import write_file_atomically

PLAN_JSON = ".prepare-plan.json"
PLAN_BIN = ".prepare-plan.bin"
DROPPED, KEPT = 0, 1  # verdict codes in Plan.verdicts


@dataclass(kw_only=True)
class Plan:
    """What to tokenize, and the counts for the report."""

    # one verdict code per document read, and DIGEST_BYTES per kept document
    verdicts: bytearray = dataclasses.field(default_factory=bytearray)
    digests: bytearray = dataclasses.field(default_factory=bytearray)
    sources: list[str] = dataclasses.field(default_factory=list)  # per kept document
    chunk_starts: list[int] = dataclasses.field(default_factory=list)  # kept index per chunk
    bytes_read: int = 0
    bytes_kept: int = 0
    dropped: dict[str, int] = dataclasses.field(
        default_factory=lambda: dict.fromkeys(FILTER_NAMES, 0)
    )
    fingerprint: str = ""

    @property
    def documents_read(self) -> int:
        return len(self.verdicts)

    @property
    def documents_kept(self) -> int:
        return len(self.sources)

    def chunk_range(self, index: int) -> tuple[int, int]:
        """Kept-document indices [start, end) of chunk `index`."""
        starts = self.chunk_starts
        end = starts[index + 1] if index + 1 < len(starts) else self.documents_kept
        return starts[index], end


def save_plan(out_dir: Path, plan: Plan) -> None:
    """Atomically, binary part first: a plan JSON on disk always has its binary part."""
    write_file_atomically(out_dir / PLAN_BIN, bytes(plan.verdicts) + bytes(plan.digests))
    meta = {k: v for k, v in dataclasses.asdict(plan).items() if k not in ("verdicts", "digests")}
    meta["documents_read"] = plan.documents_read
    write_file_atomically(out_dir / PLAN_JSON, json.dumps(meta, sort_keys=True).encode())


def load_plan(out_dir: Path) -> Plan | None:
    """The plan a `--stage scan` left in `out_dir`, or None when there is none."""
    if not (out_dir / PLAN_JSON).is_file():
        return None
    meta = json.loads((out_dir / PLAN_JSON).read_text())
    n_read = meta.pop("documents_read")
    blob = (out_dir / PLAN_BIN).read_bytes()
    return Plan(verdicts=bytearray(blob[:n_read]), digests=bytearray(blob[n_read:]), **meta)


def remove_plan(out_dir: Path) -> None:
    (out_dir / PLAN_JSON).unlink(missing_ok=True)
    (out_dir / PLAN_BIN).unlink(missing_ok=True)
