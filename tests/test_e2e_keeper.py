"""End to end: the keeper holds the run's model when every volunteer has left.

Real processes on 127.0.0.1: `gpt5os-coordinator serve` (which starts the keeper as its child),
two `gpt5os-node join` that train three outer rounds and leave, then a third node that joins an
empty swarm and must continue at round 4 from the keeper's state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from e2e_support import (
    Proc,
    coordinator_status,
    init_run,
    join_node,
    process_env,
    start_coordinator,
    tool,
    wait_for,
)
from gpt5os.coordinator.checkpoints import CheckpointDir

pytestmark = pytest.mark.e2e

ROUNDS = 3
ROGUE = str(Path(__file__).with_name("rogue_peer.py"))


def _dead(proc: Proc) -> None:
    if not proc.alive():
        raise RuntimeError(f"process exited:\n{proc.tail()}")


def _init_run(run_dir: Path, data: Path) -> None:
    init_run(
        run_dir, data, "--inner-steps", "4", "--heartbeat-seconds", "1", "--lease-seconds", "30"
    )


def _keeper_at(run_dir: Path, round_number: int):
    def check() -> dict | None:
        status = coordinator_status(run_dir)
        keeper = status["keeper"]
        return status if keeper["live"] and (keeper["last_round"] or 0) >= round_number else None

    return check


def _keeper_pid(coordinator_log: str) -> int:
    lines = [line for line in coordinator_log.splitlines() if "keeper started (pid" in line]
    return int(lines[-1].split("pid ")[1].rstrip(")"))


@pytest.mark.slow  # 2-5 min: make test-slow, and CI
def test_the_keeper_carries_the_model_across_an_empty_swarm(
    tmp_path: Path, small_corpus: Path
) -> None:
    run_dir = tmp_path / "run"
    _init_run(run_dir, small_corpus)
    coordinator, address = start_coordinator(
        run_dir, tmp_path / "coord-home", tmp_path / "coordinator.log"
    )
    procs: list[Proc] = []
    try:
        wait_for(_keeper_at(run_dir, 0), 180, "the keeper's first report", interval=1.0)
        for name in ("a", "b"):
            procs.append(
                join_node(
                    address,
                    tmp_path / f"node-{name}",
                    tmp_path / f"node-{name}.log",
                    "--max-rounds",
                    str(ROUNDS),
                    "--min-peers",
                    "2",
                )  # fmt: skip
            )
        for node in procs:
            assert node.wait(timeout=900) == 0, node.tail()

        # Each node applied 3 rounds; one that missed a round (it re-synced) trained one more.
        last_round = max(r["round"] for r in coordinator_status(run_dir)["rounds"])
        assert last_round >= ROUNDS
        status = wait_for(_keeper_at(run_dir, last_round), 120, "the keeper", interval=1.0)
        rounds = {r["round"]: r for r in status["rounds"]}
        assert sorted(rounds) == list(range(1, last_round + 1)), status["rounds"]
        last = {r["params_sha256"] for r in rounds[last_round]["reports"]}
        assert len(last) == 1, last
        [digest] = last
        certified = status["keeper"]["certified"]
        assert certified["round"] == last_round and certified["source"] == "keeper"
        assert certified["params_sha256"] == digest
        info = wait_for(
            lambda: (i := CheckpointDir(run_dir).latest()) and i.round == last_round and i,
            60,
            "the keeper's last checkpoint",
        )
        assert info.params_sha256 == digest
        for r in rounds.values():  # the keeper is a member, never a contributor
            for report in r["reports"]:
                assert "keeper" not in report["peer_node_ids"]

        # Every volunteer left; a hostile peer serves a tampered model under a forged claim of
        # the certified digest. A new node rejects it and continues from the keeper at round 4.
        rogue = Proc(
            [sys.executable, ROGUE, "--coordinator", address, "--home", str(tmp_path / "rogue")],
            tmp_path / "rogue.log",
            process_env(tmp_path / "rogue"),
        )
        procs.append(rogue)
        wait_for(lambda: "rogue ready" in rogue.output() or _dead(rogue), 180, "the rogue peer")
        late = join_node(address, tmp_path / "node-c", tmp_path / "node-c.log", "--max-rounds", "2")
        procs.append(late)
        wait_for(_keeper_at(run_dir, last_round + 1), 600, "the next round", interval=1.0)

        # kill -9 of the keeper mid-run (a torn temp file beside its checkpoints, as a write cut
        # short leaves): the coordinator restarts it, it loads its newest checkpoint and catches
        # up with round 5, which the node took without it.
        os.kill(_keeper_pid(coordinator.output()), signal.SIGKILL)
        (run_dir / "checkpoints" / ".round-00000005.safetensors.x.tmp").write_bytes(b"\0" * 100)
        assert late.wait(timeout=600) == 0, late.tail()
        log = late.output()
        assert f"adopted the certified state of round {last_round}" in log
        assert "rejected: sha256" in log, "the forged claim's tampered state was not tried"
        rogue.stop()
        assert coordinator.output().count("keeper started (pid") >= 2
        assert "loaded checkpoint" in coordinator.output()

        end = last_round + 2
        status = wait_for(_keeper_at(run_dir, end), 180, "the keeper caught up", interval=1.0)
        rounds = {r["round"]: r for r in status["rounds"]}
        assert sorted(rounds) == list(range(1, end + 1)), status["rounds"]  # no gap, no restart
        val = {n: r["val_loss"] for n, r in rounds.items()}
        # continued, not restarted: no worse than before the swarm emptied by more than a
        # quarter of what the run had learnt since round 1 (the initial model is far above it)
        before, after = val[last_round], val[last_round + 1]
        assert after < before + 0.25 * (val[1] - before), val
        [final] = {r["params_sha256"] for r in rounds[end]["reports"]}
        assert status["keeper"]["certified"]["params_sha256"] == final
        info = wait_for(
            lambda: (i := CheckpointDir(run_dir).latest()) and i.round == end and i,
            60,
            "the keeper's checkpoint after catching up",
        )
        assert info.params_sha256 == final
    finally:
        for proc in procs:
            proc.stop()
        coordinator.stop()


def test_a_run_from_a_checkpoint_starts_every_node_from_it(
    tmp_path: Path, small_corpus: Path
) -> None:
    """init --from-checkpoint of an exported model: round 0 is certified with the file's digest
    from init on, so a node never starts from the run's seeded model. With no keeper yet it waits
    (nobody serves that state); once a keeper runs, it starts from the file's weights."""
    from gpt5os.coordinator.run_spec import preset_spec
    from gpt5os.model import RWKV7, ModelConfig
    from gpt5os.model.checkpoint import tensors_sha256

    m = preset_spec("tiny", run_id="probe").model
    config = ModelConfig(
        vocab_size=m.vocab_size, n_layer=m.n_layer, n_embd=m.n_embd, head_size=m.head_size
    )
    torch.manual_seed(1234)  # not the run's seed: a model no node could build by itself
    params = {n: p.detach().clone() for n, p in RWKV7(config).named_parameters()}
    digest = tensors_sha256(params.values())
    info = CheckpointDir(tmp_path / "src").write(params=params, momentum={}, round=7, tokens=1,
                                                 run_spec_json="{}", model_config=config)  # fmt: skip
    assert info.params_sha256 == digest
    exported = tmp_path / "model.safetensors"
    subprocess.run(
        [tool("gpt5os-coordinator"), "export", "--dir", str(tmp_path / "src"), "--format",
         "safetensors", "--out", str(exported)],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    run_dir = tmp_path / "run"
    subprocess.run(
        [tool("gpt5os-coordinator"), "init", "--dir", str(run_dir), "--data", str(small_corpus),
         "--from-checkpoint", str(exported), "--preset", "tiny", "--inner-steps", "4",
         "--heartbeat-seconds", "1"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    coordinator, address = start_coordinator(
        run_dir, tmp_path / "coord-home", tmp_path / "coordinator.log", "--no-keeper"
    )
    node = join_node(address, tmp_path / "node", tmp_path / "node.log", "--max-rounds", "1")
    keeper = None
    try:
        wait_for(
            lambda: (
                _dead(node) or "no source served the certified state of round 0" in node.output()
            ),
            300,
            "the node to look for round 0's certified state",
            interval=0.5,
        )
        assert "starting at round" not in node.output()  # not from the seeded model
        keeper = Proc(
            [tool("gpt5os-coordinator"), "keeper", "--dir", str(run_dir), "--coordinator", address,
             "--dht-listen", "/ip4/127.0.0.1/tcp/0"],
            tmp_path / "keeper.log", process_env(tmp_path / "keeper-home"),
        )  # fmt: skip
        started = wait_for(
            lambda: _dead(node) or ("starting at round" in node.output() and node.output()),
            300,
            "the node's starting state",
            interval=0.5,
        )
        line = next(x for x in started.splitlines() if "starting at round" in x)
        assert line.endswith(f"starting at round 0 from global model sha256 {digest}"), line
    finally:
        node.stop()
        if keeper is not None:
            keeper.stop()
        coordinator.stop()
