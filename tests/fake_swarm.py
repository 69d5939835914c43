"""A stand-in for node.swarm.SwarmPeer in unit tests of the trainer and the keeper: no processes,
no network. Each part records what it was asked and answers what the test scripted."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from types import SimpleNamespace

import torch
from gpt5os.node.claims import RoundClaim
from gpt5os.node.group_average import GroupOutcome


@dataclass
class FakeTracker:
    num_peers: int = 2
    global_epoch: int = 0
    ready_to_update_epoch: bool = False
    updates: list[int] = field(default_factory=list)
    fetches: int = 0  # fetch_now() calls
    peers_after_fetch: int | None = None  # what a fresh fetch finds (None: the same count)

    @property
    def global_progress(self) -> SimpleNamespace:
        return SimpleNamespace(num_peers=self.num_peers, samples_accumulated=0)

    def report_local_progress(self, epoch: int, samples: int) -> None:
        pass

    def fetch_now(self, timeout: float = 5.0) -> bool:
        self.fetches += 1
        if self.peers_after_fetch is not None:
            self.num_peers = self.peers_after_fetch
        return True

    @contextlib.contextmanager
    def pause_updates(self):
        yield

    def update_epoch(self, epoch: int) -> None:
        self.updates.append(epoch)
        self.global_epoch = max(self.global_epoch, epoch)


@dataclass
class FakeGroupAverage:
    outcome: GroupOutcome | None = None
    calls: list[tuple[int, list[torch.Tensor], int]] = field(default_factory=list)
    refused: bool = False  # the sender's guard refused this round's pseudo-gradient
    lr_sums: list[float | None] = field(default_factory=list)

    def run(self, round_number, deltas, tokens, *, cancel, lr_sum=None) -> GroupOutcome:
        self.calls.append((round_number, [d.clone() for d in deltas], tokens))
        self.lr_sums.append(lr_sum)
        assert self.outcome is not None, "the test did not script this round's outcome"
        return self.outcome


@dataclass
class FakeAverager:
    """Serves states by peer id; `served` maps a peer (bytes) to (meta, tensors) or None."""

    served: dict[bytes, tuple[dict, list[torch.Tensor]] | None] = field(default_factory=dict)
    downloads: list[bytes] = field(default_factory=list)
    allow_state_sharing: bool = False
    state_sharing_priority: float = 0.0
    released: int = 0  # release_wire() calls

    def release_wire(self) -> int:
        self.released += 1
        return 0

    def state_sources(self) -> list[bytes]:
        return list(self.served)

    def download_state(self, peer: bytes, timeout: float):
        self.downloads.append(peer)
        return self.served[peer]


@dataclass
class FakeClaims:
    board: dict[bytes, RoundClaim] = field(default_factory=dict)
    published: list[RoundClaim] = field(default_factory=list)

    def publish(self, claim: RoundClaim) -> None:
        self.published.append(claim)

    def fetch(self) -> dict[bytes, RoundClaim]:
        return dict(self.board)


@dataclass
class FakeMembership:
    def announce(self) -> None:
        pass

    def wait_for(self, peers, stop, timeout=600.0) -> bool:
        return True


@dataclass
class FakeSwarmPeer:
    tracker: FakeTracker = field(default_factory=FakeTracker)
    group_average: FakeGroupAverage = field(default_factory=FakeGroupAverage)
    averager: FakeAverager = field(default_factory=FakeAverager)
    claims: FakeClaims = field(default_factory=FakeClaims)
    membership: FakeMembership = field(default_factory=FakeMembership)
    closed: bool = False

    def maddrs(self) -> list[str]:
        return ["/ip4/127.0.0.1/tcp/1"]

    def close(self) -> None:
        self.closed = True
