"""LogLimit: one line per key and interval, a count of what was held back, bounded memory."""

from __future__ import annotations

import pytest
from gpt5os.common.log_limit import LogLimit, held_back_note


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_logs_once_per_interval_and_then_says_how_many_were_held_back() -> None:
    clock = Clock()
    limit = LogLimit(60.0, clock=clock)
    assert limit.allow("peer-a") == 0
    assert [limit.allow("peer-a") for _ in range(1000)] == [None] * 1000  # a flood: silent
    assert limit.allow("peer-b") == 0  # another peer is not held back by the first
    clock.now += 59.9
    assert limit.allow("peer-a") is None
    clock.now += 0.1
    assert limit.allow("peer-a") == 1001  # the line a minute later counts the flood
    assert limit.allow("peer-a") is None
    clock.now += 60.0
    assert limit.allow("peer-a") == 1


def test_rotating_keys_cannot_grow_memory_past_max_keys() -> None:
    clock = Clock()
    limit = LogLimit(60.0, max_keys=3, clock=clock)
    for key in range(100):
        assert limit.allow(key) == 0
    assert len(limit._seen) == 3
    assert limit.allow(99) is None  # the most recent keys are still limited
    assert limit.allow(0) == 0  # an evicted key logs again, nothing worse


def test_the_held_back_note_and_bad_settings() -> None:
    assert held_back_note(0) == ""
    assert held_back_note(12) == " (12 more like it since the last line)"
    with pytest.raises(ValueError):
        LogLimit(-1.0)
    with pytest.raises(ValueError):
        LogLimit(max_keys=0)
