"""The CUDA WKV-7 path: our kernel (kernels/wkv7.cu), built on first use and cached by
torch.utils.cpp_extension, exposed as torch.library custom ops with fake implementations (so
torch.compile can trace through it) and an autograd formula that calls the backward kernel.

Precision contract: r, k, v, a, b and y are bf16; the decay w, the state and every accumulation
are fp32 (a decay like 0.9998 is 1.0 in bf16, which would stop the state from ever forgetting).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch import Tensor

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
CHUNK = 16  # must match WKV7_CHUNK in the sources (state checkpoint interval of the backward)
HEAD_SIZES = (16, 32, 64)
NVCC_FLAGS = ["-O3", "-Xptxas=-O3", "--extra-device-vectorization", f"-DWKV7_CHUNK={CHUNK}"]


@functools.cache
def _extension():
    """Compile (first call only; ~1 min) and load the extension; cached on disk by torch."""
    from torch.utils.cpp_extension import load

    return load(
        name="gpt5os_wkv7",
        sources=[str(KERNEL_DIR / "wkv7_op.cpp"), str(KERNEL_DIR / "wkv7.cu")],
        extra_cflags=["-O3", f"-DWKV7_CHUNK={CHUNK}"],
        extra_cuda_cflags=NVCC_FLAGS,
        verbose=os.environ.get("GPT5OS_VERBOSE_BUILD") == "1",
    )


@torch.library.custom_op("gpt5os::wkv7_forward", mutates_args=())
def wkv7_forward_op(
    r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, s0: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, final state, per-chunk saved states, per-step S a) from the forward kernel."""
    with torch.cuda.device(r.device):
        stream = torch.cuda.current_stream(r.device).cuda_stream
        y, s_out, s_saved, sa = _extension().forward(r, w, k, v, a, b, s0, stream)
    return y, s_out, s_saved, sa


@wkv7_forward_op.register_fake
def _forward_fake(r, w, k, v, a, b, s0):
    bsz, t_len, h, n = r.shape
    n_chunks = (t_len + CHUNK - 1) // CHUNK
    return (
        torch.empty_like(r),
        s0.new_empty(bsz, h, n, n),
        s0.new_empty(bsz, h, n_chunks, n, n),
        w.new_empty(bsz, t_len, h, n),
    )


@torch.library.custom_op("gpt5os::wkv7_backward", mutates_args=())
def wkv7_backward_op(
    r: Tensor,
    w: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
    dy: Tensor,
    ds_out: Tensor,
    s_saved: Tensor,
    sa: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(dr, dw, dk, dv, da, db, d initial state) from the backward kernel."""
    with torch.cuda.device(r.device):
        stream = torch.cuda.current_stream(r.device).cuda_stream
        return tuple(_extension().backward(r, w, k, v, a, b, dy, ds_out, s_saved, sa, stream))


@wkv7_backward_op.register_fake
def _backward_fake(r, w, k, v, a, b, dy, ds_out, s_saved, sa):
    return tuple(torch.empty_like(x) for x in (r, w, k, v, a, b, ds_out))


def _setup_context(ctx, inputs, output):
    r, w, k, v, a, b, _ = inputs
    _, _, s_saved, sa = output
    ctx.save_for_backward(r, w, k, v, a, b, s_saved, sa)


def _backward(ctx, dy, ds_out, _d_saved, _d_sa):
    r, w, k, v, a, b, s_saved, sa = ctx.saved_tensors
    bsz, _, h, n = r.shape
    dy = torch.zeros_like(r) if dy is None else dy.to(torch.bfloat16).contiguous()
    if ds_out is None:
        ds_out = torch.zeros(bsz, h, n, n, device=r.device, dtype=torch.float32)
    return wkv7_backward_op(r, w, k, v, a, b, dy, ds_out.float().contiguous(), s_saved, sa)


wkv7_forward_op.register_autograd(_backward, setup_context=_setup_context)


def wkv7_cuda(
    r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Same contract as `gpt5os.model.wkv7` (``impl="cuda"``); y comes back in r's dtype."""
    if not r.is_cuda:
        raise ValueError("wkv7 impl='cuda' needs CUDA tensors; use impl='cpu' on the CPU")
    bsz, t_len, h, n = r.shape
    if n not in HEAD_SIZES:
        raise ValueError(f"wkv7 impl='cuda' supports head sizes {HEAD_SIZES}, got {n}")
    s0 = (
        torch.zeros(bsz, h, n, n, device=r.device, dtype=torch.float32)
        if state is None
        else state.float().contiguous()
    )
    if t_len == 0:
        return r.new_zeros(bsz, 0, h, n), s0
    out_dtype = r.dtype
    bf = [x.to(torch.bfloat16).contiguous() for x in (r, k, v, a, b)]
    y, s_out, _, _ = wkv7_forward_op(bf[0], w.float().contiguous(), bf[1], bf[2], bf[3], bf[4], s0)
    return y.to(out_dtype), s_out
