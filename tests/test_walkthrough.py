"""The README's maintainer and volunteer commands, walked for every preset with reduced sizes.

The command lines come from scripts/walkthrough.py, which also renders the README's blocks (the
drift test below fails when the README and the module disagree). Each walk: data prepare, init,
serve, two nodes join and finish an outer round together, status. A preset whose two nodes this
machine cannot hold (node/memory.py's estimate vs available RAM) is skipped with the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_support import Proc, healthy, process_env, tool, wait_for
from gpt5os.coordinator.run_spec import PRESETS, preset_spec
from gpt5os.node import memory

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import walkthrough as w  # noqa: E402

SEQ_LEN, BATCH_SIZE = 32, 1
INNER_STEPS = 8  # per node and round
NODES = 2
COORDINATOR_BYTES = 1 * memory.GIB


def test_readme_commands_and_preset_table_are_rendered_from_walkthrough() -> None:
    text = w.README.read_text()
    assert w.readme_with_sections(text) == text, (
        "README.md drifted from scripts/walkthrough.py: run python scripts/walkthrough.py "
        "--write-readme"
    )


def _command(template: w.Template, values: dict, *extra: str) -> list[str]:
    args = w.render(template, values)
    return [tool(args[0]), *args[1:], *extra]


def _run(args: list[str], home: Path, timeout: float = 600) -> str:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=timeout, env=process_env(home)
    )
    assert result.returncode == 0, f"{args[:3]} failed:\n{result.stderr[-3000:]}"
    return result.stdout


def _fits(preset: str) -> str | None:
    """Why two nodes of `preset` (reduced sizes), the keeper and a coordinator cannot run here, or
    None (measured: two 0.1b nodes beside a 0.1b keeper were OOM-killed with 20.6 GiB
    available)."""
    spec = preset_spec(preset, run_id="fit")
    spec.seq_len, spec.batch_size = SEQ_LEN, BATCH_SIZE
    shape = memory.shape_of(spec)
    need = (
        NODES * memory.estimate(shape, "cpu").host
        + memory.estimate_keeper(shape).host
        + COORDINATOR_BYTES
    )
    available = memory.available_host_bytes() or 0
    if need > available:
        return (
            f"two {preset} nodes, the keeper and a coordinator need ~{need / memory.GIB:.1f} GiB; "
            f"{available / memory.GIB:.1f} GiB available here"
        )
    return None


PRESET_PARAMS = [
    pytest.param(p, marks=[pytest.mark.e2e] + ([] if p == "tiny" else [pytest.mark.slow]))
    for p in PRESETS
]


@pytest.mark.parametrize("preset", PRESET_PARAMS)
def test_preset_walkthrough(preset: str, tmp_path: Path) -> None:
    reason = None if preset == "tiny" else _fits(preset)  # tiny always runs: CI's guard
    if reason:
        pytest.skip(reason)
    home = tmp_path / "maintainer"
    values = {
        "data": str(tmp_path / "data"),
        "corpus": ["stdlib"],
        "run": str(tmp_path / "run"),
        "preset": preset,
        "host": "127.0.0.1",
        "port": "0",
    }
    _run(_command(w.DATA_PREPARE, values, "--shard-tokens", "4096", "--max-documents", "60"), home)
    # tiny's default run id has no '.', the big presets' do ("0.1b-…"): give tiny a dotted one
    # so that path runs here too, where the big presets cannot.
    dotted = ["--run-id", "tiny.walk-1"] if "." not in preset else []
    _run(
        _command(w.INIT, values, "--seq-len", str(SEQ_LEN), "--batch-size", str(BATCH_SIZE),
                 "--inner-steps", str(INNER_STEPS), *dotted),
        home,
    )  # fmt: skip
    port_file = tmp_path / "port"
    coordinator = Proc(
        # every round checkpointed (the big presets' default is every 10th): the walk exports
        # round 1
        _command(w.SERVE, values, "--port-file", str(port_file), "--checkpoint-every", "1"),
        tmp_path / "coordinator.log",
        process_env(home),
    )
    nodes: list[Proc] = []
    try:
        port = wait_for(
            lambda: port_file.exists() and port_file.read_text().strip(), 120, "the port file"
        )
        address = f"127.0.0.1:{port}"
        wait_for(lambda: healthy(address), 60, "coordinator health")
        for name in ("a", "b"):
            node_home = tmp_path / f"node-{name}"
            join = _command(
                w.JOIN, {"coordinator": address, "name": f"volunteer {name}"},
                "--device", "cpu", "--threads", "1", "--home", str(node_home),
                "--max-rounds", "1", "--min-peers", str(NODES),
            )  # fmt: skip
            nodes.append(Proc(join, tmp_path / f"node-{name}.log", process_env(node_home)))
        for node in nodes:
            assert node.wait(timeout=1200) == 0, node.tail()

        status = json.loads(_run(_command(w.STATUS, values, "--json"), home, timeout=120))
        assert status["preset"] == preset
        rounds = {r["round"]: r for r in status["rounds"]}
        assert 1 in rounds, status["rounds"]
        reports = rounds[1]["reports"]
        assert len({r["node_id"] for r in reports}) == NODES, reports
        assert all(len(r["peer_node_ids"]) == NODES for r in reports), reports
        assert len({r["params_sha256"] for r in reports}) == 1, reports
        human = _run(_command(w.STATUS, values), home, timeout=120)
        assert status["run_id"] in human

        # the model out: the keeper checkpointed round 1 (the nodes waited for its certificate)
        def checkpointed() -> dict | None:
            now = json.loads(_run(_command(w.STATUS, values, "--json"), home, timeout=120))
            ckpt = now.get("checkpoint")
            return ckpt if ckpt and ckpt["round"] >= 1 else None

        ckpt = wait_for(checkpointed, 300, "the keeper's round-1 checkpoint")
        assert ckpt["params_sha256"] == reports[0]["params_sha256"], (ckpt, reports[0])
        out = {**values, "model": str(tmp_path / "model.pth"), "prompt": "def fib(n):"}
        _run(_command(w.EXPORT, out, "--round", str(ckpt["round"])), home, timeout=300)
        text = _run(
            _command(w.GENERATE, out, "--max-tokens", "8", "--temperature", "0"), home, timeout=300
        )
        assert text.strip(), "generate printed nothing"
    finally:
        for node in nodes:
            node.stop()
        coordinator.stop()
