"""The node's (and the keeper's) swarm token: what it holds, when to ask for a new one, and
handing each new one to the processes that use it (common/swarm_token.py, swarm_auth.py).

The token arrives in the JoinResponse (the keeper's in a KeeperReportResponse); once half its
life has passed, the next heartbeat (keeper report) carries our swarm public key, and the
coordinator answers with a new token, unless it refuses us (banned): then the token runs out
and every other peer stops talking to us.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from gpt5os.common.swarm_auth import SwarmKey
from gpt5os.common.swarm_token import expires_at, needs_renewal
from gpt5os.proto import pb

log = logging.getLogger(__name__)


class SwarmAccess:
    """This peer's key, the coordinator's public key and our current token."""

    def __init__(
        self,
        key: SwarmKey,
        coordinator_public_key: bytes,
        token: pb.SwarmToken,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.coordinator_public_key = coordinator_public_key
        self.clock = clock
        self.token = token
        self.received_at = clock()
        self._lock = threading.Lock()
        self._listeners: list[Callable[[pb.SwarmToken], None]] = []

    @classmethod
    def from_response(
        cls, key: SwarmKey, response: pb.JoinResponse | pb.KeeperReportResponse
    ) -> SwarmAccess | None:
        """From a Join (or keeper hello) answer; None from a coordinator that hands out no
        tokens (an older one: its swarm is unmoderated)."""
        if not response.coordinator_public_key or not response.HasField("swarm_token"):
            log.warning("the coordinator hands out no swarm tokens: the swarm is not moderated")
            return None
        return cls(key, bytes(response.coordinator_public_key), response.swarm_token)

    def token_bytes(self) -> bytes:
        with self._lock:
            return self.token.SerializeToString()

    def wanted(self, margin_s: float = 0.0) -> bytes:
        """Our swarm public key when the token needs renewing (put it in the next heartbeat);
        `margin_s`: renew when less than this is left (the caller's interval, twice)."""
        with self._lock:
            due = needs_renewal(self.token, self.received_at, self.clock(), margin_s)
        return self.key.public_key if due else b""

    def on_renewal(self, listener: Callable[[pb.SwarmToken], None]) -> None:
        self._listeners.append(listener)

    def renewed(self, token: pb.SwarmToken) -> None:
        """Take a new token from the coordinator and hand it to the DHT's process."""
        with self._lock:
            self.token = token
            self.received_at = self.clock()
        for listener in self._listeners:
            try:
                listener(token)
            except Exception as e:  # the DHT is shutting down: the old token runs out
                log.warning("could not hand the renewed swarm token on: %r", e)
        log.debug("swarm token renewed until %.0f", expires_at(token))
