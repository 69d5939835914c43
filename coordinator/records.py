"""In-memory records of the swarm: nodes, outer rounds and the API error they raise.

Plain dataclasses with the arithmetic that belongs to them (a round's token-weighted mean loss,
a node's cumulative tokens across sessions). The Swarm (swarm.py) owns and persists them.
"""

from __future__ import annotations

import json
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import grpc

NODE_STATES = ("active", "left", "lost", "banned")
NODE_HISTORY_POINTS = 60  # per-node throughput samples kept in memory (GetNode)
NODE_SAMPLE_EVERY_S = 10.0


class ApiError(Exception):
    """A request the coordinator refuses: a gRPC status code and a message a person can act on."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(kw_only=True)
class NodeRecord:
    node_id: str
    public_key: bytes
    token_hash: str
    state: str = "active"
    display_name: str = ""
    device: str = ""
    hostname: str = ""
    software_version: str = ""
    joined_unix: float = 0.0
    last_seen_unix: float = 0.0
    tokens_per_second: float = 0.0
    tokens_trained: int = 0  # credit: tokens of the shards leased to it and completed (swarm.py)
    session_tokens: int = 0  # the node's own counter in its current session (NodeStats): no credit
    last_loss: float | None = None
    outer_round: int = 0
    shards_done: int = 0
    rounds: int = 0
    dht_maddrs: list[str] = field(default_factory=list)
    version: int = 0  # Swarm.version when this record last changed (WatchSwarm deltas)
    throughput: deque[tuple[float, float]] = field(
        default_factory=lambda: deque(maxlen=NODE_HISTORY_POINTS)
    )

    def row(self) -> dict[str, Any]:
        from gpt5os.coordinator.store import NODE_COLUMNS

        return {c: getattr(self, c) for c in NODE_COLUMNS}

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> NodeRecord:
        from gpt5os.coordinator.store import NODE_COLUMNS

        return cls(**{c: row[c] for c in NODE_COLUMNS})

    def stats_row(self) -> tuple[Any, ...]:
        """Store.put_node_stats's row: the heartbeat-driven columns, then node_id."""
        return (
            self.state,
            self.last_seen_unix,
            self.tokens_per_second,
            self.tokens_trained,
            self.session_tokens,
            self.last_loss,
            self.outer_round,
            json.dumps(self.dht_maddrs) if self.dht_maddrs else "[]",
            self.node_id,
        )

    def sample(self, now: float) -> None:
        if not self.throughput or now - self.throughput[-1][0] >= NODE_SAMPLE_EVERY_S:
            self.throughput.append((now, self.tokens_per_second))


@dataclass(kw_only=True)
class RoundAgg:
    """One outer round as the reporting nodes saw it.

    The round is *finished* (its loss point appended, `round_finished` logged) when every node
    named in any report's peer list has reported, when a report for a later round arrives, or
    `settle_s` after its first report. Reports arriving after that still update the round's
    peers, tokens and mean loss, but not its loss point, so the loss history only ever grows.
    """

    round: int
    first_unix: float
    finished_unix: float | None = None
    loss_tokens: int | None = None
    loss: float | None = None
    val_loss: float | None = None
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: int = 0

    @property
    def finished(self) -> bool:
        return self.finished_unix is not None

    @property
    def node_ids(self) -> list[str]:
        return sorted(self.reports)

    @property
    def tokens(self) -> int:
        return sum(r["tokens"] for r in self.reports.values())

    @property
    def mean_loss(self) -> float:
        """Token-weighted mean of the reported losses (plain mean when no tokens reported)."""
        reps = list(self.reports.values())
        if not reps:
            return 0.0
        total = sum(r["tokens"] for r in reps)
        if total == 0:
            return sum(r["mean_loss"] for r in reps) / len(reps)
        return sum(r["tokens"] * r["mean_loss"] for r in reps) / total

    @property
    def mean_val_loss(self) -> float | None:
        vals = [r["val_loss"] for r in self.reports.values() if r.get("val_loss") is not None]
        return sum(vals) / len(vals) if vals else None

    @property
    def duration_s(self) -> float:
        return max((r["duration_s"] for r in self.reports.values()), default=0.0)

    def expected_peers(self) -> set[str]:
        peers: set[str] = set(self.reports)
        for r in self.reports.values():
            peers.update(r["peer_node_ids"])
        return peers

    def all_reported(self) -> bool:
        return self.expected_peers() <= set(self.reports)

    def row(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "first_unix": self.first_unix,
            "finished_unix": self.finished_unix,
            "loss_tokens": self.loss_tokens,
            "loss": self.loss,
            "val_loss": self.val_loss,
        }


def finite(x: float) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)
