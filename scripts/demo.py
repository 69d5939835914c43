"""`make demo`: a whole gpt5os run on this machine, no download, no GPU needed.

Starts a coordinator (the embedded default run: the tiny RWKV-7 on the interpreter's standard
library, state in SQLite), two volunteer nodes, and the dashboard in the foreground. Quitting the
dashboard (q) stops everything this script started. The run lives in .demo/ and continues where it
left off next time; `rm -rf .demo` starts over.

Usage: python scripts/demo.py [--dir .demo] [--nodes 2] [--snapshot FILE.svg]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    return str(BIN / name)


class Child:
    """A process we started; stopped with SIGTERM, then SIGKILL, never by name."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]):
        self.name = name
        self.log_path = log
        self._log = open(log, "ab")
        self.popen = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.with_suffix(".pid").write_text(str(self.popen.pid))  # lets a test check it is gone

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, then SIGKILL for the group's leftovers; writes how it ended to `<name>.exit`
        ("0" for a clean leave, another code, or "killed"), so a test can tell a clean exit
        from one the SIGKILL covered up."""
        ended = "" if self.alive() else f"{self.popen.returncode} before it was asked"
        if not ended:
            self.popen.send_signal(signal.SIGTERM)  # the process stops its own children
            try:
                ended = str(self.popen.wait(timeout=timeout))
            except subprocess.TimeoutExpired:
                ended = "killed"
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.popen.wait()
        self._log.close()
        self.log_path.with_suffix(".exit").write_text(ended)
        if ended != "0":
            print(f"demo: {self.name} did not stop cleanly ({ended}); see {self.log_path}")


def _wait(condition, timeout: float, what: str, children: list[Child]) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in children:
            if not child.alive():
                tail = child.log_path.read_text(errors="replace").splitlines()[-20:]
                raise SystemExit(
                    f"demo: {child.name} exited early; its log ({child.log_path}):\n"
                    + "\n".join(tail)
                )
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"demo: timed out waiting for {what}")


def _read_port(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


def _active_nodes(address: str) -> int:
    out = subprocess.run(
        [_tool("gpt5os-coordinator"), "status", "--coordinator", address, "--json"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if out.returncode != 0:
        return 0
    return sum(1 for n in json.loads(out.stdout)["nodes"] if n["state"] == "active")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(".demo"))
    parser.add_argument("--nodes", type=int, default=2)
    parser.add_argument(
        "--snapshot",
        type=Path,
        help="write the dashboard as SVG once both nodes train, then stop all",
    )
    args = parser.parse_args()

    root = args.dir.resolve()
    root.mkdir(parents=True, exist_ok=True)
    port_file = root / "coordinator.port"
    port_file.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    children: list[Child] = []
    try:
        print("demo: starting the coordinator (first run: tokenizing the standard library, ~10 s)")
        coordinator = Child(
            "coordinator",
            [_tool("gpt5os-coordinator"), "serve", "--dir", str(root / "run"), "--host", "127.0.0.1",
             "--port", "0", "--port-file", str(port_file)],
            root / "coordinator.log",
            env,
        )  # fmt: skip
        children.append(coordinator)
        port = _wait(lambda: _read_port(port_file), 300, "the coordinator", children)
        address = f"127.0.0.1:{port}"
        print(f"demo: coordinator on {address}; starting {args.nodes} nodes (logs in {root})")
        threads = max(1, (os.cpu_count() or 2) // max(1, args.nodes))
        for i in range(1, args.nodes + 1):
            home = root / f"node-{i}"
            children.append(
                Child(
                    f"node-{i}",
                    [
                        _tool("gpt5os-node"),
                        "join",
                        "--coordinator",
                        address,
                        "--home",
                        str(home),
                        "--threads",
                        str(threads),
                        "--name",
                        f"demo-{i}",
                    ],
                    root / f"node-{i}.log",
                    env,
                )  # fmt: skip
            )
        dashboard = [_tool("gpt5os-dashboard"), "--coordinator", address]
        if args.snapshot:
            _wait(lambda: _active_nodes(address) >= args.nodes, 300, "the nodes to join", children)
            dashboard += ["--snapshot", str(args.snapshot)]
        return subprocess.run(dashboard).returncode
    except KeyboardInterrupt:
        return 130
    finally:
        print("demo: stopping nodes and coordinator")
        for child in reversed(children):
            child.stop()


if __name__ == "__main__":
    sys.exit(main())
