"""Generation throughput: prefill and decode tokens/s of a 0.1b-shaped RWKV-7 (random weights)
beside the `rwkv` package running the same exported weights (x070, "cpu fp32"), in one run.

    python bench/generate.py                          # 0.1b, prefill 512, decode 64
    python bench/generate.py --preset tiny --prefill 128 --decode 32
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
from gpt5os.model import RWKV7, ModelConfig, export_rwkv_pth


def ours(model: RWKV7, prompt: list[int], decode: int) -> tuple[float, float, list[int]]:
    """(prefill s, decode s, greedy tokens): parallel prefill, then RNN steps."""
    with torch.inference_mode():
        t0 = time.perf_counter()
        logits, state = model(torch.tensor([prompt]), return_state=True, only_last=True)
        t1 = time.perf_counter()
        out = []
        for _ in range(decode):
            token = int(logits[0, -1].argmax())
            out.append(token)
            logits, state = model(torch.tensor([[token]]), state, return_state=True)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, out


def theirs(pth_stem: str, prompt: list[int], decode: int) -> tuple[float, float, list[int]]:
    os.environ["RWKV_V7_ON"] = "1"  # read when rwkv.model is imported
    os.environ.setdefault("RWKV_CUDA_ON", "0")
    from rwkv.model import RWKV

    model = RWKV(model=pth_stem, strategy="cpu fp32")
    with torch.inference_mode():
        t0 = time.perf_counter()
        logits, state = model.forward(prompt, None)
        t1 = time.perf_counter()
        out = []
        for _ in range(decode):
            token = int(logits.argmax())
            out.append(token)
            logits, state = model.forward([token], state)
        t2 = time.perf_counter()
    return t1 - t0, t2 - t1, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="0.1b")
    p.add_argument("--prefill", type=int, default=512)
    p.add_argument("--decode", type=int, default=64)
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (0: torch's default). On a shared machine, 1 avoids "
                   "OpenMP threads stalling each other when a core is taken")  # fmt: skip
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ModelConfig.from_preset(args.preset)
    # states decay towards zero: without flush-to-zero, denormal floats make every CPU op on
    # them ~10x slower (both implementations benefit)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    model = RWKV7(cfg).eval()
    with torch.no_grad():  # reference init zeroes some outputs: perturb so every path computes
        for prm in model.parameters():
            prm.add_(torch.randn_like(prm) * 0.02)
    prompt = torch.randint(0, cfg.vocab_size, (args.prefill,)).tolist()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, preset {args.preset}, "
          f"prefill {args.prefill}, decode {args.decode}, fp32 CPU")  # fmt: skip
    ours(model, prompt[:16], 2)  # warm-up
    ours_pre, ours_dec, ours_tokens = ours(model, prompt, args.decode)
    with tempfile.TemporaryDirectory() as tmp:
        stem = str(Path(tmp) / "model")
        export_rwkv_pth(model, stem + ".pth", dtype=torch.float32)
        del model
        theirs(stem, prompt[:16], 2)  # warm-up (TorchScript compiles on first calls)
        their_pre, their_dec, their_tokens = theirs(stem, prompt, args.decode)
    same = sum(a == b for a, b in zip(ours_tokens, their_tokens, strict=True))
    print(f"{'':>18} {'prefill tok/s':>14} {'decode tok/s':>13}")
    print(f"{'gpt5os':>18} {args.prefill / ours_pre:>14.1f} {args.decode / ours_dec:>13.1f}")
    print(
        f"{'rwkv package':>18} {args.prefill / their_pre:>14.1f} {args.decode / their_dec:>13.1f}"
    )
    print(f"{'ratio':>18} {their_pre / ours_pre:>13.2f}x {their_dec / ours_dec:>12.2f}x")
    print(f"greedy tokens identical: {same}/{args.decode}")


if __name__ == "__main__":
    main()
