"""The fused CPU WKV-7 kernel (kernels/wkv7_cpu.cpp): built on first use and loaded with ctypes
(native.py says why and how). Where no compiler exists, or the build fails, or the head size is not one it was built for, `wkv7_cpu` uses the pure-PyTorch chunked
form (`wkv_chunked`) instead: the same results to fp32 rounding, ~2-4x slower.
``GPT5OS_WKV_CPU_KERNEL=0`` forces that fallback.

Threads: the B*H heads are split across ``torch.get_num_threads()`` threads; ctypes releases
the GIL during each call, and every head is independent.
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from . import native
from .wkv_chunked import balanced_chunk, check_decay, wkv7_chunked

HEAD_SIZES = (16, 32, 64, 128)
SEGMENT = 32  # state checkpoint interval of the backward (it recomputes each segment)
ABI = 2


def _vector_width(cpu_id: str) -> int:
    """Floats per vector in the kernel: 16 where AVX-512 exists (measured 1.6x faster than 8 on
    an AVX-512 EPYC), else 8 (AVX2 registers; other CPUs split the vectors as they need)."""
    return 16 if " avx512f" in cpu_id else 8


@functools.cache
def _library() -> ctypes.CDLL | None:
    """Build (first use only) and load the kernel; None where that is impossible."""
    lib = native.load(
        "wkv7_cpu",
        switch="GPT5OS_WKV_CPU_KERNEL",
        defines=[f"-DWKV7_VEC={_vector_width(native.cpu_id())}"],
    )
    if lib is None:
        return None
    if lib.wkv7_cpu_abi() != ABI:
        return None
    i64, i32, ptr = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p
    lib.wkv7_cpu_forward.argtypes = [i64, i64, i64, i64, i64, i32, ptr, ptr, ptr, ptr, ptr]
    lib.wkv7_cpu_backward.argtypes = [i64, i64, i64, i64, i64, i32, ptr, ptr, ptr, ptr, ptr, ptr]
    lib.wkv7_cpu_forward.restype = lib.wkv7_cpu_backward.restype = ctypes.c_int
    return lib


def available(n: int) -> bool:
    """Whether the kernel can run head size n here (building it on first call)."""
    return n in HEAD_SIZES and _library() is not None


def _split(fn, n_heads: int) -> None:
    """Run fn(h0, h1) over [0, n_heads) in torch.get_num_threads() parts, this thread included."""
    parts = max(1, min(torch.get_num_threads(), n_heads))
    bounds = [n_heads * i // parts for i in range(parts + 1)]
    futures = [
        native.thread_pool("wkv7_cpu", parts).submit(fn, bounds[i], bounds[i + 1])
        for i in range(1, parts)
    ]
    codes = [fn(bounds[0], bounds[1])] + [f.result() for f in futures]
    if any(codes):
        raise RuntimeError(f"wkv7 CPU kernel failed (codes {codes})")


def _ptrs(*xs: Tensor):
    return (ctypes.c_void_p * len(xs))(*(x.data_ptr() for x in xs))


class _KernelWKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, r, w, k, v, a, b, s0, grad: bool):  # type: ignore[override]
        lib = _library()
        bsz, t_len, h, n = r.shape
        xs = [x.contiguous() for x in (r, w, k, v, a, b)]
        s0 = s0.contiguous()
        y = torch.empty_like(xs[0])
        s_end = torch.empty_like(s0)
        n_seg = -(-t_len // SEGMENT)
        ckpt = r.new_empty(bsz, h, n_seg, n, n) if grad else None
        x_ptrs = _ptrs(*xs)

        def run(h0: int, h1: int) -> int:
            return lib.wkv7_cpu_forward(h0, h1, t_len, h, n, SEGMENT, x_ptrs, s0.data_ptr(),
                                        y.data_ptr(), s_end.data_ptr(), None if ckpt is None else ckpt.data_ptr())  # fmt: skip

        _split(run, bsz * h)
        if grad:
            ctx.save_for_backward(*xs, ckpt)
        return y, s_end

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor, ds_end: Tensor):  # type: ignore[override]
        lib = _library()
        *xs, ckpt = ctx.saved_tensors
        bsz, t_len, h, n = xs[0].shape
        dy = dy.contiguous()
        ds_end = ds_end.contiguous()
        dxs = [torch.empty_like(xs[0]) for _ in range(6)]
        ds0 = torch.empty_like(ds_end)
        x_ptrs, dx_ptrs = _ptrs(*xs), _ptrs(*dxs)

        def run(h0: int, h1: int) -> int:
            return lib.wkv7_cpu_backward(h0, h1, t_len, h, n, SEGMENT, x_ptrs, ckpt.data_ptr(),
                                         dy.data_ptr(), ds_end.data_ptr(), ds0.data_ptr(),
                                         dx_ptrs)  # fmt: skip

        _split(run, bsz * h)
        return (*dxs, ds0, None)


def wkv7_cpu(
    r: Tensor,
    w: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
    state: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """`gpt5os.model.wkv7` with ``impl="cpu"``: the fused kernel where it runs, else the chunked
    form. Both accept the same decays (`wkv_chunked.check_decay`), so a call that works on one
    machine works on every other; single steps (RNN decoding) take the chunked module's
    direct update, which has no setup to amortise."""
    bsz, t_len, h, n = r.shape
    if t_len <= 1 or r.device.type != "cpu" or not available(n):
        return wkv7_chunked(r, w, k, v, a, b, state)
    out_dtype = r.dtype
    r, w, k, v, a, b = (x.float() for x in (r, w, k, v, a, b))
    check_decay(w, balanced_chunk(t_len))
    s0 = r.new_zeros(bsz, h, n, n) if state is None else state.float()
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (r, w, k, v, a, b, s0))
    y, s = _KernelWKV.apply(r, w, k, v, a, b, s0, grad)
    return y.to(out_dtype), s
