"""`status --json` gains "checkpoint": from the run dir, from a running server (GetStatus and the
WatchSwarm stream), null before the first checkpoint; the server notices new ones by polling."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from pathlib import Path

import grpc
import pytest
import torch
from click.testing import CliRunner
from gpt5os.coordinator.checkpoints import CheckpointDir, CheckpointInfo, LatestCheckpoint
from gpt5os.coordinator.cli import main
from gpt5os.coordinator.server import CoordinatorServer
from gpt5os.coordinator.testkit import make_run
from gpt5os.model import RWKV7, ModelConfig
from gpt5os.proto import pb, pb_grpc

pytestmark = pytest.mark.timeout(120)
CONFIG = ModelConfig(vocab_size=97, n_layer=1, n_embd=64, head_size=32)


def write(run_dir: Path, round: int) -> CheckpointInfo:
    torch.manual_seed(round)
    model = RWKV7(CONFIG)
    return CheckpointDir(run_dir).write(
        params=dict(model.named_parameters()),
        momentum={},
        round=round,
        tokens=100 * round,
        run_spec_json="{}",
        model_config=CONFIG,
    )


def test_latest_checkpoint_follows_the_folder(tmp_path):
    latest = LatestCheckpoint(CheckpointDir(tmp_path))
    assert latest.refresh() is None
    write(tmp_path, 1)
    assert latest.refresh().round == 1
    second = write(tmp_path, 2)
    assert latest.refresh() == second
    second.path.write_bytes(second.path.read_bytes()[:100])  # torn: the previous one is newest
    assert latest.refresh().round == 1


def status_json(*args: str) -> dict:
    r = CliRunner().invoke(main, ["status", "--json", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_status_from_the_run_dir(tmp_path):
    run = tmp_path / "run"
    make_run(run, n_train=2, n_val=1, shard_tokens=256)
    assert status_json("--dir", str(run))["checkpoint"] is None
    info = write(run, 3)
    assert status_json("--dir", str(run))["checkpoint"] == info.to_json()
    r = CliRunner().invoke(main, ["status", "--dir", str(run)])
    assert "checkpoint: round 3  300 tokens" in r.stdout


async def test_status_from_a_running_server(tmp_path):
    run = tmp_path / "run"
    make_run(run, n_train=2, n_val=1, shard_tokens=256)
    staged = write(tmp_path / "staging", 1)  # moved into the run once the server watches
    frozen = time.time()  # a still clock: no throughput samples, so no deltas but ours
    server = CoordinatorServer(run, port=0, clock=lambda: frozen)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            stub = pb_grpc.CoordinatorStub(channel)
            snap = await stub.GetStatus(pb.GetStatusRequest())
            assert not snap.run.HasField("checkpoint")
            watch = stub.WatchSwarm(pb.WatchSwarmRequest(min_interval_s=0.1))
            first = await watch.read()
            assert not first.snapshot.run.HasField("checkpoint")

            # the first tick's throughput sample sends one delta (0.5 s); with the clock frozen,
            # no other change follows, and the next keepalive is 10 s after it
            drained = await asyncio.wait_for(watch.read(), timeout=15)
            assert not drained.delta.run.HasField("checkpoint")
            (run / "checkpoints").mkdir()
            info = dataclasses.replace(staged, path=run / "checkpoints" / staged.path.name)
            staged.path.rename(info.path)  # appears at once, as the keeper's rename does

            # the new checkpoint alone must produce a delta, long before the keepalive
            async def delta_with_checkpoint() -> pb.SwarmDelta:
                while not (update := await watch.read()).delta.run.HasField("checkpoint"):
                    pass
                return update.delta

            got = await asyncio.wait_for(delta_with_checkpoint(), timeout=5)
            assert got.run.checkpoint.round == 1
            assert got.run.checkpoint.params_sha256 == info.params_sha256
            watch.cancel()

            snap = await stub.GetStatus(pb.GetStatusRequest())
            assert snap.run.checkpoint.path == str(info.path)
        r = await asyncio.to_thread(
            CliRunner().invoke, main, ["status", "--json", "--coordinator", server.address]
        )
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["checkpoint"] == info.to_json()
    finally:
        await server.stop(grace=0.1)
