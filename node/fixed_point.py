"""Exact averaging of pseudo-gradients: every peer ends a round with bitwise-identical results.

hivemind's all-reduce hands each peer `local + (average - local)`, computed in floating point, so
peers' results differ in the last bits (and by ~1e-3 with a lossy codec). Over weeks those
differences would let the swarm's copies of the global model drift apart. We make the reduction
exact instead: each peer sends its token-weighted pseudo-gradient as integer multiples of a
quantum QUANTUM in float64 (exactly representable and exactly summable), hivemind averages with
weight 1, and each peer multiplies its result by the group size and rounds back to the grid. The
floating-point error of hivemind's arithmetic is far below half a quantum, so that rounding
recovers the exact sum on every peer; the final division by the group's total weight is the same
operation on the same numbers everywhere.

Bounds: values are clipped to +-MAX_ABS (pseudo-gradients are orders of magnitude smaller) and
MAX_ABS * group_size / QUANTUM stays below 2**50, so group sizes up to 1024 are exact.

hivemind's reducer sums each part in a float32 accumulator (TensorPartReducer), so sums above
2**24 quanta (|value| > ~0.004) are rounded to float32 precision (~6e-8 relative) by the peer
that reduces that part. Every peer still receives that same rounded value (the returned delta is
exact in float64), so the peers' results stay bitwise identical; only their exactness with
respect to the true mean is limited to float32 precision there.
"""

from __future__ import annotations

import torch

QUANTUM = 2.0**-32  # ~2.3e-10: far below the resolution of the fp32 parameters it updates
MAX_ABS = 64.0
MAX_GROUP_SIZE = 1024


def encode(delta: torch.Tensor, weight: float, out: torch.Tensor) -> None:
    """Write round(weight * delta / QUANTUM) * QUANTUM into the float64 tensor `out`."""
    out.copy_(delta.detach().reshape(out.shape))
    out.mul_(weight).clamp_(-MAX_ABS, MAX_ABS).div_(QUANTUM).round_().mul_(QUANTUM)


MAX_RESIDUAL = 0.01  # in quanta; a complete all-reduce stays below ~1e-3


class InexactAverage(RuntimeError):
    """The result is not the mean of `group_size` encoded tensors: part of the group's data is
    missing (a peer dropped out mid all-reduce), so peers may hold different results."""


def decode_sum(averaged: torch.Tensor, group_size: int) -> torch.Tensor:
    """Recover the exact sum of the group's encoded tensors from hivemind's (inexact) mean."""
    if not 1 <= group_size <= MAX_GROUP_SIZE:
        raise ValueError(f"group size {group_size} outside 1..{MAX_GROUP_SIZE}")
    scaled = (averaged * group_size).div_(QUANTUM)
    rounded = scaled.round()
    residual = float((scaled - rounded).abs().max()) if scaled.numel() else 0.0
    if residual > MAX_RESIDUAL:
        raise InexactAverage(f"averaged values are {residual:.3f} quanta off the grid")
    return rounded.mul_(QUANTUM)
