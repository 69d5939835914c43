"""Certified rounds: which θ_global every node must hold after a round (pure logic, no I/O).

The keeper's signed report is the certificate; a round the keeper did not report (it was down)
falls back to the digest that a strict majority of the nodes reporting that round hold. A
node's own report never overrides a certificate: a report that disagrees with its round's
certified digest is refused, so a node that trained from a stale or tampered state cannot
merge itself into an old round's record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from gpt5os.proto import pb

KEEPER = "keeper"
MAJORITY = "majority"
CHECKPOINT = "checkpoint"  # round 0 of a run made by `init --from-checkpoint`: the file's digest
KEEPER_LIVE_S = 60.0  # a keeper that reported within this long counts as live
KEEPER_GRACE_S = 15.0  # a finished round waits this long for a live keeper before the majority
# how long the latest certified round may have no live source before the run falls back to the
# keeper's round: longer than a node's hand-over wait is not needed (they left already), but a
# node between heartbeats or a coordinator that just restarted must not trigger it
STUCK_GRACE_S = 30.0


@dataclass(frozen=True)
class Certified:
    round: int
    tokens: int
    params_sha256: str
    source: str  # KEEPER, MAJORITY or CHECKPOINT
    unix: float

    def row(self) -> dict:
        return {
            "round": self.round,
            "tokens": self.tokens,
            "params_sha256": self.params_sha256,
            "source": self.source,
            "unix": self.unix,
        }

    def to_pb(self) -> pb.CertifiedRound:
        return pb.CertifiedRound(
            round=self.round,
            tokens=self.tokens,
            params_sha256=self.params_sha256,
            source=self.source,
        )


@dataclass(frozen=True)
class MajorityVerdict:
    digest: str | None  # None: no strict majority
    votes: int
    voters: int


def majority(digests: Iterable[str]) -> MajorityVerdict:
    """The digest held by more than half of the reporting nodes (empty digests do not vote)."""
    votes = [d for d in digests if d]
    if not votes:
        return MajorityVerdict(None, 0, 0)
    digest, count = Counter(votes).most_common(1)[0]
    if 2 * count > len(votes):
        return MajorityVerdict(digest, count, len(votes))
    return MajorityVerdict(None, count, len(votes))


def majority_due(finished_unix: float, keeper_last_unix: float, now: float) -> bool:
    """Whether a finished, uncertified round should fall back to the nodes' majority now: at
    once when the keeper is not live, else after a grace period for its report to arrive."""
    keeper_live = keeper_last_unix > 0 and now - keeper_last_unix <= KEEPER_LIVE_S
    return not keeper_live or now - finished_unix >= KEEPER_GRACE_S


def report_conflicts(certified: Certified | None, params_sha256: str) -> bool:
    """A node's round report contradicts the round's certificate (and must not be merged)."""
    return (
        certified is not None and bool(params_sha256) and params_sha256 != certified.params_sha256
    )


def continue_from(
    latest: int, keeper_live: bool, keeper_round: int, node_rounds: Iterable[int]
) -> int | None:
    """The round a stuck run must continue from, or None when it is not stuck.

    Stuck: the latest certified round is held by nobody who is live (every node that held it
    left or died, and the keeper missed it), so a joining node could never find a source and
    the keeper could never catch up. Then the newest state a live source can serve is the
    keeper's: the run continues from the keeper's round. `node_rounds`: the outer round of each
    active node in its current session."""
    if not keeper_live or keeper_round >= latest:
        return None
    if any(r >= latest for r in node_rounds):
        return None
    return keeper_round
