"""`gpt5os-dashboard` as a process: --snapshot against a real coordinator, and bad input.

The coordinator runs in-process (in this test's event loop) while the dashboard CLI runs as a
real subprocess; everything started is stopped in `finally`.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from pathlib import Path

import pytest
from gpt5os.coordinator.testkit import aio_channel
from gpt5os.dashboard.swarm_view import format_count
from gpt5os.proto import pb_grpc
from test_dashboard_support import ApiNode, make_run, start_server

pytestmark = pytest.mark.timeout(120)

CLI = [sys.executable, "-m", "gpt5os.dashboard.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def run_cli(*args: str, timeout: float = 90.0) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return proc.returncode, out.decode(), err.decode()


async def test_snapshot_writes_an_svg_of_the_live_run(tmp_path: Path) -> None:
    server = await start_server(make_run(tmp_path))
    try:
        async with aio_channel(server.address) as channel:
            node = await ApiNode(pb_grpc.CoordinatorStub(channel), "frank", "cpu").join()
            await node.heartbeat(1234.0, 777_000, 5.5)  # a claim: the credit is the shard
            lease = await node.train_one_shard(5.5)
        out = tmp_path / "dash.svg"
        code, stdout, stderr = await run_cli(
            "--coordinator", server.address, "--snapshot", str(out), "--snapshot-timeout", "60"
        )
        assert code == 0, stderr
        svg = out.read_text()
        assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
        # SVG text uses &#160; for spaces: check words that have none
        for word in ("dash-test", "frank", node.node_id[:8], format_count(lease.tokens)):
            assert word in svg, word
    finally:
        await server.stop(grace=0.1)


async def test_snapshot_against_a_coordinator_serve_process(tmp_path: Path) -> None:
    """Two real processes: `gpt5os-coordinator serve` and `gpt5os-dashboard --snapshot`."""
    run_dir = make_run(tmp_path)
    port_file = tmp_path / "port"
    serve = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "gpt5os-coordinator"),
        "serve",
        "--dir",
        str(run_dir),
        "--port",
        "0",
        "--port-file",
        str(port_file),
        "--no-dht",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert serve.returncode is None, (await serve.stderr.read()).decode()
            assert time.monotonic() < deadline, "coordinator did not write its port file"
            await asyncio.sleep(0.05)
        address = f"127.0.0.1:{int(port_file.read_text())}"
        out = tmp_path / "served.svg"
        code, _, stderr = await run_cli(
            "--coordinator", address, "--snapshot", str(out), "--size", "80x24"
        )
        assert code == 0, stderr
        svg = out.read_text()
        assert "dash-test" in svg and "no&#160;nodes&#160;yet" in svg
    finally:
        if serve.returncode is None:
            serve.terminate()
            try:
                await asyncio.wait_for(serve.wait(), 30)
            except TimeoutError:
                serve.kill()
                await serve.wait()


async def test_snapshot_with_no_coordinator_fails_with_one_line(tmp_path: Path) -> None:
    port = free_port()
    out = tmp_path / "never.svg"
    code, _, stderr = await run_cli(
        "--coordinator", f"127.0.0.1:{port}", "--snapshot", str(out), "--snapshot-timeout", "1.5"
    )
    assert code == 1
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert f"127.0.0.1:{port}" in lines[0] and "within 1.5s" in lines[0]
    assert "Traceback" not in stderr and not out.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--coordinator", "no-port-here"], "is not HOST:PORT"),
        (["--coordinator", "host:99999"], "not in 1..65535"),
        (["--snapshot", "/nonexistent-dir/x.svg"], "does not exist"),
        (["--snapshot", "x.svg", "--snapshot-timeout", "0"], "must be positive"),
        (["--size", "tiny"], "WIDTHxHEIGHT"),
        (["--bogus"], "unrecognized arguments"),
    ],
)
async def test_bad_input_is_one_clear_line(args: list[str], needle: str) -> None:
    code, _, stderr = await run_cli(*args)
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], stderr
