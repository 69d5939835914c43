"""A real swarm against a single-process AdamW baseline: loss, bytes on the wire, utilization.

One run: a real coordinator (with its keeper), `--nodes` real `gpt5os-node join` processes that
start together and `--late` more that join once round 1 is certified, all training `--rounds`
outer rounds of H = `--inner-steps` inner steps each on the stdlib corpus (the `tiny` model,
`--seq-len` x `--batch-size` tokens per step, one CPU thread per node). Then, in this process,
an AdamW baseline from the same seeded initial model trains the same number of tokens on the
same training shards with the nodes' batch x `--nodes` per step (what synchronous data-parallel
training of the first nodes would do), with the same learning-rate schedule.

Printed:
- validation loss of θ_global (the keeper's last checkpoint) and of the baseline, on the same
  `--val-batches` held-out batches;
- bytes each node put on the wire, MEASURED: as root every node runs in its own network
  namespace joined to a bridge by a veth pair, and the bytes are the veth's counters (everything
  the node's processes sent: DHT, matchmaking, all-reduce, state downloads, gRPC to the
  coordinator). Without root the nodes share the loopback and bytes are not measured;
- `comm_ratio`: what synchronous fp32 ring all-reduce every step would have sent for the same
  steps (2 (n-1)/n x 4 bytes x parameters per step and node, n = all nodes of the run) over the
  bytes measured;
- utilization per node: 1 - (the loop's wait on outer rounds and re-syncs) / (its wall time from
  the first inner step), recorded by the trainer (node/loop_stats.py, `join --stats-file`);
- `join_seconds`: each late joiner's seconds from starting `gpt5os-node join` to its first inner
  step (joining, syncing the certified state, the first shard);
- `identical_params`: every node's θ_global digest after its last round equals the others' at
  that round and the keeper's certificate.

`--wan` (root) shapes every veth with `tc tbf` to 100 Mbit/s each way. netem is missing from
this kernel, so no delay can be added: `--delay-ms` is refused with that message.

Usage: .venv/bin/python bench/swarm.py [--nodes 2 --late 1 --rounds 2 --inner-steps 500]
       [--compression blockwise8] [--overlap] [--wan] [--json] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from e2e_support import (  # noqa: E402
    Proc,
    coordinator_status,
    healthy,
    process_env,
    tool,
    wait_for,
)
from gpt5os.coordinator.run_spec import COMPRESSIONS, DEFAULT_COMPRESSION  # noqa: E402
from netns import RATE, Net  # noqa: E402

# -- the swarm -------------------------------------------------------------------------------


def start_coordinator(run_dir: Path, root: Path, host: str) -> tuple[Proc, str]:
    port_file = root / "coordinator.port"
    args = [tool("gpt5os-coordinator"), "serve", "--dir", str(run_dir), "--host", host,
            "--port", "0", "--port-file", str(port_file), "--keep-checkpoints", "1000"]  # fmt: skip
    proc = Proc(args, root / "coordinator.log", process_env(root / "coordinator-home"))

    def port() -> int | None:
        if not proc.alive():
            raise RuntimeError(f"coordinator exited:\n{proc.tail()}")
        text = port_file.read_text().strip() if port_file.exists() else ""
        return int(text) if text.isdigit() else None

    address = f"{host}:{wait_for(port, 180, 'the coordinator port')}"
    wait_for(lambda: healthy(address), 120, "coordinator health")
    return proc, address


@dataclass
class Node:
    name: str
    proc: Proc
    launched: float  # time.time()
    stats_file: Path
    index: int

    def stats(self) -> dict:
        return json.loads(self.stats_file.read_text()) if self.stats_file.exists() else {}


def launch(
    net: Net, i: int, name: str, address: str, root: Path, rounds: int, extra: list[str]
) -> Node:
    home = root / f"node-{name}"
    stats_file = root / f"node-{name}.json"
    listen = f"/ip4/{net.ips[i]}/tcp/0"
    args = [tool("gpt5os-node"), "join", "--coordinator", address, "--device", "cpu",
            "--threads", "1", "--home", str(home), "--max-rounds", str(rounds),
            "--dht-listen", listen, "--stats-file", str(stats_file), "--name", name,
            *extra]  # fmt: skip
    launched = time.time()
    proc = Proc(net.wrap(i, args), root / f"node-{name}.log", process_env(home))
    return Node(name, proc, launched, stats_file, i)


def certified_round(run_dir: Path) -> int:
    try:
        cert = coordinator_status(run_dir).get("keeper", {}).get("certified") or {}
    except (subprocess.SubprocessError, json.JSONDecodeError):
        return -1
    return int(cert.get("round", -1))


# -- the baseline and the evaluation -----------------------------------------------------------


def val_batches(data_dir: Path, seq_len: int, batch: int, count: int):
    import numpy as np
    from gpt5os.coordinator.manifest import load_manifest
    from gpt5os.node.validation import held_out_tokens, validation_batches

    manifest = load_manifest(data_dir)
    shards = (np.fromfile(data_dir / s.path, dtype="<u2") for s in manifest.val)
    tokens = held_out_tokens(shards, count * batch * seq_len + 1)
    if tokens is None:
        raise SystemExit("the data's held-out split is too small for --val-batches")
    return validation_batches(tokens, seq_len=seq_len, batch_size=batch, val_batches=count)


def val_loss(model, batches) -> float:
    import torch

    model.eval()
    total = count = 0.0
    with torch.no_grad():
        for inputs, targets in batches:
            y = torch.from_numpy(targets)
            total += float(model.loss(torch.from_numpy(inputs), y)) * y.numel()
            count += y.numel()
    model.train()
    return total / count


def train_baseline(spec, data_dir: Path, tokens: int, batch: int):
    """AdamW from the run's seeded initial model on the training shards (each in the run's
    seeded sequence order, epoch 0), `batch` sequences a step, until `tokens` are trained."""
    import numpy as np
    import torch
    from gpt5os.coordinator.manifest import load_manifest
    from gpt5os.node.schedule import inner_lr
    from gpt5os.node.shard_feed import cut_batches, sequence_count, sequence_order
    from gpt5os.node.trainer import build_inner_optimizer, initial_model

    torch.set_flush_denormal(True)
    model = initial_model(spec)
    opt = build_inner_optimizer(model, spec.inner)
    manifest = load_manifest(data_dir)
    trained = steps = 0
    started = time.monotonic()
    while trained < tokens:
        for shard in manifest.train:
            data = np.fromfile(data_dir / shard.path, dtype="<u2")
            n_seq = sequence_count(len(data), spec.seq_len)
            order = sequence_order(spec.seed, shard.shard_id, 0, n_seq)
            for inputs, targets in cut_batches(data, spec.seq_len, batch, order):
                for group in opt.param_groups:
                    group["lr"] = inner_lr(spec.inner, trained)
                loss = model.loss(torch.from_numpy(inputs), torch.from_numpy(targets))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec.inner.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
                trained += targets.size
                steps += 1
                if trained >= tokens:
                    return model, steps, time.monotonic() - started
    return model, steps, time.monotonic() - started


# -- the run --------------------------------------------------------------------------------


def run(args: argparse.Namespace, root: Path) -> dict:
    import torch
    from gpt5os.coordinator.checkpoints import CheckpointDir
    from gpt5os.coordinator.runs import load_run
    from gpt5os.model.checkpoint import model_from_state_dict

    torch.set_num_threads(1)
    data = args.data or root / "data"
    if not (data / "manifest.json").exists():
        subprocess.run(
            [tool("gpt5os-coordinator"), "data", "prepare", "--out", str(data),
             "--shard-tokens", "16384", "--max-documents", "400", "stdlib"],
            check=True, capture_output=True, timeout=900,
        )  # fmt: skip
    run_dir = root / "run"
    subprocess.run(
        [tool("gpt5os-coordinator"), "init", "--dir", str(run_dir), "--data", str(data),
         "--preset", "tiny", "--inner-steps", str(args.inner_steps),
         "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size),
         "--compression", args.compression, "--heartbeat-seconds", "2",
         *(["--outer-lr", str(args.outer_lr)] if args.outer_lr else []),
         *([] if args.outer_momentum is None else ["--outer-momentum", str(args.outer_momentum)]),
         *([] if args.outer_warmup_rounds is None
           else ["--outer-warmup-rounds", str(args.outer_warmup_rounds)])],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    spec = load_run(run_dir).spec
    total_nodes = args.nodes + args.late
    root_ok = os.geteuid() == 0 and not args.loopback
    if args.wan and not root_ok:
        raise SystemExit("--wan needs root (network namespaces and tc)")
    net = Net.create(total_nodes, args.wan) if root_ok else Net.loopback(total_nodes)
    coordinator = None
    nodes: list[Node] = []
    wall_started = time.monotonic()
    extra = ["--overlap"] if args.overlap else []
    try:
        coordinator, address = start_coordinator(run_dir, root, net.host_ip)
        for i in range(args.nodes):
            nodes.append(launch(net, i, f"n{i}", address, root, args.rounds, extra))
        if args.late:
            at = wait_for(
                lambda: max(0, certified_round(run_dir)) or _dead(nodes),
                args.timeout,
                "round 1's certificate",
                interval=2.0,
            )
            for j in range(args.late):  # until the round the first nodes end at
                i = args.nodes + j
                rounds = max(1, args.rounds - at)
                nodes.append(launch(net, i, f"late{j}", address, root, rounds, extra))
        deadline = time.monotonic() + args.timeout
        for node in nodes:
            rc = node.proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            if rc != 0:
                raise RuntimeError(f"node {node.name} exited with {rc}:\n{node.proc.tail()}")
        wire = {n.name: net.bytes(n.index) for n in nodes}
        swarm_s = time.monotonic() - wall_started
        certificate = coordinator_status(run_dir).get("keeper", {}).get("certified") or {}
    finally:
        for node in nodes:
            node.proc.stop()
        if coordinator is not None:
            coordinator.stop()
        net.close()

    stats = {n.name: n.stats() for n in nodes}
    # the swarm's side before the (long) baseline: a run cut short still leaves its figures
    (root / "swarm.json").write_text(json.dumps({"wire": wire, "stats": stats}, indent=1))
    checkpoints = CheckpointDir(run_dir)
    params = sum(p.numel() for p in _model_params(spec))
    # θ_global: the keeper's last checkpoint (its digest is the certificate nodes compare with)
    latest = checkpoints.latest()
    loaded = checkpoints.load(latest)
    swarm_model = model_from_state_dict(loaded.model_config, loaded.params, source=str(latest.path))
    batches = val_batches(data, spec.seq_len, args.val_batch_size, args.val_batches)
    swarm_val = val_loss(swarm_model, batches)

    swarm_tokens = sum(s.get("tokens", 0) for s in stats.values())
    baseline_batch = spec.batch_size * args.nodes
    torch.set_num_threads(min(2, os.cpu_count() or 1))  # alone now: the nodes have left
    baseline, baseline_steps, baseline_s = train_baseline(spec, data, swarm_tokens, baseline_batch)
    baseline_val = val_loss(baseline, batches)

    # every node's θ_global after its last round is bitwise the keeper's of that round (the
    # certified digest; nodes that end at the same round then agree with each other too)
    last_round = max(s.get("round", 0) for s in stats.values())
    keeper_digest = {info.round: info.params_sha256 for info in checkpoints.list()}
    identical = all(
        s.get("round_digest") and s.get("round_digest") == keeper_digest.get(s.get("round"))
        for s in stats.values()
    )
    per_node = {}
    fp32_total = sent_total = 0
    for n in nodes:
        s = stats[n.name]
        fp32 = s.get("steps", 0) * 2 * (total_nodes - 1) / total_nodes * 4 * params
        measured = wire[n.name]
        sent, received = measured if measured else (None, None)
        fp32_total += fp32
        sent_total += sent or 0
        per_node[n.name] = {
            "steps": s.get("steps"),
            "tokens": s.get("tokens"),
            "rounds": s.get("rounds"),
            "utilization": s.get("utilization"),
            "comm_wait_s": s.get("comm_s"),
            "wall_s": s.get("wall_s"),
            "bytes_sent": sent,
            "bytes_received": received,
            "fp32_allreduce_bytes": int(fp32),
            "comm_ratio": (fp32 / sent) if sent else None,
        }
    late = [n for n in nodes if n.name.startswith("late")]
    join_seconds = {
        n.name: stats[n.name]["first_step_at"] - n.launched
        for n in late
        if stats[n.name].get("first_step_at")
    }
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "nodes": args.nodes,
        "late": args.late,
        "rounds": args.rounds,
        "inner_steps": args.inner_steps,
        "seq_len": spec.seq_len,
        "batch_size": spec.batch_size,
        "compression": spec.compression,
        "outer_lr": spec.outer.lr,
        "outer_momentum": spec.outer.momentum,
        "outer_warmup_rounds": spec.outer.warmup_rounds,
        "overlap": args.overlap,
        "params": params,
        "network": ("netns+tbf " + RATE) if args.wan else ("netns" if net.measured else "loopback"),
        "bytes_measured_at": "veth counters (all traffic)" if net.measured else None,
        "comm_ratio": (fp32_total / sent_total) if sent_total else None,
        "val_loss": swarm_val,
        "baseline_val_loss": baseline_val,
        "val_loss_vs_baseline": swarm_val / baseline_val - 1,
        "baseline": {"steps": baseline_steps, "batch": baseline_batch, "seconds": baseline_s},
        "swarm_tokens": swarm_tokens,
        "utilization": {k: v["utilization"] for k, v in per_node.items()},
        "join_seconds": join_seconds,
        "identical_params": identical,
        "final_rounds": {k: s.get("round") for k, s in stats.items()},
        "last_round": last_round,
        "certified": certificate,
        "swarm_seconds": swarm_s,
        "load_average": os.getloadavg(),
        "per_node": per_node,
    }


def _model_params(spec):
    import torch
    from gpt5os.model import RWKV7
    from gpt5os.node.trainer import model_config

    with torch.device("meta"):
        return list(RWKV7(model_config(spec.model)).parameters())


def _dead(nodes: list[Node]) -> None:
    for node in nodes:
        if not node.proc.alive():
            raise RuntimeError(f"node {node.name} exited early:\n{node.proc.tail()}")


def report(r: dict) -> str:
    def gb(x):
        return "-" if x is None else f"{x / 1e6:,.1f} MB"

    lines = [
        f"{r['date']}: {r['nodes']} nodes + {r['late']} late, {r['rounds']} rounds of H = "
        f"{r['inner_steps']}, tiny ({r['params']:,} params), {r['seq_len']}x{r['batch_size']} "
        f"tokens/step, compression {r['compression']}, overlap {r['overlap']}, outer lr "
        f"{r['outer_lr']} momentum {r['outer_momentum']} (warmup {r['outer_warmup_rounds']} "
        f"rounds), network {r['network']}",
        f"val loss: swarm {r['val_loss']:.4f}, baseline {r['baseline_val_loss']:.4f} "
        f"({100 * r['val_loss_vs_baseline']:+.1f}%; baseline {r['baseline']['steps']} steps of "
        f"{r['baseline']['batch']} sequences)",
        "comm ratio (fp32 all-reduce every step / measured bytes sent): "
        + ("not measured (needs root)" if r["comm_ratio"] is None else f"{r['comm_ratio']:.0f}x"),
        f"identical θ_global after round {r['last_round']}: {r['identical_params']}",
        "join to first inner step: "
        + (", ".join(f"{k} {v:.1f} s" for k, v in r["join_seconds"].items()) or "-"),
        f"swarm wall time {r['swarm_seconds']:.0f} s, load average {r['load_average'][0]:.1f}",
    ]
    for name, n in r["per_node"].items():
        util = "-" if n["utilization"] is None else f"{100 * n['utilization']:.1f}%"
        ratio = "-" if n["comm_ratio"] is None else f"{n['comm_ratio']:.0f}x"
        lines.append(
            f"  {name}: {n['steps']} steps, {n['rounds']} rounds, utilization {util} (waited "
            f"{n['comm_wait_s'] or 0:.0f} of {n['wall_s'] or 0:.0f} s), sent {gb(n['bytes_sent'])}"
            f", received {gb(n['bytes_received'])}, fp32 all-reduce "
            f"{gb(n['fp32_allreduce_bytes'])} ({ratio})"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2, help="nodes that start together")
    parser.add_argument("--late", type=int, default=1, help="nodes that join after round 1")
    parser.add_argument("--rounds", type=int, default=2, help="outer rounds per (first) node")
    parser.add_argument("--inner-steps", type=int, default=500)
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument(
        "--compression", default=DEFAULT_COMPRESSION, choices=COMPRESSIONS, help="the run spec's"
    )
    parser.add_argument("--outer-lr", type=float, help="default: the preset's")
    parser.add_argument("--outer-momentum", type=float, help="default: the preset's")
    parser.add_argument("--outer-warmup-rounds", type=int, help="default: the preset's")
    parser.add_argument("--val-batches", type=int, default=32)
    parser.add_argument("--val-batch-size", type=int, default=8)
    parser.add_argument("--overlap", action="store_true", help="nodes run join --overlap")
    parser.add_argument("--wan", action="store_true", help="shape each node to 100 Mbit/s")
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--loopback", action="store_true", help="no namespaces (no byte counts)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--data", type=Path, help="prepared data to reuse (default: prepare)")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temp dir)")
    args = parser.parse_args()
    if args.delay_ms:
        parser.error("--delay-ms: netem (sch_netem) is missing from this kernel; only tc tbf rate")
    if args.nodes < 1 or (args.late and args.rounds < 2):
        parser.error("need --nodes >= 1, and --rounds >= 2 with late joiners")
    root = args.keep or Path(tempfile.mkdtemp(prefix="gpt5os-bench-swarm-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        result = run(args, root)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(result, default=float) if args.json else report(result))
    if not math.isfinite(result["val_loss"]):
        sys.exit(1)


if __name__ == "__main__":
    main()
