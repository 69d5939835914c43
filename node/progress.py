"""What the node has done so far, shared between the trainer (writer) and the heartbeat (reader)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class NodeProgress:
    tokens_trained: int = 0
    last_loss: float = 0.0
    outer_round: int = 0  # rounds completed
    tokens_per_second: float = 0.0
    _window: list[tuple[float, int]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add_step(self, tokens: int, loss: float, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self.tokens_trained += tokens
            self.last_loss = loss
            self._window.append((now, self.tokens_trained))
            while len(self._window) > 2 and now - self._window[0][0] > 30.0:
                self._window.pop(0)
            (t0, n0), (t1, n1) = self._window[0], self._window[-1]
            self.tokens_per_second = (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0
