"""CPU kernels for one-token decoding (kernels/decode_cpu.cpp), built on first use.

- `matvec`: one row times a matrix. Decoding one token multiplies a single row by every weight
  matrix, so a step is as fast as the weights stream from memory; the kernel streams
  ``[in, out]`` rows in order and beats ``torch.mm``'s BLAS call by 1.3-1.8x at 0.1b sizes.
- `ln_shift_mix` and `tmix_core`: the small ops between the products (layer norm and token
  shift; decay, normalised key, the WKV step in one pass over the state, GroupNorm, bonus,
  gate), one call each instead of ~30 PyTorch ops per layer whose dispatch cost more than
  their arithmetic (five batched products over a ``[12, 64, 64]`` state alone took ~140 us).

Like `wkv_cpu` it is plain C++ built on first use (native.py); where no compiler exists or the
build fails, `available()` is False and callers use PyTorch ops. ``GPT5OS_DECODE_CPU_KERNEL=0``
turns it off.

Threads: a matrix of at least `SPLIT_MIN` elements is split by columns over
``torch.get_num_threads()`` threads (ctypes releases the GIL during each call).
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch import Tensor

from . import native

ABI = 3
SPLIT_MIN = 1 << 20  # below ~1M weights a thread hand-off costs more than it saves


@functools.cache
def _library() -> ctypes.CDLL | None:
    """Build (first use only) and load the kernel; None where that is impossible."""
    lib = native.load("decode_cpu", switch="GPT5OS_DECODE_CPU_KERNEL")
    if lib is None:
        return None
    if lib.decode_cpu_abi() != ABI:
        return None
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.matvec_cpu.argtypes = [ptr, ptr, ptr, i64, i64, i64, i64, ctypes.c_int]
    lib.matvec_cpu.restype = None
    f32 = ctypes.c_float
    lib.ln_shift_mix_cpu.argtypes = [ptr, ptr, ptr, f32, ptr, ptr, i64, i64, ptr]
    lib.tmix_core_cpu.argtypes = [ptr] * 12 + [f32, f32, ptr, i64, i64]
    lib.ln_shift_mix_cpu.restype = lib.tmix_core_cpu.restype = None
    return lib


def available() -> bool:
    """Whether the kernel can run here (building it on first call)."""
    return _library() is not None


def supports(w: Tensor) -> bool:
    """Whether `matvec` can take `w` as its matrix: fp32 on the CPU, rows contiguous."""
    return w.dim() == 2 and w.dtype == torch.float32 and w.device.type == "cpu" and w.stride(1) == 1


def matvec(x: Tensor, w: Tensor, out: Tensor | None = None, *, accumulate: bool = False) -> Tensor:
    """``x @ w`` for one row: `x` ``[1, K]`` (or ``[K]``) contiguous fp32, `w` ``[K, N]`` with
    `supports(w)`. Returns `out` (``[1, N]``, new if None); with `accumulate` the product is
    added to `out` in place (``out += x @ w``). Only call it where `available()`."""
    k, n = w.shape
    if x.numel() != k or not x.is_contiguous() or x.dtype != torch.float32:
        raise ValueError(f"matvec: x must be {k} contiguous fp32 values, got {tuple(x.shape)}")
    if out is None:
        if accumulate:
            raise ValueError("matvec: accumulate needs an out tensor")
        out = torch.empty(1, n, dtype=torch.float32)
    elif out.numel() != n or not out.is_contiguous():
        raise ValueError(f"matvec: out must be {n} contiguous values, got {tuple(out.shape)}")
    fn = _library().matvec_cpu
    args = (x.data_ptr(), w.data_ptr(), out.data_ptr(), k, w.stride(0))
    parts = min(torch.get_num_threads(), n // 64) if k * n >= SPLIT_MIN else 1
    if parts <= 1:
        fn(*args, 0, n, int(accumulate))
        return out
    # column ranges on 16-float (64-byte) boundaries: no two threads write one cache line
    bounds = [min(n, (n * i // parts) // 16 * 16) for i in range(parts)] + [n]
    pool = native.thread_pool("decode_cpu", parts)
    futures = [pool.submit(fn, *args, bounds[i], bounds[i + 1], int(accumulate))
               for i in range(1, parts)]  # fmt: skip
    fn(*args, bounds[0], bounds[1], int(accumulate))
    for f in futures:
        f.result()
    return out


def _check(name: str, numel: int, *tensors: Tensor) -> None:
    for t in tensors:
        if t.numel() != numel or t.dtype != torch.float32 or not t.is_contiguous():
            raise ValueError(f"{name}: every vector must be {numel} contiguous fp32 values")


def ln_shift_mix(
    x: Tensor, ln_w: Tensor, ln_b: Tensor, eps: float, shift: Tensor, mix: Tensor
) -> Tensor:
    """Layer norm of one token `x` ``[1, C]``, then the token-shift mixes ``xn + (shift - xn) *
    mix[m]`` for each row of `mix` ``[M, C]`` (returned as ``[M, 1, C]``); sets `shift` to xn.
    Only call it where `available()`."""
    c = x.shape[-1]
    _check("ln_shift_mix", c, x, ln_w, ln_b, shift)
    _check("ln_shift_mix", mix.numel(), mix)
    m = mix.numel() // c
    out = torch.empty(m, 1, c, dtype=torch.float32)
    lib = _library()
    lib.ln_shift_mix_cpu(x.data_ptr(), ln_w.data_ptr(), ln_b.data_ptr(), eps, shift.data_ptr(),
                         mix.data_ptr(), m, c, out.data_ptr())  # fmt: skip
    return out


def tmix_core(
    s: Tensor,
    r: Tensor,
    w_raw: Tensor,
    k: Tensor,
    v: Tensor,
    a_raw: Tensor,
    g: Tensor,
    k_k: Tensor,
    k_a: Tensor,
    r_k: Tensor,
    lnx_w: Tensor,
    lnx_b: Tensor,
    lnx_eps: float,
    decay_scale: float,
) -> Tensor:
    """The time-mix of one token between its matrix products (`TimeMix.forward` from the decay
    to ``y * g``): updates the WKV state `s` ``[H, N, N]`` (contiguous fp32) in place and
    returns ``(GroupNorm(S r) + bonus) * g`` as ``[1, H*N]``. `w_raw` and `a_raw` are before
    their squashing; every vector holds ``H*N`` fp32 values. Only call it where `available()`."""
    h, n, n2 = s.shape
    if n != n2 or n > 256:
        raise ValueError(f"tmix_core: state must be [H, N, N] with N <= 256, got {s.shape}")
    _check("tmix_core", h * n * n, s)
    _check("tmix_core", h * n, r, w_raw, k, v, a_raw, g, k_k, k_a, r_k, lnx_w, lnx_b)
    out = torch.empty(1, h * n, dtype=torch.float32)
    ptrs = (t.data_ptr() for t in (s, r, w_raw, k, v, a_raw, g, k_k, k_a, r_k, lnx_w, lnx_b))
    _library().tmix_core_cpu(*ptrs, lnx_eps, decay_scale, out.data_ptr(), h, n)
    return out
