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

import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import hivemind
from hivemind.optim.progress_tracker import (
    GlobalTrainingProgress,
    LocalTrainingProgress,
    ProgressTracker,
)
from hivemind.utils import get_dht_time


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


PUBLISH_EVERY_S = 5.0  # progress that changes nothing for the others goes out at most this often


@dataclass(frozen=True)
class Published:
    """The progress this peer last put in the DHT, and when (time.monotonic())."""

    round: int
    tokens: int
    at: float


def should_publish(
    last: Published | None, round_: int, tokens: int, now: float, round_tokens: int
) -> bool:
    """Whether this progress report must reach the DHT now. hivemind stores every report (every
    inner step: each a signed record sent to every nearby peer, ~110 KB/s per node with two
    nodes measured on a veth). What others act on goes out at once: a new round, a reset, and
    reaching H steps (the round is due for everyone, `round_due`); the token count in between
    only feeds the swarm's token estimate, and goes out every PUBLISH_EVERY_S.

    The first tokens of a round go out at once too: hivemind does not store a record of 0
    samples from a peer that has not yet reported any in the previous round (its reporter's
    `last_report_epoch`), so a node that starts, or re-syncs, is invisible to the others until
    then, and a fast peer that reaches H steps meanwhile would count no one to average with."""
    if last is None or round_ != last.round or tokens < last.tokens:
        return True
    if tokens > 0 and last.tokens == 0:
        return True
    if tokens >= round_tokens > last.tokens:
        return True
    return tokens != last.tokens and now - last.at >= PUBLISH_EVERY_S


def seconds_to_due(
    peers: Iterable[LocalTrainingProgress], local_round: int, round_tokens: int, now: float
) -> float:
    """When the first peer in `local_round` should reach its H steps (`round_tokens`), from what
    it last published and its speed; inf when no peer there trains. (hivemind's own estimate is
    when the swarm *together* trained `round_tokens`, after H / N steps: from then on it would
    fetch at its fastest rate for the rest of the round.)"""
    eta = math.inf
    for p in peers:
        if p.epoch != local_round:
            continue
        done = p.samples_accumulated + max(0.0, now - p.time) * p.samples_per_second
        if done >= round_tokens:
            return 0.0
        if p.samples_per_second > 0:
            eta = min(eta, (round_tokens - done) / p.samples_per_second)
    return eta


class RoundTracker(ProgressTracker):
    """hivemind's ProgressTracker with `ready_to_update_epoch` meaning "some peer trained H steps
    in this round" (`round_due`) instead of "the swarm together trained target_batch_size".

    `target_batch_size` is one node's round in tokens (RunSpec.round_tokens)."""

    def __init__(self, dht: hivemind.DHT, prefix: str, round_tokens: int, **kwargs) -> None:
        # what the latest fetch saw: (round, tokens) of every reporting peer
        self.peer_progress: list[tuple[int, int]] = []
        self.published: Published | None = None
        self._fetches = 0  # completed fetches of the swarm's progress (fetch_now waits on it)
        self._fetched = threading.Condition()
        super().__init__(dht, prefix, target_batch_size=round_tokens, **kwargs)

    def report_local_progress(
        self, local_epoch: int, samples_accumulated: int, update_global_samples: bool = True
    ) -> None:
        """hivemind's (hivemind/optim/progress_tracker.py), except that its reporter thread is
        woken to store the record in the DHT only when `should_publish` says so: the local
        progress is always updated, and hivemind's reporter still re-publishes it every
        metadata_expiration / 2 seconds. (Setting hivemind's event and clearing it after does
        not work: its reporter wakes on the set and stores whatever the flag then says.)"""
        now = time.monotonic()
        if should_publish(
            self.published, local_epoch, samples_accumulated, now, self.target_batch_size
        ):
            self.published = Published(local_epoch, samples_accumulated, now)
            super().report_local_progress(local_epoch, samples_accumulated, update_global_samples)
            return
        extra = samples_accumulated - self.local_progress.samples_accumulated
        same_epoch = local_epoch == self.local_progress.epoch == self.global_progress.epoch
        if update_global_samples and same_epoch:
            self.global_progress.samples_accumulated += extra
        if extra > 0:
            self.performance_ema.update(task_size=extra)
        else:
            self.performance_ema.reset_timer()
        self.local_progress = self._get_local_progress(local_epoch, samples_accumulated)

    def fetch_now(self, timeout: float = 5.0) -> bool:
        """Fetch the swarm's progress now instead of at the next scheduled fetch (up to
        max_refresh_period away); True when one completed within `timeout`. For a decision a
        stale peer count gets wrong: a node that reaches H steps must not step alone because its
        last fetch came before its peers' first records."""
        with self._fetched:
            seen = self._fetches
            self.global_progress.next_fetch_time = get_dht_time()
            self.global_state_updated.set()  # hivemind's fetcher re-reads next_fetch_time
            done = self._fetched.wait_for(lambda: self._fetches > seen, timeout)
        if done:
            with self.lock_global_progress:  # the fetcher assigns global_progress under it
                pass
        return done

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
        entries = peer_entries(metadata)
        self.peer_progress = [(p.epoch, p.samples_accumulated) for p in entries]
        # the next fetch: half the time to the first peer's H steps, between the min and max
        # refresh periods (a peer finishing early is seen within max_refresh_period)
        now = get_dht_time()
        eta = seconds_to_due(entries, self.local_progress.epoch, self.target_batch_size, now)
        delay = min(max(eta / 2, self.min_refresh_period), self.max_refresh_period)
        progress.next_fetch_time = now + delay
        with self._fetched:
            self._fetches += 1
            self._fetched.notify_all()
        return progress


def peer_entries(metadata: object) -> list[LocalTrainingProgress]:
    """Every well-formed progress record the tracker fetched from the DHT ({subkey:
    ValueWithExpiration(LocalTrainingProgress as dict)}); malformed ones are skipped."""
    peers = []
    if isinstance(metadata, dict):
        for entry in metadata.values():
            try:
                peers.append(LocalTrainingProgress.parse_obj(entry.value))
            except Exception:  # a malformed or empty record: a buggy or hostile peer
                continue
    return peers


def peer_rounds(metadata: object) -> list[tuple[int, int]]:
    """(round, tokens) of every well-formed progress record (`peer_entries`)."""
    return [(p.epoch, p.samples_accumulated) for p in peer_entries(metadata)]
