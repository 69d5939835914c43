"""The CUDA WKV-7 path: our kernel (kernels/wkv7.cu), built on first use and cached by
torch.utils.cpp_extension, exposed as torch.library custom ops with fake implementations (so
torch.compile can trace through it) and an autograd formula that calls the backward kernel.

Precision contract: r, k, v, a, b and y are bf16; the decay w, the state and every accumulation
are fp32 (a decay like 0.9998 is 1.0 in bf16, which would stop the state from ever forgetting).

Decay contract: w in [W_MIN, 1] = [0.5, 1]. The backward rebuilds S_{t-1} from S_t by dividing by
w for up to CHUNK = 16 steps, so fp32 rounding grows by up to w^-16: an fp32 emulation at N=64,
T=64 put the relative error of dr/dw/da at 4.5e-3 for w = 0.45, 0.23 for w = 0.35 and 42 for
w = 0.25. The model's clamp keeps w >= exp(-e^-0.5) ~ 0.545, above W_MIN. The check runs on the
device (`torch._assert_async`) so that it costs no host sync; a violation is a device-side assert,
which ends the process's CUDA context, like an out-of-range index in torch's own ops. (The CPU
path accepts down to ~0.131, `wkv_chunked.w_min`, and raises a ValueError instead.)

Head sizes: 16, 32 and 64 (`HEAD_SIZES`). N=128 would need three 128-float arrays per thread in
the backward (at N=64 ptxas already reports 255 registers and spills), so `wkv7(impl="auto")`
runs other head sizes through the pure-PyTorch chunked form on the GPU instead (`wkv.choose_impl`)
and ``impl="cuda"`` refuses them.

Gradient buffers: the forward saves sa_t = S_{t-1} a_t for every step and S at every chunk end
only when a gradient will be needed (grad mode on and some input requires grad); inference and
decoding write neither (~2.7 GB a layer at B=8 T=4096 H=64 otherwise).
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

import torch
from torch import Tensor

from .wkv import CUDA_HEAD_SIZES as HEAD_SIZES

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
CHUNK = 16  # must match WKV7_CHUNK in the sources (state checkpoint interval of the backward)
W_MIN = 0.5  # smallest decay factor accepted; see the module docstring
NVCC_FLAGS = ["-O3", "-Xptxas=-O3", "--extra-device-vectorization", f"-DWKV7_CHUNK={CHUNK}"]
DECAY_MESSAGE = (
    f"wkv7 impl='cuda' needs decay factors w in [{W_MIN}, 1] (the model clamps them to >= 0.545); "
    "use impl='cpu' or impl='reference' for smaller ones"
)


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


def check_decay_async(w: Tensor) -> None:
    """Assert W_MIN <= w <= 1 (NaN fails) without waiting for the device: on CUDA the failure
    surfaces as a device-side assert at a later synchronisation, on the CPU as a RuntimeError."""
    if w.numel() == 0:  # aminmax has no identity
        return
    lo, hi = torch.aminmax(w.detach())
    torch._assert_async((lo >= W_MIN) & (hi <= 1.0), DECAY_MESSAGE)


def _on_device(r: Tensor) -> tuple[contextlib.AbstractContextManager, int]:
    """r's CUDA device as the current one, and its current stream's handle for the launch. (For
    CPU tensors, which only the tests' stand-in for the extension takes: nothing, and 0.)"""
    if not r.is_cuda:
        return contextlib.nullcontext(), 0
    return torch.cuda.device(r.device), torch.cuda.current_stream(r.device).cuda_stream


def needs_grad(*xs: Tensor) -> bool:
    """Whether autograd will ask for a backward: grad mode on and some input requires grad."""
    return torch.is_grad_enabled() and any(x.requires_grad for x in xs)


@torch.library.custom_op("gpt5os::wkv7_forward", mutates_args=())
def wkv7_forward_op(
    r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, s0: Tensor, save: bool
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(y, final state, per-chunk saved states, per-step S a) from the forward kernel; the last
    two are empty (never written) unless ``save``, which the backward needs."""
    check_decay_async(w)
    device, stream = _on_device(r)
    with device:
        y, s_out, s_saved, sa = _extension().forward(r, w, k, v, a, b, s0, save, stream)
    return y, s_out, s_saved, sa


@wkv7_forward_op.register_fake
def _forward_fake(r, w, k, v, a, b, s0, save):
    bsz, t_len, h, n = r.shape
    n_chunks = (t_len + CHUNK - 1) // CHUNK
    if not save:
        return torch.empty_like(r), s0.new_empty(bsz, h, n, n), s0.new_empty(0), w.new_empty(0)
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
    device, stream = _on_device(r)
    with device:
        return tuple(_extension().backward(r, w, k, v, a, b, dy, ds_out, s_saved, sa, stream))


@wkv7_backward_op.register_fake
def _backward_fake(r, w, k, v, a, b, dy, ds_out, s_saved, sa):
    return tuple(torch.empty_like(x) for x in (r, w, k, v, a, b, ds_out))


def _setup_context(ctx, inputs, output):
    r, w, k, v, a, b, _, _ = inputs
    _, _, s_saved, sa = output
    ctx.save_for_backward(r, w, k, v, a, b, s_saved, sa)


def _backward(ctx, dy, ds_out, _d_saved, _d_sa):
    r, w, k, v, a, b, s_saved, sa = ctx.saved_tensors
    bsz, _, h, n = r.shape
    dy = torch.zeros_like(r) if dy is None else dy.to(torch.bfloat16).contiguous()
    if ds_out is None:
        ds_out = torch.zeros(bsz, h, n, n, device=r.device, dtype=torch.float32)
    grads = wkv7_backward_op(r, w, k, v, a, b, dy, ds_out.float().contiguous(), s_saved, sa)
    return (*grads, None)  # no gradient for `save`


wkv7_forward_op.register_autograd(_backward, setup_context=_setup_context)


def wkv7_cuda(
    r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Same contract as `gpt5os.model.wkv7` (``impl="cuda"``); y comes back in r's dtype.
    Inputs may be non-contiguous or of another float dtype: they are converted here."""
    if not r.is_cuda:
        raise ValueError("wkv7 impl='cuda' needs CUDA tensors; use impl='cpu' on the CPU")
    bsz, t_len, h, n = r.shape
    if n not in HEAD_SIZES:
        raise ValueError(
            f"wkv7 impl='cuda' supports head sizes {HEAD_SIZES}, got {n}; "
            "impl='auto' runs other sizes in the chunked PyTorch form"
        )
    s0 = (
        torch.zeros(bsz, h, n, n, device=r.device, dtype=torch.float32)
        if state is None
        else state.float().contiguous()
    )
    if t_len == 0:
        return r.new_zeros(bsz, 0, h, n), s0
    out_dtype = r.dtype
    bf = [x.to(torch.bfloat16).contiguous() for x in (r, k, v, a, b)]
    w32 = w.float().contiguous()
    save = needs_grad(*bf, w32, s0)
    y, s_out, _, _ = wkv7_forward_op(bf[0], w32, bf[1], bf[2], bf[3], bf[4], s0, save)
    return y.to(out_dtype), s_out
