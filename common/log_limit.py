"""At most one log line per peer and decision per interval.

A refusal is logged because a person should see it ("refused peer X in averaging: no token").
A stranger who knocks a thousand times a second must not turn that into a thousand lines a
second, nor grow our memory by rotating peer ids: each key logs at most once per `interval`,
the next line says how many were held back, and only the `max_keys` most recent keys are kept
(an evicted key simply logs again). Pure: the clock is injected, so tests pin it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass


@dataclass
class _Seen:
    logged_at: float
    held_back: int = 0


class LogLimit:
    """`allow(key)`: None to stay quiet, else how many lines for `key` were held back since the
    last one (0 the first time): the caller logs one line, adding that count when it is not 0."""

    def __init__(
        self,
        interval: float = 60.0,
        *,
        max_keys: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval < 0 or max_keys < 1:
            raise ValueError("LogLimit needs interval >= 0 and max_keys >= 1")
        self.interval = interval
        self.max_keys = max_keys
        self._clock = clock
        self._seen: OrderedDict[Hashable, _Seen] = OrderedDict()
        self._lock = threading.Lock()  # peers call in from hivemind's event loop and our threads

    def allow(self, key: Hashable) -> int | None:
        now = self._clock()
        with self._lock:
            seen = self._seen.get(key)
            if seen is not None and now - seen.logged_at < self.interval:
                seen.held_back += 1
                return None
            held_back = 0 if seen is None else seen.held_back
            self._seen[key] = _Seen(logged_at=now)
            self._seen.move_to_end(key)
            while len(self._seen) > self.max_keys:
                self._seen.popitem(last=False)
            return held_back


def held_back_note(count: int) -> str:
    """The suffix a limited line carries: "" or " (and 12 more like it since the last line)"."""
    return "" if count == 0 else f" ({count} more like it since the last line)"
