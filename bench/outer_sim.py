"""DiLoCo's outer loop in one process, to compare outer-optimizer settings without a swarm.

K workers (each its own model and inner AdamW, its own shards) train H inner steps from θ_global;
their mean pseudo-gradient goes through node/diloco.py's OuterState with each setting's outer
learning rate and momentum for that round (coordinator/run_spec.py `outer_schedule`, or an
alternative warmup to compare it with). In the same
run an AdamW baseline trains the same tokens with K × the batch (what synchronous data-parallel
training would do). Prints θ_global's validation loss after every round, per setting, and the
baseline's at the end. No network, no hivemind: bench/swarm.py measures the real thing.

Usage (prepared data, e.g. bench/swarm.py's --data):
  .venv/bin/python bench/outer_sim.py --data DIR [--workers 2] [--inner-steps 500] [--rounds 3]
      [--seq-len 32] [--batch-size 1] --setting warmup=0 --setting warmup=3,kind=lr ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from swarm import train_baseline, val_batches, val_loss  # noqa: E402


def parse_setting(text: str) -> dict:
    """ "lr=0.7,momentum=0.9,warmup=3,kind=lr" → OuterOptimizerSpec fields (unnamed ones: the
    preset's, warmup included) and the kind of warmup (`ramp` in main; default momentum)."""
    names = {"lr": "lr", "momentum": "momentum", "warmup": "warmup_rounds", "kind": "kind"}
    out: dict = {}
    for part in filter(None, text.split(",")):
        key, _, value = part.partition("=")
        if key == "kind":
            out["kind"] = value
            continue
        if key not in names:
            raise SystemExit(f"--setting: unknown {key!r} (use {', '.join(names)})")
        out[names[key]] = int(value) if key == "warmup" else float(value)
    return out


def worker_batches(spec, data_dir: Path, worker: int, workers: int) -> Iterator:
    """Worker k's batches: shards k, k + K, … in the run's seeded order, epoch after epoch."""
    import numpy as np
    import torch
    from gpt5os.coordinator.manifest import load_manifest
    from gpt5os.node.shard_feed import cut_batches, sequence_count, sequence_order

    shards = load_manifest(data_dir).train[worker::workers]
    epoch = 0
    while True:
        for shard in shards:
            data = np.fromfile(data_dir / shard.path, dtype="<u2")
            order = sequence_order(
                spec.seed, shard.shard_id, epoch, sequence_count(len(data), spec.seq_len)
            )
            for inputs, targets in cut_batches(data, spec.seq_len, spec.batch_size, order):
                if targets.shape[0] == spec.batch_size:
                    yield torch.from_numpy(inputs), torch.from_numpy(targets)
        epoch += 1


def simulate(spec, data_dir: Path, workers: int, rounds: int, batches) -> list[float]:
    """θ_global's validation loss after each round."""
    import torch
    from gpt5os.node import diloco
    from gpt5os.node.diloco import OuterState
    from gpt5os.node.schedule import inner_lr
    from gpt5os.node.trainer import build_inner_optimizer, initial_model

    global_model = initial_model(spec)
    outer = OuterState(global_model, spec.outer)
    models = [initial_model(spec) for _ in range(workers)]
    opts = [build_inner_optimizer(m, spec.inner) for m in models]
    feeds = [worker_batches(spec, data_dir, k, workers) for k in range(workers)]
    step_tokens = spec.seq_len * spec.batch_size
    losses = []
    for r in range(rounds):
        deltas = [torch.zeros_like(g) for g in outer.global_params]
        for model, opt, feed in zip(models, opts, feeds, strict=True):
            with torch.no_grad():
                for p, g in zip(model.parameters(), outer.global_params, strict=True):
                    p.copy_(g)
            for step in range(spec.inner_steps):
                # the swarm's tokens as a node estimates them: the others train at its pace
                swarm = outer.swarm_tokens + workers * step * step_tokens
                for group in opt.param_groups:
                    group["lr"] = inner_lr(spec.inner, swarm)
                inputs, targets = next(feed)
                model.loss(inputs, targets).backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), spec.inner.grad_clip)
                opt.step()
                opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                for d, g, p in zip(deltas, outer.global_params, model.parameters(), strict=True):
                    d.add_((g - p) / workers)
        lr, momentum = diloco.outer_schedule(spec.outer, outer.round + 1)
        outer.apply_outer_step(
            deltas, tokens=workers * spec.inner_steps * step_tokens, group_size=workers
        )
        losses.append(val_loss(global_model, batches))
        print(f"  round {r + 1}: outer lr {lr:.3f} momentum {momentum:.3f}, "
              f"val {losses[-1]:.4f}", flush=True)  # fmt: skip
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--inner-steps", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    # bench/swarm.py's defaults
    parser.add_argument("--seq-len", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--val-batches", type=int, default=32)
    parser.add_argument("--val-batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--setting", action="append", default=[], type=parse_setting)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--only-baseline", action="store_true", help="(run beside a sim)")
    args = parser.parse_args()

    import torch
    from gpt5os.coordinator.run_spec import preset_spec

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    spec = preset_spec("tiny", run_id="outer-sim")
    spec.seq_len, spec.batch_size, spec.inner_steps = (
        args.seq_len,
        args.batch_size,
        args.inner_steps,
    )
    batches = val_batches(args.data, spec.seq_len, args.val_batch_size, args.val_batches)
    results = {}
    from gpt5os.coordinator.run_spec import outer_schedule
    from gpt5os.node import diloco

    def ramp(kind):
        """kind "momentum": the run spec's own schedule; "lr" (a linear lr warmup, full
        momentum) and "both": alternatives it was compared with (bench/RESULTS.md)."""
        if kind == "momentum":
            return outer_schedule

        def schedule(outer, r):
            w = outer.warmup_rounds
            if w <= 0 or r > w:
                return outer.lr, outer.momentum
            lr = outer.lr * r / w
            return lr, outer.momentum * (r - 1) / w if kind == "both" else outer.momentum

        return schedule

    for setting in [] if args.only_baseline else args.setting or [{}]:
        setting = dict(setting)
        kind = setting.pop("kind", "momentum")
        if kind not in ("momentum", "lr", "both"):
            raise SystemExit(f"--setting kind={kind}: use momentum, lr or both")
        diloco.outer_schedule = ramp(kind)
        run_spec = replace(spec, outer=replace(spec.outer, **setting))
        setting["kind"] = kind
        name = json.dumps(setting or "preset")
        print(f"{name}:", flush=True)
        started = time.monotonic()
        results[name] = simulate(run_spec, args.data, args.workers, args.rounds, batches)
        print(f"  ({time.monotonic() - started:.0f} s)", flush=True)
    if not args.no_baseline:
        tokens = args.workers * args.inner_steps * args.rounds * spec.seq_len * spec.batch_size
        started = time.monotonic()
        model, steps, _ = train_baseline(spec, args.data, tokens, args.workers * spec.batch_size)
        base = val_loss(model, batches)
        print(f"baseline: {steps} steps of {args.workers * spec.batch_size} sequences, "
              f"val {base:.4f} ({time.monotonic() - started:.0f} s)")  # fmt: skip
        for name, losses in results.items():
            print(f"{name}: last round {losses[-1]:.4f} ({100 * (losses[-1] / base - 1):+.1f}%)")


if __name__ == "__main__":
    main()
