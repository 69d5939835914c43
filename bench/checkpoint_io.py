"""Cost of the run's checkpoints (coordinator/checkpoints.py) against plain torch.save/torch.load.

Writes θ_global and the outer momentum of a preset's model with `CheckpointDir.write` (safetensors,
two sha256 digests, fsync, rename, fsync of the folder), loads it back with `CheckpointDir.load`
(digests verified), and times the same tensors through `torch.save` + fsync and `torch.load` in
the same run as the baseline. Also times `latest()` (header only, no torch) and the export to the
official `.pth`. Repeats are interleaved; medians are printed.

    .venv/bin/python bench/checkpoint_io.py --preset tiny
    .venv/bin/python bench/checkpoint_io.py --preset 0.1b --repeat 3 --dir /tmp/ckpt-bench

Memory: about 4x the fp32 parameter bytes at peak (0.1b: ~3 GB).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from gpt5os.coordinator.checkpoints import CheckpointDir
from gpt5os.coordinator.model_files import export_checkpoint
from gpt5os.model import RWKV7, ModelConfig


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def torch_save_fsync(tensors: dict[str, torch.Tensor], path: Path) -> None:
    torch.save(tensors, path)
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, help="Scratch folder (default: a temp dir, removed).")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    config = ModelConfig.from_preset(args.preset)
    with torch.device("meta"):
        shapes = {n: p.shape for n, p in RWKV7(config, init_weights=False).named_parameters()}
    g = torch.Generator().manual_seed(0)
    params = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    momentum = {n: torch.randn(s, generator=g) for n, s in shapes.items()}
    numel = sum(p.numel() for p in params.values())
    scratch = Path(tempfile.mkdtemp(dir=args.dir))
    ckpts = CheckpointDir(scratch / "run", keep=2)
    both = {**params, **{"m." + n: t for n, t in momentum.items()}}
    times: dict[str, list[float]] = {k: [] for k in ("write", "torch.save", "load", "torch.load")}
    times |= {"latest (header)": [], "export rwkv-pth": []}
    try:
        for r in range(args.repeat):
            times["write"].append(
                timed(
                    lambda r=r: ckpts.write(
                        params=params,
                        momentum=momentum,
                        round=r,
                        tokens=r,
                        run_spec_json="{}",
                        model_config=config,
                    )
                )
            )
            base = scratch / "baseline.pth"
            times["torch.save"].append(timed(lambda base=base: torch_save_fsync(both, base)))
            times["latest (header)"].append(timed(ckpts.latest))
            info = ckpts.latest()
            times["load"].append(timed(lambda info=info: ckpts.load(info)))
            times["torch.load"].append(timed(lambda base=base: torch.load(base)))
            out = scratch / "export.pth"
            times["export rwkv-pth"].append(
                timed(lambda out=out: export_checkpoint(scratch / "run", "rwkv-pth", out))
            )
        size = ckpts.latest().path.stat().st_size
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            f"preset {args.preset}: {numel:,} parameters, checkpoint {size / 1e6:,.1f} MB, "
            f"{args.repeat} repeats, medians, load average {os.getloadavg()[0]:.1f}"
        )
        for k, v in med.items():
            print(
                f"  {k:<18} {v * 1000:10.1f} ms   runs: " + " ".join(f"{x:.3f}" for x in times[k])
            )
        print(f"  write / torch.save+fsync: {med['write'] / med['torch.save']:.2f}x")
        print(f"  load (sha verified) / torch.load: {med['load'] / med['torch.load']:.2f}x")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
