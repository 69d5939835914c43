"""Helpers for tests that run real gpt5os processes: each gets its own home, is waited on through
an explicit readiness signal, and is always stopped (terminate, then kill) when the test ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import grpc
from gpt5os.common.channels import PLAINTEXT, ChannelError, Security, open_channel
from gpt5os.common.tls import TlsFiles, fingerprint
from grpc_health.v1 import health_pb2, health_pb2_grpc

BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """Path of one of our console scripts in the running venv."""
    return str(BIN / name)


def process_env(home: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        GPT5OS_HOME=str(home / "gpt5os"),
        OMP_NUM_THREADS="1",
        PYTHONUNBUFFERED="1",
        PYTHONFAULTHANDLER="1",
        # The suite runs many nodes at once on a shared machine: a momentary dip in available
        # RAM must not refuse a tiny node. tests/test_node_startup.py turns the check back on.
        GPT5OS_SKIP_MEMORY_CHECK="1",
    )
    env.update(extra)
    return env


def wait_for(condition: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll `condition` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


class Proc:
    """A child process with its output captured to a log file we can show when a test fails."""

    def __init__(
        self, args: list[str], log_path: Path, env: dict[str, str], cwd: Path | None = None
    ):
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.popen = subprocess.Popen(
            args,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(
                f"{Path(self.args[0]).name} still running after {timeout:.0f} s; its log:\n{self.tail()}"
            ) from None

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM the process (it stops its own children), then SIGKILL its group's leftovers."""
        if self.popen.poll() is None:
            try:
                self.popen.send_signal(signal.SIGTERM)  # the process stops its own children
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)  # stragglers: hivemind's daemons, children
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait(timeout=10)
        self._log.close()

    def kill9(self) -> None:
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)


@contextmanager
def running(args: list[str], log_path: Path, env: dict[str, str]) -> Iterator[Proc]:
    proc = Proc(args, log_path, env)
    try:
        yield proc
    finally:
        proc.stop()


def healthy(address: str, security: Security = PLAINTEXT) -> bool:
    """True once the coordinator's gRPC health service answers SERVING (TLS: `security`)."""
    try:
        with open_channel(address, security, timeout=1.0) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    except (grpc.RpcError, ChannelError):
        return False


def start_coordinator(
    run_dir: Path, home: Path, log_path: Path, *extra: str, host: str = "127.0.0.1"
) -> tuple[Proc, str]:
    """`gpt5os-coordinator serve` on a free port of `host` (--port 0 + --port-file); returns it
    once healthy."""
    port_file = run_dir.parent / f"{run_dir.name}.port"
    port_file.unlink(missing_ok=True)
    args = [
        tool("gpt5os-coordinator"), "serve", "--dir", str(run_dir), "--host", host,
        "--port", "0", "--port-file", str(port_file), *extra,
    ]  # fmt: skip
    proc = Proc(args, log_path, process_env(home))
    try:
        port = wait_for(
            lambda: _read_port(port_file) or _fail_if_dead(proc, "coordinator"),
            120,
            "the coordinator's port file",
        )
        address = f"{host}:{port}"
        tls = TlsFiles.of_run(run_dir)  # `init --tls`: pin the run's own certificate
        security = Security(fingerprint(tls.cert.read_bytes()), True) if tls.exists() else PLAINTEXT
        wait_for(
            lambda: healthy(address, security) or _fail_if_dead(proc, "coordinator"),
            60,
            "coordinator health",
        )
    except BaseException:
        proc.stop()
        raise
    return proc, address


def _read_port(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _fail_if_dead(proc: Proc, name: str) -> None:
    if not proc.alive():
        raise RuntimeError(f"{name} exited with {proc.popen.returncode}:\n{proc.tail()}")
    return None


def coordinator_status(run_dir: Path) -> dict:
    out = subprocess.run(
        [tool("gpt5os-coordinator"), "status", "--dir", str(run_dir), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return json.loads(out.stdout)


def prepare_small_corpus(out: Path) -> Path:
    """A slice of the interpreter's standard library, tokenized into small shards at `out`."""
    subprocess.run(
        [tool("gpt5os-coordinator"), "data", "prepare", "--out", str(out), "--shard-tokens", "4096",
         "--max-documents", "120", "stdlib"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return out


def init_run(run_dir: Path, data: Path, *extra: str, timeout: float = 300) -> None:
    """`gpt5os-coordinator init` of a `tiny` run on `data`, with `extra` options."""
    subprocess.run(
        [tool("gpt5os-coordinator"), "init", "--dir", str(run_dir), "--data", str(data),
         "--preset", "tiny", *extra],
        check=True, capture_output=True, timeout=timeout,
    )  # fmt: skip


def join_node(address: str, home: Path, log_path: Path, *extra: str) -> Proc:
    """`gpt5os-node join` on one CPU thread with its own home, logging to `log_path`."""
    args = [tool("gpt5os-node"), "join", "--coordinator", address, "--device", "cpu",
            "--threads", "1", "--home", str(home), *extra]  # fmt: skip
    return Proc(args, log_path, process_env(home))


@contextmanager
def two_nodes_trained(
    tmp_path: Path,
    data: Path,
    rounds: int,
    init: Sequence[str] = (),
    join: Sequence[str] = (),
) -> Iterator[tuple[Path, list[Proc]]]:
    """A `tiny` run (init options `init`) served from tmp_path/run, and two nodes "a" and "b"
    (join options `join`) that start together and train `rounds` outer rounds: yields the run
    directory and the nodes once both exited 0; the coordinator stops on leaving."""
    run_dir = tmp_path / "run"
    init_run(run_dir, data, *init)
    coordinator, address = start_coordinator(
        run_dir, tmp_path / "coord-home", tmp_path / "coordinator.log"
    )
    nodes: list[Proc] = []
    try:
        for name in ("a", "b"):
            nodes.append(
                join_node(address, tmp_path / f"node-{name}", tmp_path / f"node-{name}.log",
                          "--max-rounds", str(rounds), "--min-peers", "2", *join)
            )  # fmt: skip
        for node in nodes:
            rc = node.wait(timeout=600)
            assert rc == 0, f"node exited with {rc}:\n{node.tail()}"
        yield run_dir, nodes
    finally:
        for node in nodes:
            node.stop()
        coordinator.stop()
