"""When an outer round starts: after each node's H inner steps, however many nodes there are.

Every peer reports the tokens it trained in its current round through hivemind's ProgressTracker
(a DHT record per peer). hivemind ends an epoch when the *sum* over peers reaches a target, so
with N nodes each would train H/N steps and communication per token would grow with the swarm.
Here a round is due when this node has trained its H steps, or when any peer in the same round
has (the others are ready: a slower node joins with the tokens it trained and its average weight
says so). The sum is still kept: it is the swarm's token count that the learning-rate schedule
reads between rounds.
"""

from __future__ import annotations

from collections.abc import Iterable

import hivemind
from hivemind.optim.progress_tracker import (
    GlobalTrainingProgress,
    LocalTrainingProgress,
    ProgressTracker,
)


def round_due(
    *,
    local_round: int,
    local_tokens: int,
    swarm_round: int,
    round_tokens: int,
    peers: Iterable[tuple[int, int]],
) -> bool:
    """True when this node should enter the averaging of its round.

    :param local_round: the round this node is training (its outer round count)
    :param local_tokens: tokens it trained since its last outer step
    :param swarm_round: the highest round any (non-client) peer reports
    :param round_tokens: tokens of H inner steps (RunSpec.round_tokens)
    :param peers: (round, tokens trained in it) of every peer that reports, self included or not
    """
    if swarm_round > local_round:
        return True  # the swarm is past us: the caller re-syncs instead of averaging
    if local_tokens >= round_tokens:
        return True
    return any(r == local_round and t >= round_tokens for r, t in peers)


class RoundTracker(ProgressTracker):
    """hivemind's ProgressTracker with `ready_to_update_epoch` meaning "some peer trained H steps
    in this round" (`round_due`) instead of "the swarm together trained target_batch_size".

    `target_batch_size` is one node's round in tokens (RunSpec.round_tokens)."""

    def __init__(self, dht: hivemind.DHT, prefix: str, round_tokens: int, **kwargs) -> None:
        # what the latest fetch saw: (round, tokens) of every reporting peer
        self.peer_progress: list[tuple[int, int]] = []
        super().__init__(dht, prefix, target_batch_size=round_tokens, **kwargs)

    @property
    def ready_to_update_epoch(self) -> bool:
        return round_due(
            local_round=self.local_progress.epoch,
            local_tokens=self.local_progress.samples_accumulated,
            swarm_round=self.global_epoch,
            round_tokens=self.target_batch_size,
            peers=self.peer_progress,
        )

    def _parse_swarm_progress_data(self, metadata) -> GlobalTrainingProgress:
        progress = super()._parse_swarm_progress_data(metadata)
        self.peer_progress = peer_rounds(metadata)
        # hivemind's ETA (the sum reaching the target) is not used by ready_to_update_epoch; it
        # only sets the refresh period, which then drops to the minimum once the swarm together
        # trained one node's round: a peer finishing its H steps is seen within ~2 s at worst.
        return progress


def peer_rounds(metadata: object) -> list[tuple[int, int]]:
    """(round, tokens) of every well-formed progress record the tracker fetched from the DHT
    ({subkey: ValueWithExpiration(LocalTrainingProgress as dict)}); malformed ones are skipped."""
    peers = []
    if isinstance(metadata, dict):
        for entry in metadata.values():
            try:
                peer = LocalTrainingProgress.parse_obj(entry.value)
            except Exception:  # a malformed or empty record: a buggy or hostile peer
                continue
            peers.append((peer.epoch, peer.samples_accumulated))
    return peers
