"""Checking that an all-reduce's result really is the sum of every group member's contribution.

hivemind's all-reduce can lose a part of the data without raising: a peer whose reducer failed
keeps its own values for that part (`register_failed_reducer`), and a reducer that lost a sender
averages that part over fewer peers. Either way some peers hold a wrong or different θ_global.
We detect both with a linear checksum: before averaging, each peer projects its encoded
contribution x_i onto a pseudo-random ±1 vector r that every peer derives from the round alone
(c_i = r·x_i) and hands c_i to the group with hivemind's gather data. Afterwards each peer checks
that r·S equals Σ c_i for the sum S it received. A lost part changes r·S by about √(part size)
times the values' scale, while the arithmetic error of a complete all-reduce (hivemind's float32
accumulator, the fixed-point grid) is a random-signed sum far below that; `tolerance` bounds it.

r comes from an integer hash computed with int64 arithmetic that never overflows, so it is the
same on every machine and torch version (a seeded torch RNG promises neither).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from .fixed_point import QUANTUM

CHUNK = 1 << 20  # elements per step: bounds the extra memory to a few MB per call
MASK32 = 0xFFFFFFFF
SIGMAS = 8.0  # false alarm needs a |Σ r·e| beyond 8 σ of the error bound: P < 2·e^-32
FP32_EPS = 2.0**-24  # unit roundoff of hivemind's float32 accumulator
FP64_EPS = 2.0**-53


@dataclass(frozen=True)
class Contribution:
    """What a peer tells its group about the tensors it sends: r·x and Σx²."""

    probe: float
    norm2: float


def _hash32(values: torch.Tensor, salt: int) -> torch.Tensor:
    """A 32-bit integer hash of int64 `values` (< 2**32), in place, without int64 overflow."""
    # every product is (< 2**32) * (< 2**31), plus < 2**32: below 2**63
    values.mul_(0x7FEB352D).add_(salt & MASK32).bitwise_and_(MASK32)
    values.bitwise_xor_(values >> 15).mul_(0x2C1B3C6D).bitwise_and_(MASK32)
    values.bitwise_xor_(values >> 12).mul_(0x297A2D39).bitwise_and_(MASK32)
    return values.bitwise_xor_(values >> 15)


@functools.cache
def _base_signs() -> torch.Tensor:
    """CHUNK pseudo-random ±1 values (float64), computed once per process."""
    h = _hash32(torch.arange(CHUNK, dtype=torch.int64), 0x5BD1E995)
    return (h >> 7).bitwise_and_(1).to(torch.float64).mul_(2.0).sub_(1.0)


def _chunk_key(seed: int, tensor_index: int, chunk_index: int) -> int:
    value = torch.tensor([chunk_index & MASK32], dtype=torch.int64)
    salt = (seed * 0x9E3779B1 + tensor_index * 0x85EBCA77) & MASK32
    return int(_hash32(value, salt)[0])


def probe_dot(part: torch.Tensor, seed: int, tensor_index: int, chunk_index: int) -> float:
    """r·part for one chunk (≤ CHUNK float64 values) of tensor `tensor_index`.

    r is the base sign pattern rotated by, and sign-flipped with, a hash of (seed, tensor,
    chunk): cheap (two dot products, no copies) and different for every chunk and round.
    """
    base = _base_signs()
    key = _chunk_key(seed, tensor_index, chunk_index)
    shift = key % CHUNK
    n = part.numel()
    head = min(n, CHUNK - shift)
    total = float(torch.dot(part[:head], base[shift : shift + head]))
    if n > head:
        total += float(torch.dot(part[head:], base[: n - head]))
    return -total if key & (1 << 31) else total


def _chunks(buffers: Sequence[torch.Tensor]) -> Iterator[tuple[int, int, torch.Tensor]]:
    """(tensor index, chunk index, float64 values) over all buffers, flattened, in order."""
    for index, buf in enumerate(buffers):
        flat = buf.detach().reshape(-1)
        for chunk_index, start in enumerate(range(0, flat.numel(), CHUNK)):
            yield index, chunk_index, flat[start : start + CHUNK].to(torch.float64)


def project(buffers: Sequence[torch.Tensor], seed: int) -> Contribution:
    """r·x and Σx² over all buffers, accumulated in float64."""
    probe = 0.0
    norm2 = 0.0
    for index, chunk_index, part in _chunks(buffers):
        probe += probe_dot(part, seed, index, chunk_index)
        norm2 += float(torch.dot(part, part))
    return Contribution(probe=probe, norm2=norm2)


def tolerance(contributions: Sequence[Contribution], numel: int) -> float:
    """A bound on |r·S − Σ c_i| for a complete all-reduce of these contributions.

    Per element, S_j's error e_j is at most (N+1)·ε32·Σ_i|x_ij| (N float32 additions, one
    division) plus one quantum (decoding back to the fixed-point grid). With r independent of
    e, r·e has variance Σe_j² ≤ 2·((N+1)²·ε32²·N·Σ_i‖x_i‖² + n·Q²) (Cauchy-Schwarz), and we allow
    SIGMAS standard deviations of it, plus float64's own rounding of the projections.
    """
    group = len(contributions)
    total_norm2 = sum(c.norm2 for c in contributions)
    variance = 2.0 * ((group + 1) ** 2 * FP32_EPS**2 * group * total_norm2 + numel * QUANTUM**2)
    float64_error = 2.0 * numel * FP64_EPS * math.sqrt(numel * group * total_norm2)
    return SIGMAS * math.sqrt(variance) + float64_error


def matches(
    total: Sequence[torch.Tensor], contributions: Sequence[Contribution], seed: int
) -> tuple[bool, float]:
    """Whether `total` is the sum of the contributions; also returns |r·S − Σc| / tolerance."""
    numel = sum(t.numel() for t in total)
    expected = math.fsum(c.probe for c in contributions)
    got = sum(probe_dot(part, seed, i, c) for i, c, part in _chunks(total))
    bound = tolerance(contributions, numel)
    ratio = abs(got - expected) / bound if bound > 0 else (0.0 if got == expected else math.inf)
    return ratio <= 1.0, ratio
