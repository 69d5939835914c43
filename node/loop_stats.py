"""Where the training loop's wall time went: inner steps, or waiting on the swarm.

Utilization is 1 − (time the loop waited on communication) / (the loop's wall time), counted from
the first inner step: outer rounds (matchmaking, the all-reduce, the checks, the outer step, and
what the round does before training resumes) and re-syncs from peers. `gpt5os-node join
--stats-file` writes these figures as JSON when the node leaves (bench/swarm.py reads them).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class LoopStats:
    first_step_at: float | None = None  # wall clock (time.time()) when the first inner step began
    started: float | None = None  # monotonic, same moment
    steps: int = 0
    tokens: int = 0
    step_s: float = 0.0  # inside inner steps
    comm_s: float = 0.0  # the loop waited on outer rounds and re-syncs
    rounds: int = 0
    round_digest: str = ""  # sha256 of θ_global after the last round this node applied
    round: int = 0

    def step_begins(self, now: float | None = None) -> None:
        if self.started is None:
            self.started = time.monotonic() if now is None else now
            self.first_step_at = time.time()

    def wall_s(self, now: float | None = None) -> float:
        if self.started is None:
            return 0.0
        return (time.monotonic() if now is None else now) - self.started

    def utilization(self, now: float | None = None) -> float | None:
        wall = self.wall_s(now)
        if wall <= 0:
            return None
        return max(0.0, 1.0 - self.comm_s / wall)

    def write(self, path: Path) -> None:
        data = asdict(self)
        data.update(wall_s=self.wall_s(), utilization=self.utilization())
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(path)
