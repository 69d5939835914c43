"""Starting and supervising the keeper child process from `gpt5os-coordinator serve`.

The keeper (node/keeper.py) holds torch and a hivemind peer, so it runs in its own process: the
coordinator's scheduler and store stay torch-free and a keeper crash never takes the gRPC
server down. It is started with `--parent-pid`, so it dies with the coordinator
(PR_SET_PDEATHSIG), and restarted here when it exits on its own (a crash, `kill -9`): it then
loads its newest intact checkpoint and catches up with the swarm.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
STABLE_AFTER_S = 60.0  # a keeper that ran this long resets the backoff
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True, kw_only=True)
class KeeperOptions:
    run_dir: Path
    coordinator: str  # HOST:PORT the keeper reports to
    host: str  # the coordinator's bind address: the keeper's DHT listens there too
    checkpoint_every: int | None = None
    keep_checkpoints: int = 3
    fingerprint: str | None = None  # the coordinator's TLS certificate, pinned

    def args(self) -> list[str]:
        args = [
            sys.executable, "-m", "gpt5os.node.keeper_cli",
            "--dir", str(self.run_dir), "--coordinator", self.coordinator,
            "--keep-checkpoints", str(self.keep_checkpoints),
            "--dht-listen", dht_listen(self.host), "--parent-pid", str(os.getpid()),
        ]  # fmt: skip
        if self.checkpoint_every is not None:
            args += ["--checkpoint-every", str(self.checkpoint_every)]
        if self.fingerprint:
            args += ["--coordinator-fingerprint", self.fingerprint]
        return args


def dht_listen(host: str) -> str:
    """The keeper's hivemind listen address: where the coordinator listens (a host name: all
    interfaces, since nodes elsewhere must reach the keeper; "localhost": loopback)."""
    if host == "localhost":
        return "/ip4/127.0.0.1/tcp/0"
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return "/ip4/0.0.0.0/tcp/0"
    return f"/ip{addr.version}/{host}/tcp/0"


class KeeperSupervisor:
    """Keeps one keeper child running; `poll()` (from the server's tick) restarts it."""

    def __init__(self, options: KeeperOptions) -> None:
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self._started = 0.0
        self._next_start = 0.0
        self._stopping = False

    def start(self) -> None:
        self.proc = subprocess.Popen(self.options.args())  # output: the coordinator's stderr
        self._started = time.monotonic()
        print(
            f"gpt5os-coordinator: keeper started (pid {self.proc.pid})", file=sys.stderr, flush=True
        )

    def poll(self) -> None:
        """Restart the keeper when it exited on its own, with a growing backoff."""
        if self._stopping or self.proc is None or self.proc.poll() is None:
            return
        now = time.monotonic()
        if self._next_start == 0.0:
            if now - self._started >= STABLE_AFTER_S:
                self.restarts = 0
            delay = RESTART_BACKOFF_S[min(self.restarts, len(RESTART_BACKOFF_S) - 1)]
            print(
                f"gpt5os-coordinator: keeper exited with {self.proc.returncode}; restarting in "
                f"{delay:.0f} s",
                file=sys.stderr,
                flush=True,
            )
            self._next_start = now + delay
            return
        if now >= self._next_start:
            self._next_start = 0.0
            self.restarts += 1
            self.start()

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL."""
        self._stopping = True
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
