"""Retry delays with exponential backoff and jitter, for calls to the coordinator.

After a coordinator restart every node calls again at once; fixed retry delays would keep them
in lockstep, so each delay is drawn at random below an exponentially growing bound ("full
jitter"): attempt n waits uniform(0, min(cap, base * factor**(n-1))]. Pure: the random source is
injected, so tests pin it.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import grpc

T = TypeVar("T")

# Worth another try later: the coordinator is restarting, overloaded, or asked us to slow down.
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.ABORTED,
    }
)


def retryable(code: grpc.StatusCode | None) -> bool:
    return code in RETRYABLE


@dataclass
class Backoff:
    """`delay(n)` for the n-th retry (1-based); `jitter` 1.0 = full jitter, 0.0 = none."""

    base: float = 1.0
    cap: float = 60.0
    factor: float = 2.0
    jitter: float = 1.0
    rng: random.Random = field(default_factory=random.Random)

    def bound(self, attempt: int) -> float:
        return min(self.cap, self.base * self.factor ** max(0, attempt - 1))

    def delay(self, attempt: int) -> float:
        """A delay in (bound * (1 - jitter), bound]."""
        return self.bound(attempt) * (1.0 - self.jitter * self.rng.random())


def retry(
    call: Callable[[], T],
    *,
    should_retry: Callable[[BaseException], bool],
    backoff: Backoff,
    attempts: int,
    sleep: Callable[[float], object] = time.sleep,
    on_retry: Callable[[BaseException, int, float], None] | None = None,
) -> T:
    """`call()` until it returns, raises what `should_retry` refuses, or `attempts` are spent
    (then the last error is raised). `on_retry(error, attempt, delay)` runs before each wait."""
    attempt = 1
    while True:
        try:
            return call()
        except Exception as e:
            if attempt >= attempts or not should_retry(e):
                raise
            delay = backoff.delay(attempt)
            if on_retry is not None:
                on_retry(e, attempt, delay)
            sleep(delay)
            attempt += 1
