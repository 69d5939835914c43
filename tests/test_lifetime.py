"""common/lifetime.py: a child that asked to die with its parent does, even when the parent is
SIGKILLed (no hivemind involved: a plain fork, in well under a second)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from gpt5os.common import lifetime
from process_tree import still_running, tree

pytestmark = pytest.mark.skipif(not lifetime.supported(), reason="Linux only")


def _grandchild_after_parent_is_killed(link: bool, wait_s: float) -> list:
    """Fork a parent that forks a sleeping child (linked or not), SIGKILL the parent, and return
    the child if it still runs `wait_s` later."""
    read, write = os.pipe()
    parent = os.fork()
    if parent == 0:  # the parent: start the child, report its pid, wait to be killed
        me = os.getpid()
        child = os.fork()
        if child == 0:
            if link:
                lifetime.die_with_parent(me)
            os.write(write, b"x")
            time.sleep(60)
            os._exit(0)
        time.sleep(60)
        os._exit(0)
    os.read(read, 1)  # the child is up (and linked)
    os.close(read)
    os.close(write)
    procs = tree(parent)
    assert len(procs) == 2
    os.kill(parent, signal.SIGKILL)
    os.waitpid(parent, 0)
    deadline = time.monotonic() + wait_s
    while still_running(procs) and time.monotonic() < deadline:
        time.sleep(0.02)
    left = still_running(procs)
    for p in left:
        os.kill(p.pid, signal.SIGKILL)
    return left


def test_a_linked_child_dies_with_its_killed_parent() -> None:
    assert _grandchild_after_parent_is_killed(link=True, wait_s=5) == []


def test_an_unlinked_child_outlives_its_killed_parent() -> None:
    """The control: what the link prevents."""
    assert len(_grandchild_after_parent_is_killed(link=False, wait_s=1)) == 1


def test_a_parent_gone_before_the_link_is_noticed() -> None:
    pid = os.fork()
    if pid == 0:
        lifetime.die_with_parent(parent_pid=1)  # "my parent was pid 1": it is not, so I go
        os._exit(0)  # not reached
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
