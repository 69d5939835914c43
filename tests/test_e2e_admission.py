"""Admission with real processes on 127.0.0.1: `gpt5os-node join` to an invite-only run is
refused without an invite and admitted with one from `gpt5os-coordinator invite`; banned mid-run
from the CLI (the coordinator running), the node stops within seconds with one line that says it
was banned and a non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from e2e_support import Proc, coordinator_status, process_env, start_coordinator, tool, wait_for
from gpt5os.coordinator.store import DB_NAME, Store
from gpt5os.coordinator.testkit import make_data_dir

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BAN_EXIT_S = 30.0  # a heartbeat (1 s here), the server's poll of the store (1 s), the shutdown


def coordinator(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("gpt5os-coordinator"), *args], capture_output=True, text=True, timeout=120
    )


def node(address: str, tmp_path: Path, name: str, *extra: str) -> Proc:
    home = tmp_path / f"node-{name}"
    args = [tool("gpt5os-node"), "join", "--coordinator", address, "--device", "cpu",
            "--threads", "1", "--home", str(home), "--name", name, *extra]  # fmt: skip
    return Proc(args, tmp_path / f"node-{name}.log", process_env(home))


def leased_by(run_dir: Path, name: str) -> str | None:
    store = Store(run_dir / DB_NAME, readonly=True)
    try:
        ids = [n["node_id"] for n in store.nodes() if n["display_name"] == name]
        held = {s.node_id for s in store.shard_states() if s.status == "leased"}
    finally:
        store.close()
    return ids[0] if ids and ids[0] in held else None


def test_invite_only_join_and_a_node_banned_mid_run_stops(tmp_path: Path) -> None:
    make_data_dir(tmp_path / "data", n_train=20, n_val=1, shard_tokens=1024)
    run_dir = tmp_path / "run"
    r = coordinator("init", "--dir", str(run_dir), "--data", str(tmp_path / "data"),
                    "--preset", "tiny", "--inner-steps", "2", "--heartbeat-seconds", "1",
                    "--lease-seconds", "30", "--admission", "invite-only")  # fmt: skip
    assert r.returncode == 0, r.stderr
    server, address = start_coordinator(
        run_dir, tmp_path / "coord-home", tmp_path / "coordinator.log", "--no-dht", "--no-keeper"
    )
    stranger = node(address, tmp_path, "stranger")
    member = None
    try:
        rc = stranger.wait(120)
        out = stranger.output()
        assert rc == 1 and "Traceback" not in out, stranger.tail()
        assert out.count("this run is invite-only: ask the maintainer for an invite") == 1, out

        token = coordinator("invite", "--dir", str(run_dir)).stdout.strip()
        member = node(address, tmp_path, "member", "--invite", token)

        def training() -> str | None:
            assert member.alive(), f"the invited node exited:\n{member.tail()}"
            return leased_by(run_dir, "member")

        node_id = wait_for(
            training,
            180,
            "the invited node training (holding a lease)",
            0.5,
        )
        r = coordinator("ban", "--dir", str(run_dir), node_id[:8])
        assert r.returncode == 0, r.stderr
        t0 = time.monotonic()
        rc = member.wait(BAN_EXIT_S)
        seconds = time.monotonic() - t0
        out = member.output()
        assert rc == 1, member.tail()
        for word in ("Traceback", "ERROR"):
            assert word not in out, member.tail()
        said = [line for line in out.splitlines() if "banned" in line]
        assert len(said) == 1 and f"node {node_id} is banned" in said[0], member.tail()
        nodes = {n["node_id"]: n["state"] for n in coordinator_status(run_dir)["nodes"]}
        assert nodes[node_id] == "banned"
        print(f"\nFIGURE ban-exit: node exited {rc} {seconds:.1f} s after `ban`: {said[0]!r}")
    finally:
        stranger.stop()
        if member is not None:
            member.stop()
        server.stop()
