"""hivemind's child processes, tied to their parent's life (see lifetime.py).

`LinkedDHT` is a `hivemind.DHT` whose forked process dies with the process that created it.
The p2p daemon (p2pd) that hivemind starts inside the DHT process needs nothing more: measured
here, it exits within 0.1 s of its DHT process being SIGKILLed (tests/test_no_orphans.py checks
the whole tree). torch's shared-memory manager exits once its last client is gone.

Imports hivemind: import this module only where a DHT is started.
"""

from __future__ import annotations

import os
from typing import Any

import hivemind

from .lifetime import die_with_parent


class LinkedDHT(hivemind.DHT):
    """A hivemind.DHT whose process (and so its p2p daemon) dies when the creating process dies."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._creator_pid = os.getpid()  # set before hivemind forks (start=True forks in __init__)
        super().__init__(*args, **kwargs)

    def run(self) -> None:
        die_with_parent(self._creator_pid)
        super().run()
