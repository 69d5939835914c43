"""hivemind's child processes, tied to their parent's life (see lifetime.py).

`LinkedDHT` is a `hivemind.DHT` whose forked process dies with the process that created it, and
whose p2p daemon dies with the DHT process: hivemind starts p2pd with
`asyncio.subprocess.create_subprocess_exec` inside the DHT process (hivemind/p2p/p2p_daemon.py),
so that process passes a `preexec_fn` that sets the daemon's parent-death signal. The daemon is
forked from the DHT process's event-loop thread, which lives as long as that process.

Imports hivemind: import this module only where a DHT is started.
"""

from __future__ import annotations

import asyncio.subprocess
import functools
import os
from typing import Any

import hivemind

from .lifetime import die_with_parent, set_parent_death_signal


def _children_die_with_this_process() -> None:
    """In this process, every subprocess asyncio starts gets our parent-death signal."""
    original = asyncio.subprocess.create_subprocess_exec
    if getattr(original, "_gpt5os_linked", False):
        return

    @functools.wraps(original)
    async def linked(*args: Any, **kwargs: Any):
        kwargs.setdefault("preexec_fn", set_parent_death_signal)
        return await original(*args, **kwargs)

    linked._gpt5os_linked = True  # type: ignore[attr-defined]
    asyncio.subprocess.create_subprocess_exec = linked  # type: ignore[assignment]


class LinkedDHT(hivemind.DHT):
    """A hivemind.DHT whose process and p2p daemon die when the creating process dies."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._creator_pid = os.getpid()  # set before hivemind forks (start=True forks in __init__)
        super().__init__(*args, **kwargs)

    def run(self) -> None:
        die_with_parent(self._creator_pid)
        _children_die_with_this_process()
        super().run()
