"""Peak memory of a node's whole process tree, per preset, in bytes per model parameter.

For each preset: a real coordinator and two real `gpt5os-node join` processes on 127.0.0.1 (the
preset's model, with a reduced --seq-len/--batch-size so CPUs can take steps), one outer round.
Every 0.2 s the sampler sums, over each node's process tree (the node, its hivemind DHT and
averager processes, p2pd, torch's shm manager):
- PSS (proportional set size: a page shared by k processes counts 1/k in each, so shared memory
  such as the averager's buffers is counted once over the tree, never twice),
- USS (pages only one process maps).
Samples inside a round's averaging window (from the node's "round N: ... averaging X s" log line)
count as "averaging", the rest as "training". Printed beside the floor (training state + outer
state + one wire buffer, per parameter) and node/memory.py's estimate.

Usage: .venv/bin/python bench/memory.py [--presets tiny,0.1b] [--seq-len 64] [--batch-size 1]
Needs ~2 × (bytes/param × params) of free RAM: 0.1b ~ 14 GB for two nodes.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from e2e_support import Proc, process_env, start_coordinator, tool  # noqa: E402
from gpt5os.coordinator.runs import create_run, load_run  # noqa: E402
from gpt5os.coordinator.testkit import make_data_dir  # noqa: E402
from gpt5os.node import memory  # noqa: E402
from process_tree import tree  # noqa: E402

ROUND_LINE = re.compile(r"^(\d\d:\d\d:\d\d) INFO gpt5os.node: round \d+: .* averaging ([\d.]+) s")


def tree_memory(root: int) -> tuple[int, int, dict[str, int]]:
    """(PSS, USS) in bytes summed over `root`'s process tree now, and PSS per process role."""
    pss = uss = 0
    procs = tree(root)
    parents = {p.pid: _ppid(p.pid) for p in procs}
    dht = {parents[p.pid] for p in procs if p.name == "p2pd"}
    roles: dict[str, int] = {}
    for p in procs:
        try:
            text = Path(f"/proc/{p.pid}/smaps_rollup").read_text()
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        mine = 0
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            if key == "Pss":
                mine = int(rest.split()[0]) * 1024
            elif key in ("Private_Clean", "Private_Dirty"):
                uss += int(rest.split()[0]) * 1024
        pss += mine
        role = (
            "main" if p.pid == root else "dht" if p.pid in dht else
            "p2pd" if p.name == "p2pd" else "shm" if p.name.startswith("torch_shm") else "averager"
        )  # fmt: skip
        roles[role] = roles.get(role, 0) + mine
    return pss, uss, roles


def _ppid(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return 0
    return int(text[text.rindex(")") + 2 :].split()[1])


@dataclass
class Samples:
    rows: list[tuple[float, int, int, dict[str, int]]] = field(default_factory=list)


def sample(proc: Proc, into: Samples, stop: threading.Event) -> None:
    while not stop.is_set() and proc.alive():
        pss, uss, roles = tree_memory(proc.pid)
        into.rows.append((time.time(), pss, uss, roles))
        stop.wait(0.2)


def averaging_windows(log: str, day: datetime) -> list[tuple[float, float]]:
    """[(start, end)] unix times of each round's averaging, ±1 s for the log's 1 s resolution."""
    windows = []
    for line in log.splitlines():
        m = ROUND_LINE.match(line)
        if m:
            hh, mm, ss = (int(x) for x in m.group(1).split(":"))
            end = day.replace(hour=hh, minute=mm, second=ss).timestamp()
            windows.append((end - float(m.group(2)) - 1.0, end + 1.0))
    return windows


def peaks(samples: Samples, windows: list[tuple[float, float]]) -> dict[str, tuple]:
    """Per phase: (peak PSS, peak USS, PSS per process role at the PSS peak)."""
    out: dict[str, tuple] = {"training": (0, 0, {}), "averaging": (0, 0, {})}
    for t, pss, uss, roles in samples.rows:
        phase = "averaging" if any(a <= t <= b for a, b in windows) else "training"
        old = out[phase]
        out[phase] = (max(old[0], pss), max(old[1], uss), roles if pss > old[0] else old[2])
    return out


def floor_per_param(optimizer: str, compression: str) -> int:
    training = memory.WEIGHTS + memory.GRADS + memory.ADAM_MOMENTS[optimizer]
    return training + memory.OUTER_STATE + memory.WIRE[compression]


def run_preset(preset: str, args: argparse.Namespace, root: Path) -> dict:
    data = root / "data"
    if not data.exists():
        make_data_dir(data, n_train=8, n_val=1, shard_tokens=4096)
    run_dir = root / f"run-{preset}"
    overrides = {}
    if args.shape:  # a model between the presets: LAYERSxWIDTH on the preset's settings
        n_layer, n_embd = (int(x) for x in args.shape.lower().split("x"))
        overrides = {"model_n_layer": n_layer, "model_n_embd": n_embd}
    create_run(
        run_dir, data, preset=preset, seq_len=args.seq_len, batch_size=args.batch_size,
        inner_steps=args.steps, inner_name=args.optimizer, compression=args.compression,
        **overrides,
    )  # fmt: skip
    coordinator, address = start_coordinator(run_dir, root / "ch", root / f"coord-{preset}.log")
    nodes, samplers, stop = [], [], threading.Event()
    # the coordinator's tree: it, the keeper it starts and their hivemind processes
    serving = Samples()
    threading.Thread(target=sample, args=(coordinator, serving, stop), daemon=True).start()
    try:
        for name in "ab"[: args.nodes]:
            home = root / f"{preset}-{name}"
            node = Proc(
                [tool("gpt5os-node"), "join", "--coordinator", address, "--device", "cpu",
                 "--threads", "1", "--home", str(home), "--max-rounds", "1", "--min-peers", str(args.nodes)],
                root / f"node-{preset}-{name}.log", process_env(home),
            )  # fmt: skip
            nodes.append(node)
            samples = Samples()
            thread = threading.Thread(target=sample, args=(node, samples, stop), daemon=True)
            thread.start()
            samplers.append((node, samples, thread))
        for node in nodes:
            rc = node.wait(timeout=args.timeout)
            if rc != 0:
                raise SystemExit(f"node exited with {rc}:\n{node.tail()}")
    finally:
        stop.set()
        for node in nodes:
            node.stop()
        coordinator.stop()
    spec = load_run(run_dir).spec
    shape = memory.shape_of(spec)
    day = datetime.now().replace(microsecond=0)
    results = []
    for node, samples, _ in samplers:
        windows = averaging_windows(node.log_path.read_text(errors="replace"), day)
        results.append(peaks(samples, windows))
    worst = {
        phase: max((r[phase] for r in results), key=lambda peak: peak[0])
        for phase in ("training", "averaging")
    }
    return {
        "preset": preset,
        "params": shape.params,
        "peaks": worst,
        "floor": floor_per_param(args.optimizer, shape.compression),
        "estimate": memory.estimate(shape, "cpu"),
        "samples": sum(len(s.rows) for _, s, _ in samplers),
        "serving": max(serving.rows, key=lambda row: row[1], default=(0, 0, 0, {})),
        "keeper_estimate": memory.estimate_keeper(shape),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="tiny")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4, help="inner steps per node per round")
    parser.add_argument("--optimizer", default="adamw", choices=sorted(memory.ADAM_MOMENTS))
    parser.add_argument("--compression", default="blockwise8", choices=sorted(memory.WIRE))
    parser.add_argument("--timeout", type=float, default=1800)
    parser.add_argument("--shape", default="", help="LAYERSxWIDTH instead of the preset's")
    parser.add_argument(
        "--nodes", type=int, default=2, choices=(1, 2), help="1: no all-reduce (a lone round)"
    )
    args = parser.parse_args()
    print(
        f"seq_len {args.seq_len}, batch {args.batch_size}, {args.optimizer}, "
        f"compression {args.compression}, CPU node, "
        f"{'model ' + args.shape + ', ' if args.shape else ''}"
        f"peak PSS (USS) of a node's whole process tree, the worst of {args.nodes} node(s)"
    )
    print(
        "| preset | params | training B/param | averaging B/param | floor B/param "
        "| estimate B/param | peak GiB |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    with tempfile.TemporaryDirectory(prefix="gpt5os-memory-") as tmp:
        for preset in args.presets.split(","):
            r = run_preset(preset, args, Path(tmp))
            p = r["params"]
            (tp, tu, troles), (ap, au, aroles) = r["peaks"]["training"], r["peaks"]["averaging"]
            print(
                f"| {preset} | {p / 1e6:.1f} M | {tp / p:.1f} ({tu / p:.1f}) | "
                f"{ap / p:.1f} ({au / p:.1f}) | {r['floor']} | "
                f"{r['estimate'].host_per_param():.1f} | {max(tp, ap) / memory.GIB:.2f} |",
                flush=True,
            )
            for phase, roles in (("training", troles), ("averaging", aroles)):
                parts = ", ".join(f"{k} {v / p:.1f}" for k, v in sorted(roles.items()))
                print(f"  {preset} {phase} peak, B/param by process: {parts}", flush=True)
            _, spss, _, _ = r["serving"]
            print(
                f"  {preset} coordinator + keeper tree peak: {spss / memory.GIB:.2f} GiB "
                f"({spss / p:.1f} B/param; the keeper's estimate "
                f"{r['keeper_estimate'].host / memory.GIB:.2f} GiB)",
                flush=True,
            )


if __name__ == "__main__":
    main()
