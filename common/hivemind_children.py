"""hivemind's child processes, tied to their parent's life (see lifetime.py).

`LinkedDHT` is a `hivemind.DHT` whose forked process dies with the process that created it.
The p2p daemon (p2pd) that hivemind starts inside the DHT process needs nothing more: measured
here, it exits within 0.1 s of its DHT process being SIGKILLed (tests/test_no_orphans.py checks
the whole tree). torch's shared-memory manager exits once its last client is gone.

Shared memory dies with them too. hivemind makes torch share tensors between its processes by
*named* files in /dev/shm (strategy `file_system`, hivemind/utils/mpfuture.py): a segment is
unlinked only when its last user frees it or torch's shm manager cleans up, so a process tree
killed by SIGKILL or the OOM killer (the manager with it, as a process-group kill does) leaves
its segments for good; GBs for a real preset. Importing this module switches the process to
`file_descriptor`: a segment is unlinked the moment it is made and lives only as open file
descriptors, which the kernel closes however the process dies. Every DHT or averager process is
forked from a process that imported this module, so it inherits the strategy.

Imports hivemind: import this module only where a DHT is started.
"""

from __future__ import annotations

import logging
import os
import resource
from typing import Any

import hivemind
import torch.multiprocessing

from .lifetime import die_with_parent

log = logging.getLogger(__name__)

STRATEGY_ENV = "HIVEMIND_MEMORY_SHARING_STRATEGY"  # hivemind's own knob; set, it is obeyed


def share_memory_by_descriptor() -> str:
    """Make torch share tensors as unlinked segments held by file descriptors (see above), unless
    the environment names a strategy; returns the strategy in force.

    Each shared tensor then holds a descriptor in every process that maps it (hundreds for a real
    preset), so the soft limit on open files is raised to the hard one."""
    strategy = os.environ.get(STRATEGY_ENV, "file_descriptor")
    torch.multiprocessing.set_sharing_strategy(strategy)
    if strategy == "file_descriptor":
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard and hard != resource.RLIM_INFINITY:
            try:
                resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            except (ValueError, OSError) as e:  # a container may refuse: keep the soft limit
                log.debug("open-file limit stays at %d: %s", soft, e)
    return strategy


share_memory_by_descriptor()


class LinkedDHT(hivemind.DHT):
    """A hivemind.DHT whose process (and so its p2p daemon) dies when the creating process dies
    and not of its terminal's signals (its own session)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._creator_pid = os.getpid()  # set before hivemind forks (start=True forks in __init__)
        super().__init__(*args, **kwargs)

    def run(self) -> None:
        die_with_parent(self._creator_pid)
        # Its own session: a terminal's Ctrl-C (SIGINT to the whole foreground process group)
        # must reach the node, which then shuts this process down in order, and not this process
        # and its p2p daemon, which would exit at once under the averager and the shutdown
        # (a traceback on a clean exit). It still dies with its creator (above).
        os.setsid()
        super().run()
