"""Training-step throughput: RWKV-7 (a preset) beside a same-size GPT (torch SDPA), same run.

One step = forward, cross-entropy, backward, AdamW step. Both models get the same vocabulary,
width, depth and a 4x MLP, so the comparison is the sequence mixer (WKV vs causal attention).
On CUDA both run under bf16 autocast; printed per model: tokens/s, peak memory (CUDA) and MFU,
the model FLOPs a second (6 x the parameters that multiply, i.e. all but the embedding tables,
plus causal attention's 6 x n_layer x T x C for the GPT; WKV's own few FLOPs are left out) over
--peak-tflops (989: the H100/H200 SXM datasheet's dense bf16; ~790 was measured on an H200 in a
large matrix product). A model that runs out of memory is reported as such, not fatal.

    python bench/train_step.py                                   # tiny, T=128, B=4 (CPU)
    python bench/train_step.py --preset 0.1b --seq-len 512 --batch 2
    python bench/train_step.py --device cuda --preset 0.4b --seq-len 4096 --batch 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from gpt5os.model import RWKV7, ModelConfig
from torch import nn


class GPTBlock(nn.Module):
    def __init__(self, c: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln1, self.ln2 = nn.LayerNorm(c), nn.LayerNorm(c)
        self.qkv, self.proj = nn.Linear(c, 3 * c, bias=False), nn.Linear(c, c, bias=False)
        self.fc, self.out = nn.Linear(c, 4 * c, bias=False), nn.Linear(4 * c, c, bias=False)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=-1)
        q, k, v = (z.view(b, t, self.n_head, -1).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    """nanoGPT-shaped baseline of the same width, depth and vocabulary."""

    def __init__(self, cfg: ModelConfig, max_len: int) -> None:
        super().__init__()
        self.emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos = nn.Embedding(max_len, cfg.n_embd)
        self.blocks = nn.ModuleList(GPTBlock(cfg.n_embd, cfg.n_head) for _ in range(cfg.n_layer))
        self.ln_out = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)

    def loss(self, idx, targets):
        x = self.emb(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_out(x))
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())


def matmul_params(model: nn.Module) -> int:
    """Parameters that take part in matrix products: all but the embedding tables."""
    tables = sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding))
    return sum(p.numel() for p in model.parameters()) - tables


def flops_per_token(model: nn.Module, cfg: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), as in the MFU convention of PaLM."""
    attention = 6 * cfg.n_layer * seq_len * cfg.n_embd if isinstance(model, GPT) else 0
    return 6 * matmul_params(model) + attention


def tokens_per_second(model, args, device) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    vocab = model.head.weight.shape[0]
    data = torch.randint(0, vocab, (args.batch, args.seq_len + 1), generator=g).to(device)
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else _null()

    def step():
        with amp:
            loss = model.loss(data[:, :-1], data[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return args.batch * args.seq_len / statistics.median(times)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (0: torch's default). On a shared machine, 1 avoids "
                   "OpenMP threads stalling each other when a core is taken")  # fmt: skip
    p.add_argument("--peak-tflops", type=float, default=989.0,
                   help="the device's peak for MFU (989: H100/H200 SXM dense bf16)")  # fmt: skip
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = ModelConfig.from_preset(args.preset)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device {args.device}, "
          f"preset {args.preset}, T={args.seq_len}, B={args.batch}")  # fmt: skip
    cuda = args.device.startswith("cuda")
    rows = []
    for name, build in (
        ("RWKV-7", lambda: RWKV7(cfg)),
        ("GPT (SDPA)", lambda: GPT(cfg, args.seq_len)),
    ):
        model = build().to(args.device)
        n_params = sum(p.numel() for p in model.parameters())
        flops = flops_per_token(model, cfg, args.seq_len)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        try:
            tps = tokens_per_second(model, args, args.device)
        except torch.OutOfMemoryError:
            tps = None
        peak = torch.cuda.max_memory_allocated() if cuda else 0
        rows.append((name, n_params, tps, peak, flops))
        del model
        if cuda:
            torch.cuda.empty_cache()
    base = rows[1][2]
    for name, n_params, tps, peak, flops in rows:
        line = f"{name:>12}  {n_params / 1e6:8.1f}M params  "
        if tps is None:
            print(line + f"out of memory (peak {peak / 2**30:.1f} GiB)")
            continue
        line += f"{tps:10.0f} tokens/s  "
        line += f"{tps / base:5.2f}x GPT  " if base else "   - x GPT  "
        if cuda:
            line += f"peak {peak / 2**30:6.1f} GiB  "
        line += f"MFU {tps * flops / (args.peak_tflops * 1e12):6.1%}"
        print(line)


if __name__ == "__main__":
    main()
