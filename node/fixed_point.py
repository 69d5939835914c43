"""Exact averaging of pseudo-gradients: every peer ends a round with bitwise-identical results.

hivemind's all-reduce hands each peer `local + (average - local)`, computed in floating point, so
peers' results differ in the last bits (and by ~1e-3 with a lossy codec). Over weeks those
differences would let the swarm's copies of the global model drift apart. We make the reduction
exact instead: each peer sends its token-weighted pseudo-gradient as integer multiples of a
quantum QUANTUM in float64 (exactly representable and exactly summable), hivemind averages with
weight 1, and each peer multiplies its result by the group size and rounds back to the grid. The
floating-point error of that arithmetic is far below half a quantum, so the rounding recovers the
exact sum on every peer; the final division by the group's total weight is the same operation on
the same numbers everywhere.

This needs hivemind's reducer to add in float64. It sums each part in `torch.zeros(shape)`,
i.e. in torch's default dtype, so our averager process sets that to float64 (swarm.py); in
float32 a sum of three peers' values is already off the grid by up to (N+1)·2⁻²⁴ of its size.

Bounds: values are clipped to +-MAX_ABS (pseudo-gradients are orders of magnitude smaller) and
MAX_ABS * group_size / QUANTUM stays below 2**50, so group sizes up to 1024 are exact.

Whether the all-reduce was complete is checked separately (checksum.py): a lost part can leave
values on the grid (with two peers, a part averaged over one of them is 2·x).
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


def decode_sum(averaged: torch.Tensor, group_size: int, *, in_place: bool = False) -> torch.Tensor:
    """Recover the exact sum of the group's encoded tensors from hivemind's (inexact) mean;
    `in_place` overwrites `averaged` instead of allocating another float64 copy."""
    if not 1 <= group_size <= MAX_GROUP_SIZE:
        raise ValueError(f"group size {group_size} outside 1..{MAX_GROUP_SIZE}")
    total = averaged.mul_(group_size) if in_place else averaged * group_size
    return total.div_(QUANTUM).round_().mul_(QUANTUM)
