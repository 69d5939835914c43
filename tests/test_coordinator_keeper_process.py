"""The coordinator keeps one keeper running: a keeper that dies is started again (with a
backoff), and stopping sends SIGTERM first. Real child processes (tiny Python one-liners)."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from gpt5os.coordinator.keeper_process import KeeperOptions, KeeperSupervisor, dht_listen


@dataclass(frozen=True, kw_only=True)
class Scripted(KeeperOptions):
    code: str = ""

    def args(self) -> list[str]:
        return [sys.executable, "-c", self.code]


def options(tmp_path: Path, code: str) -> Scripted:
    return Scripted(run_dir=tmp_path, coordinator="127.0.0.1:1", host="127.0.0.1", code=code)


def poll_until(supervisor: KeeperSupervisor, condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        supervisor.poll()
        time.sleep(0.05)


def test_a_keeper_that_dies_is_started_again(tmp_path: Path) -> None:
    supervisor = KeeperSupervisor(options(tmp_path, "raise SystemExit(3)"))
    supervisor.start()
    first = supervisor.proc
    poll_until(supervisor, lambda: supervisor.proc is not first)
    assert supervisor.restarts == 1 and first.returncode == 3
    supervisor.stop()


def test_stop_terminates_a_running_keeper(tmp_path: Path) -> None:
    supervisor = KeeperSupervisor(options(tmp_path, "import time; time.sleep(600)"))
    supervisor.start()
    supervisor.stop()
    assert supervisor.proc.returncode is not None
    supervisor.poll()  # stopping: no restart
    assert supervisor.restarts == 0


def test_the_keeper_listens_where_the_coordinator_does() -> None:
    assert dht_listen("0.0.0.0") == "/ip4/0.0.0.0/tcp/0"
    assert dht_listen("::1") == "/ip6/::1/tcp/0"
    assert dht_listen("runs.example.org") == "/ip4/0.0.0.0/tcp/0"
    assert dht_listen("localhost") == "/ip4/127.0.0.1/tcp/0"
    args = KeeperOptions(run_dir=Path("r"), coordinator="h:1", host="127.0.0.1").args()
    assert "--parent-pid" in args and "gpt5os.node.keeper_cli" in args
