"""kill -9 a real `gpt5os-coordinator serve` while nodes lease and complete shards, restart it on
the same run directory, and check that nothing acknowledged was lost or duplicated."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from gpt5os.coordinator.store import DB_NAME, Store
from gpt5os.coordinator.testkit import aio_channel, make_run, node_key
from gpt5os.proto import pb, pb_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytestmark = pytest.mark.timeout(120)
N_TRAIN = 60
CLIENTS = 4


def tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


class Coordinator:
    """`gpt5os-coordinator serve --port 0 --port-file`, ready once its health check says SERVING."""

    def __init__(self, run_dir: Path, log: Path) -> None:
        self.port_file = run_dir.parent / "port"
        self.port_file.unlink(missing_ok=True)
        self.log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [tool("gpt5os-coordinator"), "serve", "--dir", str(run_dir), "--port", "0",
             "--port-file", str(self.port_file), "--no-dht"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.address = ""

    def wait_ready(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"coordinator exited with {self.proc.returncode}"
            if self.port_file.is_file() and self.port_file.read_text().strip().isdigit():
                self.address = f"127.0.0.1:{self.port_file.read_text().strip()}"
                try:
                    with grpc.insecure_channel(self.address) as ch:
                        reply = health_pb2_grpc.HealthStub(ch).Check(
                            health_pb2.HealthCheckRequest(), timeout=1
                        )
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        return self.address
                except grpc.RpcError:
                    pass
            time.sleep(0.05)
        raise AssertionError("coordinator did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


async def worker(address: str, key: bytes, acked: dict, stop: asyncio.Event) -> None:
    """Join, then lease and complete shards until told to stop or the server dies."""
    async with aio_channel(address) as ch:
        stub = pb_grpc.CoordinatorStub(ch)
        reply = await stub.Join(
            pb.JoinRequest(public_key=node_key(key), info=pb.NodeInfo(software_version="0.1.0"))
        )
        auth = pb.NodeAuth(node_id=reply.node_id, session_token=reply.session_token)
        acked["auth"][key] = auth
        try:
            while not stop.is_set():
                lease = await stub.LeaseShard(pb.LeaseShardRequest(auth=auth), timeout=5)
                if not lease.granted:
                    await asyncio.sleep(0.01)
                    continue
                acked["leases"][lease.lease.shard_id] = auth.node_id
                done = await stub.CompleteShard(
                    pb.CompleteShardRequest(
                        auth=auth, shard_id=lease.lease.shard_id, tokens_trained=7, mean_loss=1.0
                    ),
                    timeout=5,
                )
                assert done.counted
                acked["done"][lease.lease.shard_id] = auth.node_id
        except grpc.aio.AioRpcError as e:
            assert e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), e


async def run_until_killed(coord: Coordinator, acked: dict) -> None:
    stop = asyncio.Event()
    keys = [bytes([i]) * 32 for i in range(CLIENTS)]
    tasks = [asyncio.create_task(worker(coord.address, k, acked, stop)) for k in keys]
    deadline = time.monotonic() + 60
    while len(acked["done"]) < N_TRAIN // 3:
        assert time.monotonic() < deadline, "clients made no progress"
        assert not any(t.done() and t.exception() for t in tasks), [
            t.exception() for t in tasks if t.done()
        ]
        await asyncio.sleep(0.001)
    os.kill(coord.proc.pid, signal.SIGKILL)  # mid-flight: clients are leasing and completing
    coord.proc.wait()
    stop.set()
    await asyncio.gather(*tasks)


async def resume_after_restart(address: str, acked: dict) -> None:
    async with aio_channel(address) as ch:
        stub = pb_grpc.CoordinatorStub(ch)
        for auth in acked["auth"].values():  # node records and sessions survived
            hb = await stub.Heartbeat(pb.HeartbeatRequest(auth=auth))
            for lease in hb.leases:
                assert lease.shard_id not in acked["done"]
            held = {x.shard_id for x in hb.leases}
            mine = {
                s
                for s, n in acked["leases"].items()
                if n == auth.node_id and s not in acked["done"]
            }
            assert mine <= held, "an acknowledged lease was lost"
        for shard_id, node_id in acked["done"].items():  # duplicates after the restart: not counted
            auth = next(a for a in acked["auth"].values() if a.node_id == node_id)
            again = await stub.CompleteShard(pb.CompleteShardRequest(auth=auth, shard_id=shard_id))
            assert not again.counted


def test_kill_9_loses_no_acknowledged_lease_or_completion(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    make_run(run_dir, n_train=N_TRAIN, n_val=1, shard_tokens=64)
    acked: dict = {"auth": {}, "leases": {}, "done": {}}
    coord = Coordinator(run_dir, tmp_path / "coordinator.log")
    try:
        coord.wait_ready()
        asyncio.run(run_until_killed(coord, acked))
    finally:
        coord.stop()
    assert len(acked["done"]) >= N_TRAIN // 3

    store = Store(run_dir / DB_NAME, readonly=True)
    try:
        rows = store.completions()
        completions = {(r["epoch"], r["shard_id"]): r["node_id"] for r in rows}
        states = {s.shard_id: s for s in store.shard_states()}
    finally:
        store.close()
    assert len(rows) == len(completions)  # each (epoch, shard) completed once
    for shard_id, node_id in acked["done"].items():
        assert completions.get((0, shard_id)) == node_id, (
            f"acknowledged completion of {shard_id} lost"
        )
    assert sorted(states) == [f"train-{i:05d}" for i in range(N_TRAIN)]  # every shard exactly once
    assert {s.status.value for s in states.values()} <= {"pending", "leased", "done"}
    assert {s for s, st in states.items() if st.status.value == "done"} == {
        s for _, s in completions
    }
    for shard_id, node_id in acked["leases"].items():
        st = states[shard_id]
        assert st.status.value in ("leased", "done") and st.node_id == node_id

    coord = Coordinator(run_dir, tmp_path / "coordinator.log")
    try:
        address = coord.wait_ready()
        asyncio.run(resume_after_restart(address, acked))
        out = subprocess.run(
            [tool("gpt5os-coordinator"), "status", "--dir", str(run_dir), "--json"],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
    finally:
        coord.stop()
    status = json.loads(out.stdout)
    sh = status["shards"]
    assert sh["total"] == N_TRAIN == sh["pending"] + sh["leased"] + sh["done"]
    assert sh["done"] == len(completions)
    assert sum(n["shards_done"] for n in status["nodes"]) == len(completions)
