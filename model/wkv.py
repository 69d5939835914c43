"""The WKV-7 operator: one entry point, three implementations.

Per head, with state S (value x key, fp32) and per-step vectors r, w, k, v, a, b of size N::

    S_t = S_{t-1} diag(w_t) + (S_{t-1} a_t) b_t^T + v_t k_t^T
    y_t = S_t r_t

In the model a = -kk and b = kk * iclr (a "delta rule" that removes part of the old value stored
under key kk before writing the new one), and w is the decay factor in (exp(-e^-0.5), 1).

- ``"reference"``: the loop above in fp32, the ground truth for tests (slow: ~700 tokens/s).
- ``"cpu"``: a fused C++ kernel of the loop above (`wkv_cpu`, built on first use with the
  system's g++), or where none can be built the chunked matrix form in `wkv_chunked`; both exact
  to fp32 rounding.
- ``"cuda"``: our CUDA kernel (`wkv_cuda`), bf16 in/out, fp32 state, head sizes 16/32/64.
- ``"auto"``: cuda for CUDA tensors of a head size the kernel has, else cpu (which, given CUDA
  tensors, runs the chunked PyTorch form on the GPU: N=128 on a GPU falls back, it does not fail).

Decays: every implementation needs w in (0, 1]; the fast ones have a floor where their rounding
would grow too much, both far below the model's clamp of ~0.545: ``"cpu"`` refuses
w < `wkv_chunked.w_min` (~0.131) with a ValueError, ``"cuda"`` w < `wkv_cuda.W_MIN` (0.5) with a
device-side assert (no host sync). ``"reference"`` takes any w.
"""

from __future__ import annotations

import functools
import logging

import torch
from torch import Tensor

IMPLS = ("auto", "reference", "cpu", "cuda")
CUDA_HEAD_SIZES = (16, 32, 64)  # the head sizes kernels/wkv7.cu is built for

log = logging.getLogger(__name__)


@functools.cache
def _log_fallback(n: int) -> None:
    log.info("wkv7: the CUDA kernel has no head size %d; impl='auto' uses the chunked form", n)


def choose_impl(impl: str, device_type: str, n: int) -> str:
    """The implementation ``impl`` stands for, given the tensors' device type and head size."""
    if impl != "auto":
        return impl
    if device_type != "cuda":
        return "cpu"
    if n in CUDA_HEAD_SIZES:
        return "cuda"
    _log_fallback(n)
    return "cpu"


def _check(r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor | None):
    if r.dim() != 4:
        raise ValueError(f"wkv7 inputs must be [B, T, H, N], got r of shape {tuple(r.shape)}")
    for name, x in (("w", w), ("k", k), ("v", v), ("a", a), ("b", b)):
        if x.shape != r.shape:
            raise ValueError(f"wkv7: {name} has shape {tuple(x.shape)}, r has {tuple(r.shape)}")
    bsz, _, h, n = r.shape
    if state is not None and tuple(state.shape) != (bsz, h, n, n):
        raise ValueError(
            f"wkv7: state must be [B, H, N, N] = {(bsz, h, n, n)}, got {tuple(state.shape)}"
        )


def wkv7_reference(
    r: Tensor, w: Tensor, k: Tensor, v: Tensor, a: Tensor, b: Tensor, state: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The per-step recurrence in fp32 (float64 when r is float64, for checking the fp32 paths):
    slow, obviously right, differentiable by autograd."""
    bsz, t_len, h, n = r.shape
    out_dtype = r.dtype
    dtype = torch.float64 if r.dtype == torch.float64 else torch.float32
    r, w, k, v, a, b = (x.to(dtype) for x in (r, w, k, v, a, b))
    s = r.new_zeros(bsz, h, n, n) if state is None else state.to(dtype)
    ys = []
    for t in range(t_len):
        sa = s @ a[:, t, :, :, None]  # [B, H, N, 1]
        s = (
            s * w[:, t, :, None, :]
            + sa * b[:, t, :, None, :]
            + v[:, t, :, :, None] * k[:, t, :, None, :]
        )
        ys.append((s @ r[:, t, :, :, None]).squeeze(-1))
    y = torch.stack(ys, dim=1) if ys else r.new_zeros(bsz, 0, h, n)
    return y.to(out_dtype), s


def wkv7(
    r: Tensor,
    w: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
    state: Tensor | None = None,
    impl: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Run WKV-7 over a sequence.

    :param r, w, k, v, a, b: ``[B, T, H, N]``; ``w`` is the per-step decay factor in (0, 1]
        (each fast implementation has a floor: see the module docstring)
    :param state: initial state ``[B, H, N, N]`` (value x key), fp32; zeros when None
    :param impl: ``"auto"``, ``"reference"``, ``"cpu"`` or ``"cuda"``
    :returns: ``(y [B, T, H, N] in r's dtype, final_state [B, H, N, N] fp32; float64 from the
        reference given float64 inputs)``

    Every implementation is differentiable w.r.t. all six inputs and the initial state.
    """
    _check(r, w, k, v, a, b, state)
    impl = choose_impl(impl, r.device.type, r.shape[-1])
    if impl == "reference":
        return wkv7_reference(r, w, k, v, a, b, state)
    if impl == "cpu":
        from .wkv_cpu import wkv7_cpu

        return wkv7_cpu(r, w, k, v, a, b, state)
    if impl == "cuda":
        from .wkv_cuda import wkv7_cuda

        return wkv7_cuda(r, w, k, v, a, b, state)
    raise ValueError(f"unknown wkv7 impl {impl!r}; choose one of {', '.join(IMPLS)}")
