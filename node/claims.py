"""Where each peer says which θ_global it holds: (round, digest) per peer in the DHT.

A claim is only an advertisement, never a reason to adopt a state: anyone can write one. A node
that re-syncs asks the peers whose claim matches the certified round first (state_sync.py), and
adopts what it downloads only when its sha256 equals the certified digest.
"""

from __future__ import annotations

from dataclasses import dataclass

import hivemind
from hivemind.utils import get_dht_time

from .dht_records import dht_records

RECORD_TTL_S = 300.0
KEEPER_NODE_ID = "keeper"  # the node_id the keeper claims under (swarm peers are node ids)


@dataclass(frozen=True)
class RoundClaim:
    round: int
    digest: str
    group_size: int
    node_id: str

    @property
    def is_keeper(self) -> bool:
        return self.node_id == KEEPER_NODE_ID


class ClaimBoard:
    """The DHT record of every peer's latest round claim, keyed by its DHT peer id."""

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

    def fetch(self) -> dict[bytes, RoundClaim]:
        """{peer id bytes: claim}; malformed records (a buggy or hostile peer) are skipped."""
        claims = {}
        for subkey, value in dht_records(self.dht, self.key).items():
            try:
                claims[bytes(subkey)] = RoundClaim(
                    round=int(value["round"]),
                    digest=str(value["digest"]),
                    group_size=int(value["group_size"]),
                    node_id=str(value["node_id"]),
                )
            except (TypeError, KeyError, ValueError):
                continue
        return claims
