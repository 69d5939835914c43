"""Generation throughput: prefill and decode tokens/s of a 0.1b-shaped RWKV-7 (random weights)
beside the `rwkv` package running the same exported weights (x070, "cpu fp32"), in one run,
interleaved (prefills alternate, decode steps alternate token by token) so both see the same load.

    python bench/generate.py                          # 0.1b, prefill 512, decode 64
    python bench/generate.py --preset tiny --prefill 128 --decode 32
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from gpt5os.model import RWKV7, ModelConfig, export_rwkv_pth
from gpt5os.model.generation import RnnDecoder, relayout_for_decoding


def load_theirs(pth_stem: str):
    os.environ["RWKV_V7_ON"] = "1"  # read when rwkv.model is imported
    os.environ.setdefault("RWKV_CUDA_ON", "0")
    from rwkv.model import RWKV

    return RWKV(model=pth_stem, strategy="cpu fp32")


def run_both(model: RWKV7, theirs, prompt: list[int], decode: int, rounds: int) -> dict:
    """Prefill (best of `rounds`) and greedy decode of both, interleaved so that both see the
    same load on a shared machine: prefills alternate, decode steps alternate token by token.
    Ours: the parallel forward, then `RnnDecoder.step` (what `generate_ids` runs)."""
    t = {"ours_pre": [], "their_pre": [], "ours_dec": [], "their_dec": []}
    with torch.inference_mode():
        for _ in range(rounds):
            t0 = time.perf_counter()
            logits, state = model(torch.tensor([prompt]), return_state=True, only_last=True)
            t1 = time.perf_counter()
            their_logits, their_state = theirs.forward(prompt, None)
            t2 = time.perf_counter()
            t["ours_pre"].append(t1 - t0)
            t["their_pre"].append(t2 - t1)
        logits = logits[:, -1]
        decoder = RnnDecoder(model)
        t["ours_tokens"], t["their_tokens"] = [], []
        for _ in range(decode):
            t0 = time.perf_counter()
            token = int(logits[0].argmax())
            logits = decoder.step(torch.tensor([token]), state)
            t1 = time.perf_counter()
            their_token = int(their_logits.argmax())
            their_logits, their_state = theirs.forward([their_token], their_state)
            t2 = time.perf_counter()
            t["ours_dec"].append(t1 - t0)
            t["their_dec"].append(t2 - t1)
            t["ours_tokens"].append(token)
            t["their_tokens"].append(their_token)
    return t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="0.1b")
    p.add_argument("--prefill", type=int, default=512)
    p.add_argument("--decode", type=int, default=64)
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (0: torch's default). On a shared machine, 1 avoids "
                   "OpenMP threads stalling each other when a core is taken")  # fmt: skip
    p.add_argument("--rounds", type=int, default=2, help="prefill rounds (best of)")
    p.add_argument("--keep-layout", action="store_true",
                   help="skip relayout_for_decoding (keep nn.Linear's [out, in] weights)")  # fmt: skip
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
    if not args.keep_layout:  # weights as [in, out] rows, as the rwkv package stores them too
        relayout_for_decoding(model)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, preset {args.preset}, "
          f"prefill {args.prefill}, decode {args.decode}, fp32 CPU, weight layout "
          f"{'[out, in] (nn.Linear)' if args.keep_layout else '[in, out] (relayout_for_decoding)'}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        stem = str(Path(tmp) / "model")
        export_rwkv_pth(model, stem + ".pth", dtype=torch.float32)
        theirs = load_theirs(stem)
    run_both(model, theirs, prompt[:16], 2, 1)  # warm-up (TorchScript compiles on first calls)
    t = run_both(model, theirs, prompt, args.decode, args.rounds)
    kernel = RnnDecoder(model).kernel
    print(f"gpt5os decode: {'decode_cpu kernels' if kernel else 'PyTorch ops'}")
    ours_pre, their_pre = min(t["ours_pre"]), min(t["their_pre"])
    ours_dec, their_dec = sum(t["ours_dec"]), sum(t["their_dec"])
    ours_med, their_med = statistics.median(t["ours_dec"]), statistics.median(t["their_dec"])
    ours_tokens, their_tokens = t["ours_tokens"], t["their_tokens"]
    same = sum(a == b for a, b in zip(ours_tokens, their_tokens, strict=True))
    print(f"{'':>18} {'prefill tok/s':>14} {'decode tok/s':>13}")
    print(f"{'gpt5os':>18} {args.prefill / ours_pre:>14.1f} {args.decode / ours_dec:>13.1f}")
    print(
        f"{'rwkv package':>18} {args.prefill / their_pre:>14.1f} {args.decode / their_dec:>13.1f}"
    )
    print(f"{'ratio':>18} {their_pre / ours_pre:>13.2f}x {their_dec / ours_dec:>12.2f}x")
    print(f"greedy tokens identical: {same}/{args.decode}")
    print(f"decode, median step: gpt5os {ours_med * 1e3:.1f} ms ({1 / ours_med:.1f} tok/s), rwkv "
          f"package {their_med * 1e3:.1f} ms ({1 / their_med:.1f} tok/s), ratio "
          f"{their_med / ours_med:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
