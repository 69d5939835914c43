"""Retries with exponential backoff and jitter (common/backoff.py): pure logic, then a node's Join
retried against a real coordinator that asks it to slow down."""

from __future__ import annotations

import asyncio
import random
import threading
from pathlib import Path

import grpc
import pytest
from gpt5os.common.backoff import Backoff, retry, retryable
from gpt5os.coordinator.limits import Limits
from gpt5os.coordinator.server import CoordinatorServer
from gpt5os.coordinator.testkit import make_run
from gpt5os.node.coordinator_client import CoordinatorClient, CoordinatorError
from gpt5os.node.heartbeat import Heartbeat
from gpt5os.node.identity import load_or_create_identity


class Failing(Exception):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)
        self.code = code


def test_bounds_grow_exponentially_up_to_the_cap() -> None:
    b = Backoff(base=1.0, cap=10.0, jitter=0.0)
    assert [b.delay(n) for n in range(1, 7)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_full_jitter_spreads_a_crowd_below_the_bound() -> None:
    crowd = [Backoff(base=1.0, cap=60.0, rng=random.Random(i)) for i in range(1000)]
    for attempt in (1, 3, 6):
        delays = [b.delay(attempt) for b in crowd]
        bound = crowd[0].bound(attempt)
        assert all(0.0 < d <= bound for d in delays)
        buckets = [0] * 10  # roughly uniform: no tenth of the range holds a fifth of the crowd
        for d in delays:
            buckets[min(9, int(10 * d / bound))] += 1
        assert max(buckets) < 200 and min(buckets) > 40
    half = Backoff(base=4.0, jitter=0.5, rng=random.Random(0))
    assert all(2.0 <= half.delay(1) <= 4.0 for _ in range(100))


def test_retry_retries_what_is_retryable_and_gives_up() -> None:
    slept: list[float] = []
    calls = iter(
        [Failing(grpc.StatusCode.UNAVAILABLE), Failing(grpc.StatusCode.RESOURCE_EXHAUSTED), "ok"]
    )

    def call():
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return item

    seen: list[int] = []
    got = retry(
        call,
        should_retry=lambda e: retryable(getattr(e, "code", None)),
        backoff=Backoff(base=1.0, jitter=0.0),
        attempts=5,
        sleep=slept.append,
        on_retry=lambda e, n, d: seen.append(n),
    )
    assert got == "ok" and slept == [1.0, 2.0] and seen == [1, 2]

    def refused():
        raise Failing(grpc.StatusCode.PERMISSION_DENIED)

    slept.clear()
    with pytest.raises(Failing):  # not retryable: raised at once
        retry(refused, should_retry=lambda e: retryable(e.code), backoff=Backoff(),
              attempts=5, sleep=slept.append)  # fmt: skip
    assert slept == []

    def down():
        raise Failing(grpc.StatusCode.UNAVAILABLE)

    with pytest.raises(Failing):
        retry(down, should_retry=lambda e: retryable(e.code),
              backoff=Backoff(jitter=0.0), attempts=3, sleep=slept.append)  # fmt: skip
    assert slept == [1.0, 2.0]  # three attempts, two waits


def test_heartbeat_waits_its_interval_then_backs_off_with_jitter() -> None:
    hb = Heartbeat(None, None, interval_s=5.0, maddrs=list, stop=threading.Event())  # type: ignore[arg-type]
    hb.backoff.rng = random.Random(1)
    assert hb.next_wait(0) == 5.0
    waits = [hb.next_wait(n) for n in (1, 2, 3, 4, 5, 6)]
    assert all(0 < w <= hb.backoff.bound(n) for w, n in zip(waits, range(1, 7), strict=True))
    assert hb.backoff.bound(6) == 60.0  # capped
    assert len({round(w, 6) for w in waits}) == len(waits)


def test_node_join_retries_a_coordinator_that_says_slow_down(tmp_path: Path, monkeypatch) -> None:
    """A real coordinator whose limit refuses the node's second Join with RESOURCE_EXHAUSTED:
    the client backs off (its sleep advances the limiter's clock) and joins on the third try."""
    make_run(tmp_path / "run", n_train=2, n_val=1)
    clock = [0.0]
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> CoordinatorServer:
        srv = CoordinatorServer(tmp_path / "run", port=0,
                                limits=Limits(node_rate=0.1, node_burst=1))  # fmt: skip
        srv.limiter.rates.clock = lambda: clock[0]
        await srv.start()
        return srv

    srv = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
    client = CoordinatorClient(srv.address, load_or_create_identity(tmp_path / "home"))
    try:
        client.join("cpu")  # takes the key's one token
        slept: list[float] = []

        def sleep(d: float) -> None:
            slept.append(d)
            clock[0] += d

        client.sleep = sleep
        client.join_backoff = Backoff(base=4.0, jitter=0.0)
        assert client.join("cpu").node_id
        assert slept == [4.0, 8.0]  # refused at 0 s and 4 s; a token is back after 10 s
        client.join_backoff = Backoff(base=1.0, jitter=0.0)
        monkeypatch.setattr("gpt5os.node.coordinator_client.JOIN_ATTEMPTS", 3)
        slept.clear()
        with pytest.raises(CoordinatorError, match="RESOURCE_EXHAUSTED"):
            client.join("cpu")  # waits of 1 + 2 s: the bucket refills only after 10 s
        assert slept == [1.0, 2.0]
    finally:
        client.close()
        asyncio.run_coroutine_threadsafe(srv.stop(0.1), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()
