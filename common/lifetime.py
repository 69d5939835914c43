"""Child processes die with their parent, however the parent dies.

hivemind forks a DHT process and an averager process, and the DHT process starts the p2p daemon
(p2pd, a Go binary). A parent that exits cleanly shuts them down, but one that is SIGKILLed or
OOM-killed cannot: its children used to stay as orphans holding GBs and ports. Linux can send a
child a signal when its parent dies (`prctl(PR_SET_PDEATHSIG)`), so each child asks for SIGKILL
as the first thing it does; the daemons below them exit when their clients go.

The signal fires when the *thread* that forked the child exits, not the process: fork long-lived
children from a thread that lives as long as the process (the main thread, an event loop's).

Linux only; elsewhere these helpers do nothing and say so once in the log.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

_prctl = None
if sys.platform.startswith("linux"):
    try:  # resolved once here: after a fork only the call itself runs
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
        _prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        _prctl.restype = ctypes.c_int
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        _prctl = None


def supported() -> bool:
    """Whether this platform can tie a child's life to its parent's."""
    return _prctl is not None


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Ask the kernel to send `sig` to this process when its parent (thread) dies.

    Safe in a `preexec_fn` (no allocation, no logging); False when unsupported or refused."""
    if _prctl is None:
        return False
    return _prctl(PR_SET_PDEATHSIG, int(sig), 0, 0) == 0


def die_with_parent(parent_pid: int, sig: int = signal.SIGKILL) -> bool:
    """Call first thing in a forked child whose parent is `parent_pid`.

    Also closes the race where the parent died between fork and this call: the child then has
    another parent already, so it sends itself `sig` at once."""
    if not set_parent_death_signal(sig):
        log.warning("cannot tie process %d to its parent's life on this platform", os.getpid())
        return False
    if os.getppid() != parent_pid:
        os.kill(os.getpid(), sig)
    return True
