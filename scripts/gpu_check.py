"""The Python steps of scripts/gpu_check.sh (issue 14, part 2), one subcommand each, so that a
step can run alone or under compute-sanitizer. Each prints what it measured, one fact a line,
and exits non-zero when a check fails. Needs torch with CUDA and our source (`gpt5os` on the
path); nothing else of the project (no hivemind, no grpc).

    python scripts/gpu_check.py build       # build the extension, print where and how long
    python scripts/gpu_check.py small       # B=2 T=33 H=3 forward+backward, N=16/32/64 (sanitizer)
    python scripts/gpu_check.py accuracy    # T=1000 at w=0.5452 against a float64 reference
    python scripts/gpu_check.py realistic   # B=8 T=4096 H=32 N=64: launch errors, peak memory
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

TESTS = Path(__file__).resolve().parent.parent / "tests"
MODEL_CLAMP = 0.5452  # exp(-exp(-0.5)) rounded up: the strongest decay the model makes
MIB = 2**20


def model_like(bsz: int, t_len: int, h: int, n: int, seed: int = 0) -> list[torch.Tensor]:
    """r, w, k, v, a, b made on the GPU as the model makes them: a = -kk, b = kk * iclr with
    |kk| = 1, w inside the decay clamp; bf16 except w."""
    g = torch.Generator(device="cuda").manual_seed(seed)

    def randn(scale: float = 1.0) -> torch.Tensor:
        return torch.randn(bsz, t_len, h, n, device="cuda", generator=g) * scale

    kk = F.normalize(randn(), dim=-1)
    iclr = torch.rand(bsz, t_len, h, n, device="cuda", generator=g)
    w = torch.exp(-0.6065 * torch.rand(bsz, t_len, h, n, device="cuda", generator=g))
    xs = [randn(0.5), w, randn(0.5), randn(), -kk, kk * iclr]
    return [x if i == 1 else x.to(torch.bfloat16) for i, x in enumerate(xs)]


def build() -> int:
    from gpt5os.model import wkv_cuda

    t0 = time.perf_counter()
    ext = wkv_cuda._extension()
    print(f"extension built/loaded in {time.perf_counter() - t0:.1f} s: {ext.__file__}")
    print(f"device {torch.cuda.get_device_name()}, capability {torch.cuda.get_device_capability()}")
    return 0


def small() -> int:
    """Every kernel variant once on a small problem with a partial last chunk (33 = 2*16 + 1)."""
    from gpt5os.model import wkv7

    for n in (16, 32, 64):
        xs = [x.requires_grad_() for x in model_like(2, 33, 3, n, seed=n)]
        s0 = torch.randn(2, 3, n, n, device="cuda", requires_grad=True)
        y, s = wkv7(*xs, state=s0, impl="cuda")
        (y.float().square().sum() + s.square().sum()).backward()
        with torch.no_grad():
            y2, s2 = wkv7(*xs, state=s0, impl="cuda")
        torch.cuda.synchronize()
        same = torch.equal(y, y2) and torch.equal(s, s2)
        finite = all(bool(x.grad.isfinite().all()) for x in (*xs, s0))
        print(f"N={n}: forward+backward and no-grad forward ran; no-grad equals grad: {same}; "
              f"gradients finite: {finite}")  # fmt: skip
        if not finite:  # a mismatch is reported above and left to the tests to judge
            return 1
    return 0


def accuracy() -> int:
    sys.path.insert(0, str(TESTS))
    from test_model_cuda import GRAD_NAMES, TOL, errors_against_reference
    from test_model_wkv import make_inputs

    xs, state = make_inputs(2, 1000, 4, 64, with_state=True, seed=11)
    xs[1] = torch.full_like(xs[1], MODEL_CLAMP)
    t0 = time.perf_counter()
    errors = errors_against_reference(xs, state, seed=1)
    tol = TOL | dict.fromkeys(GRAD_NAMES[:6], 5e-3)
    print(f"T=1000 B=2 H=4 N=64, w={MODEL_CLAMP} everywhere, against float64 "
          f"({time.perf_counter() - t0:.1f} s); relative error per output:")  # fmt: skip
    for name, err in errors.items():
        print(
            f"  {name:>6} {err:.2e}  (limit {tol[name]:.0e}){'  OVER' if err > tol[name] else ''}"
        )
    return int(any(err > tol[name] for name, err in errors.items()))


def realistic() -> int:
    """One training-sized call: finishes without a launch error, finite, and its peak memory
    against what the buffers should take."""
    from gpt5os.model import wkv7

    bsz, t_len, h, n = 8, 4096, 32, 64
    xs = [x.requires_grad_() for x in model_like(bsz, t_len, h, n)]
    s0 = torch.zeros(bsz, h, n, n, device="cuda", requires_grad=True)
    numel = bsz * t_len * h * n
    saved = numel * 4 + bsz * h * (t_len // 16) * n * n * 4  # sa and the chunk states, fp32
    for label, grad in (("warm-up", True), ("forward+backward", True), ("no-grad forward", False)):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        with torch.set_grad_enabled(grad):
            y, s = wkv7(*xs, state=s0, impl="cuda")
            if grad:
                (y.float().sum() + s.sum()).backward()
        torch.cuda.synchronize()
        ms = (time.perf_counter() - t0) * 1e3
        peak = torch.cuda.max_memory_allocated() - base
        outs = [y, s] + ([x.grad for x in (*xs, s0)] if grad else [])
        finite = all(bool(x.isfinite().all()) for x in outs)
        if label != "warm-up":
            print(f"B={bsz} T={t_len} H={h} N={n} {label}: {ms:.1f} ms, peak {peak / MIB:.0f} MiB "
                  f"above the inputs (sa + chunk states would be {saved / MIB:.0f} MiB), "
                  f"finite: {finite}")  # fmt: skip
        if not finite:
            return 1
        for x in (*xs, s0):
            x.grad = None
        del y, s
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("step", choices=["build", "small", "accuracy", "realistic"])
    step = p.parse_args().step
    if not torch.cuda.is_available():
        print(f"{step}: skipped, no CUDA device")
        return 0
    return {"build": build, "small": small, "accuracy": accuracy, "realistic": realistic}[step]()


if __name__ == "__main__":
    sys.exit(main())
