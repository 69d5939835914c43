"""A process and all its descendants, found through /proc (never by name), and a check that
they are gone: tests use it to show that no child outlives its parent."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcId:
    """A pid plus its start time, so a reused pid is not mistaken for the process we saw."""

    pid: int
    start: int
    name: str


def _stat(pid: int) -> tuple[int, int, str, str] | None:
    """(ppid, start time, comm, state) from /proc/PID/stat; None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), int(fields[19]), comm, fields[0]


def tree(root: int) -> list[ProcId]:
    """`root` and every process below it now."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None:
                children.setdefault(stat[0], []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        stat = _stat(pid)
        if stat is None:
            continue
        found.append(ProcId(pid, stat[1], stat[2]))
        todo.extend(children.get(pid, []))
    return found


def still_running(procs: list[ProcId]) -> list[ProcId]:
    """Those of `procs` that still run (zombies, already dead but not reaped, do not count)."""
    left = []
    for p in procs:
        stat = _stat(p.pid)
        if stat is not None and stat[1] == p.start and stat[3] != "Z":
            left.append(p)
    return left
