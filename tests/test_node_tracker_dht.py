"""RoundTracker on two real hivemind DHTs on 127.0.0.1: what a peer sees of another that starts.

The case that split the walkthrough's first round: a node re-synced at start (progress 0 tokens,
which hivemind does not store for a peer that never reported samples), then trained; its peer
reached H steps before its next scheduled fetch, saw no one and stepped alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import hivemind
import pytest
from e2e_support import wait_for
from gpt5os.node import rounds
from gpt5os.node.rounds import RoundTracker

pytestmark = pytest.mark.e2e

ROUND_TOKENS = 1000
NEVER = 3600.0  # no scheduled fetch within the test: only fetch_now can refresh


@pytest.fixture
def dhts() -> Iterator[tuple[hivemind.DHT, hivemind.DHT]]:
    first = hivemind.DHT(host_maddrs=["/ip4/127.0.0.1/tcp/0"], start=True)
    second = None
    try:
        maddrs = [str(m) for m in first.get_visible_maddrs()]
        second = hivemind.DHT(
            initial_peers=maddrs, host_maddrs=["/ip4/127.0.0.1/tcp/0"], start=True
        )
        yield first, second
    finally:
        if second is not None:
            second.shutdown()
        first.shutdown()


def _tracker(dht: hivemind.DHT, refresh: float) -> RoundTracker:
    return RoundTracker(
        dht,
        "tracker-test",
        ROUND_TOKENS,
        min_refresh_period=refresh,
        max_refresh_period=refresh,
        default_refresh_period=refresh,
        metadata_expiration=2 * NEVER,  # hivemind re-publishes every half of it
        start=True,
    )


def test_a_starting_peer_is_seen_after_its_first_step_through_a_fresh_fetch(
    dhts, monkeypatch
) -> None:
    # progress in between goes out only on the rules of should_publish, never by the clock here
    monkeypatch.setattr(rounds, "PUBLISH_EVERY_S", NEVER)
    first, second = dhts
    watcher = _tracker(first, NEVER)
    starter = _tracker(second, 0.25)
    try:
        assert watcher.global_progress.num_peers == 0  # its first fetch, made when it started
        starter.report_local_progress(0, 0)  # re-synced at start: hivemind stores nothing yet
        # hivemind's reporter took that one (it reads the progress as it clears the flag)
        wait_for(lambda: not starter.should_report_progress.is_set(), 30, "the reporter")
        starter.report_local_progress(0, 32)  # its first inner step
        wait_for(
            lambda: watcher.fetch_now() and watcher.global_progress.num_peers == 1,
            30,
            "the starting peer in a fresh fetch",
        )
        assert watcher.peer_progress == [(0, 32)]
    finally:
        starter.shutdown()
        watcher.shutdown()
