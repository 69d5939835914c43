"""Keeping every peer's θ_global the same when a round went differently for different peers.

A round's result must be unique across the swarm, but hivemind cannot promise that: two peers
that reach a round's end while unaware of each other each take the outer step alone, and an
all-reduce that loses a peer mid-way leaves the group with different results. So after every
round each node publishes (round, digest of θ_global, group size) in the DHT, and a node that
finds a peer in the same round with a different θ_global and a better claim adopts that peer's
state. The better claim is the one more peers averaged into; between equal groups, the smaller
digest (arbitrary, but the same choice on every node).
"""

from __future__ import annotations

from dataclasses import dataclass

import hivemind
from hivemind.utils import get_dht_time

from .swarm import dht_records

RECORD_TTL_S = 300.0


@dataclass(frozen=True)
class RoundClaim:
    round: int
    digest: str
    group_size: int
    node_id: str

    def beats(self, other: RoundClaim) -> bool:
        """Whether this claim's state should replace `other`'s (same round, different state)."""
        if self.round != other.round or self.digest == other.digest:
            return False
        if self.group_size != other.group_size:
            return self.group_size > other.group_size
        return self.digest < other.digest


def better_claim(mine: RoundClaim, others: list[RoundClaim]) -> RoundClaim | None:
    """The best claim among `others` that beats `mine`, or None when ours stands."""
    rivals = [c for c in others if c.beats(mine)]
    if not rivals:
        return None
    best = rivals[0]
    for claim in rivals[1:]:
        if claim.beats(best):
            best = claim
    return best


class ClaimBoard:
    """The DHT record of every node's latest round claim."""

    def __init__(self, dht: hivemind.DHT, key: str) -> None:
        self.dht = dht
        self.key = key

    def publish(self, claim: RoundClaim) -> None:
        value = {
            "round": claim.round,
            "digest": claim.digest,
            "group_size": claim.group_size,
            "node_id": claim.node_id,
        }
        self.dht.store(
            self.key,
            subkey=self.dht.peer_id.to_bytes(),
            value=value,
            expiration_time=get_dht_time() + RECORD_TTL_S,
            return_future=True,  # fire and forget: the trainer does not wait on the network
        )

    def fetch(self) -> list[RoundClaim]:
        claims = []
        for value in dht_records(self.dht, self.key).values():
            try:
                claims.append(
                    RoundClaim(
                        round=int(value["round"]),
                        digest=str(value["digest"]),
                        group_size=int(value["group_size"]),
                        node_id=str(value["node_id"]),
                    )
                )
            except (TypeError, KeyError, ValueError):
                continue  # a malformed record from a buggy or hostile peer: ignore it
        return claims
