"""Keeps the node alive at the coordinator: sends stats, extends leases, notices pauses."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import grpc
from gpt5os.common.backoff import Backoff
from gpt5os.proto import pb

from .coordinator_client import CoordinatorClient, CoordinatorError
from .progress import NodeProgress
from .swarm_access import SwarmAccess

log = logging.getLogger(__name__)


class Heartbeat(threading.Thread):
    def __init__(
        self,
        client: CoordinatorClient,
        progress: NodeProgress,
        *,
        interval_s: float,
        maddrs: Callable[[], list[str]],
        stop: threading.Event,
        swarm_access: SwarmAccess | None = None,
    ) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.swarm_access = swarm_access  # renewed through heartbeats when due
        self.client = client
        self.progress = progress
        self.interval_s = max(0.5, interval_s)
        self.maddrs = maddrs
        self.stop_event = stop
        self.paused = False
        self.spec_revision: int | None = None
        self.certified: pb.CertifiedRound | None = None  # the latest round the swarm certified
        self.refused: str | None = None  # why the coordinator will never accept us again
        self.backoff = Backoff(base=self.interval_s, cap=max(60.0, 6 * self.interval_s))

    def beat(self) -> None:
        stats = pb.NodeStats(
            tokens_per_second=self.progress.tokens_per_second,
            tokens_trained=self.progress.tokens_trained,
            last_loss=self.progress.last_loss,
            outer_round=self.progress.outer_round,
            dht_maddrs=self.maddrs(),
        )
        access = self.swarm_access
        if access is None:  # an unmoderated swarm: no token to renew
            response = self.client.heartbeat(stats)
        else:
            response = self.client.heartbeat(
                stats, swarm_public_key=access.wanted(2 * self.interval_s)
            )
            if response.HasField("swarm_token"):
                access.renewed(response.swarm_token)
        if response.paused != self.paused:
            log.info("the coordinator %s leasing", "paused" if response.paused else "resumed")
        self.paused = response.paused
        if self.spec_revision is not None and response.spec_revision != self.spec_revision:
            log.warning(
                "the run spec changed (revision %d -> %d): restart the node to pick it up "
                "(it keeps training with the spec it joined with until then)",
                self.spec_revision,
                response.spec_revision,
            )
        self.spec_revision = response.spec_revision
        if response.HasField("certified"):
            self.certified = response.certified

    def run(self) -> None:
        failures = 0
        while not self.stop_event.wait(self.next_wait(failures)):
            try:
                self.beat()
                failures = 0
            except CoordinatorError as e:
                if getattr(e, "code", None) == grpc.StatusCode.PERMISSION_DENIED:  # banned
                    self.refused = str(e)
                    self.stop_event.set()  # retrying would never help: leave
                    return
                failures += 1
                log.warning(
                    "heartbeat failed (%s); next try in up to %.0f s",
                    e,
                    self.backoff.bound(failures),
                )

    def next_wait(self, failures: int) -> float:
        """The interval while the coordinator answers; after failures, a jittered backoff from
        it, so nodes that lost a restarting coordinator together do not return together."""
        return self.interval_s if failures == 0 else self.backoff.delay(failures)
