"""WKV-7 forward+backward timings for every implementation present, with ratios.

CPU: "reference" (per-step loop), "cpu" (chunked), and fla-core's pure-PyTorch
`dplr_chunkwise` when importable (it needs fla-core, einops and triton; we never install them).
GPU: "cuda" (ours) beside fla's Triton `chunk_rwkv7` when importable, plus "reference" at small
sizes only.

    python bench/wkv.py                      # GPU sizes when CUDA is available, else CPU
    python bench/wkv.py --device cuda        # GPU sizes (B=8 T=4096 H=64 N=64 bf16 included)
    python bench/wkv.py --sizes 1,1024,4,64 2,512,8,64 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from gpt5os.model import wkv7

CPU_SIZES = [(1, 1024, 4, 64), (1, 256, 4, 64), (2, 2048, 4, 64), (4, 512, 12, 64)]
GPU_SIZES = [(1, 1024, 4, 64), (8, 1024, 32, 64), (8, 4096, 64, 64)]
REFERENCE_MAX_WORK = 1024 * 8  # B*T*H beyond which the per-step loop is too slow to time


def make_inputs(bsz, t_len, h, n, device, dtype):
    g = torch.Generator().manual_seed(0)
    kk = F.normalize(torch.randn(bsz, t_len, h, n, generator=g), dim=-1)
    iclr = torch.rand(bsz, t_len, h, n, generator=g)
    w = torch.exp(-0.6065 * torch.rand(bsz, t_len, h, n, generator=g))
    r, k = (torch.randn(bsz, t_len, h, n, generator=g) * 0.5 for _ in range(2))
    v = torch.randn(bsz, t_len, h, n, generator=g)
    xs = [r, w, k, v, -kk, kk * iclr]
    xs = [x.to(device=device, dtype=torch.float32 if i == 1 else dtype) for i, x in enumerate(xs)]
    s0 = torch.randn(bsz, h, n, n, generator=g).to(device) * 0.1
    return [x.requires_grad_() for x in xs], s0.requires_grad_()


def ours(impl: str) -> Callable:
    return lambda r, w, k, v, a, b, s0: wkv7(r, w, k, v, a, b, state=s0, impl=impl)


def fla_naive() -> Callable | None:
    try:
        from fla.ops.generalized_delta_rule.dplr.naive import dplr_chunkwise
    except Exception:
        return None

    def run(r, w, k, v, a, b, s0):
        # fla: [B, H, T, N], q scaled by N^-0.5, log-decay, state key x value, T % chunk == 0
        n = r.shape[-1]
        q, kk, vv, aa, bb = (x.transpose(1, 2) for x in (r * n**0.5, k, v, a, b))
        y, s = dplr_chunkwise(q, kk, vv, aa, bb, torch.log(w).transpose(1, 2),
                              initial_state=s0.transpose(-1, -2), chunk_size=32)  # fmt: skip
        return y.transpose(1, 2), s

    return run


def fla_chunk_rwkv7() -> Callable | None:
    try:
        from fla.ops.rwkv7 import chunk_rwkv7
    except Exception:
        return None

    def run(r, w, k, v, a, b, s0):
        y, s = chunk_rwkv7(r, torch.log(w), k, v, a, b, scale=1.0,
                           initial_state=s0.transpose(-1, -2), output_final_state=True)  # fmt: skip
        return y, s

    return run


def time_fwd_bwd(fn: Callable, xs, s0, repeat: int, device: str) -> float:
    """Median seconds of forward + backward (after one warm-up)."""

    def once():
        y, s = fn(*xs, s0)
        (y.float().sum() + s.float().sum()).backward()
        for x in (*xs, s0):
            x.grad = None

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    once()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        once()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                   choices=["cpu", "cuda"])  # fmt: skip
    p.add_argument("--sizes", nargs="*", help="B,T,H,N tuples")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (0: torch's default). On a shared machine, 1 avoids "
                   "OpenMP threads stalling each other when a core is taken")  # fmt: skip
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.sizes:
        sizes = [tuple(int(x) for x in s.split(",")) for s in args.sizes]
    else:
        sizes = CPU_SIZES if args.device == "cpu" else GPU_SIZES
    dtype = torch.float32 if args.device == "cpu" else torch.bfloat16
    impls: dict[str, Callable | None] = {"reference": ours("reference")}
    if args.device == "cpu":
        impls |= {"cpu": ours("cpu"), "fla dplr_chunkwise (naive)": fla_naive()}
        baseline = "reference"
    else:
        impls |= {"cuda": ours("cuda"), "fla chunk_rwkv7": fla_chunk_rwkv7()}
        baseline = "fla chunk_rwkv7" if impls["fla chunk_rwkv7"] else "reference"
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}")
    for name, fn in impls.items():
        if fn is None:
            print(f"  ({name}: not importable, skipped)")
    print(
        f"{'B,T,H,N':>16} {'impl':>28} {'fwd+bwd ms':>11} {'tokens/s':>10} {'vs ' + baseline:>18}"
    )
    for size in sizes:
        bsz, t_len, h, n = size
        xs, s0 = make_inputs(bsz, t_len, h, n, args.device, dtype)
        results: dict[str, float] = {}
        for name, fn in impls.items():
            if fn is None:
                continue
            if name == "reference" and bsz * t_len * h > REFERENCE_MAX_WORK:
                continue
            if name.startswith("fla dplr") and t_len % 32:
                continue
            results[name] = time_fwd_bwd(fn, xs, s0, args.repeat, args.device)
        base = results.get(baseline)
        for name, sec in results.items():
            ratio = f"{base / sec:.1f}x faster" if base else "-"
            print(f"{str(size):>16} {name:>28} {sec * 1e3:>11.2f} {bsz * t_len / sec:>10.0f} "
                  f"{ratio:>18}")  # fmt: skip


if __name__ == "__main__":
    main()
