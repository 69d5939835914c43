"""Robust sums: one peer's broken or hostile pseudo-gradient must not move θ_global far.

Two places apply it, both pure logic here:

- the sender (`SendGuard`): a pseudo-gradient with NaN/Inf, or with a norm far above the swarm's
  recent median, is not sent; the node says why and contributes nothing that round (it still
  receives the group's average, like the keeper);
- the reducer of each part (`robust_mean`, called by allreduce.py): drops non-finite parts, caps
  each sender's weight at `weight_cap` × the median positive weight, and clips each sender's part
  to `clip` × the median part norm of the group's contributing senders. The median of an even
  count is the mean of the middle two: with one bad sender of four, both are honest. With two
  senders nothing is clipped (the bound is clip × their mean norm, above the larger): two
  members are no majority, and bounding both by the smaller norm (the lower median, as before)
  clipped the honest node that trained more steps in most parts of every round (a 0.1b round:
  "clipped 39 sender part(s)"), and let a sender of near-zero updates cut the other's down to
  nothing. A two-member group keeps the sender's guard, the weight bounds and NaN dropping.

- every member, for the weight each member claims (`claimed_tokens`, and the reducer's
  `max_weight`): see "Claimed weight" below.

Claimed weight. A member's weight in a round's average is the tokens it declares (its gather
data's "tokens"; in codec modes also the weight hivemind sends with each part). Whatever it
declares, every member counts at most `claim_bound(round_tokens)` = MAX_CLAIM_ROUNDS x the run
spec's `round_tokens` (H inner steps x batch_size x seq_len, what one node trains in a full
round), which the coordinator recorded for the run and handed every admitted member at Join.
The slack: a node trains on until it sees that the round is due, ~10% past H steps in the e2e
runs; no honest node trains two rounds' worth. Bounded are the group's total (`group_tokens`,
the divisor of the exact mode's mean, the tokens the outer step counts) and each reducer's
weight in codec modes.
Members with the same spec apply the same bound, so they agree. Honest senders claim at most
the bound too (group_average.py), so their encoding matches what the others count. What this
does not bound: in exact mode a member pre-weights its own fixed-point values (fixed_point.py),
so the size of those values is its own; only the codec reducer clips norms (below).

What it guarantees (per part, with W the capped total weight and w the attacker's capped weight):
the attacker's term in the mean has norm at most w/W · clip · median, so a ×1e6, a NaN or a
sign-flipped update moves the result by at most (w/W) · (clip + 1) · median from the clean mean.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from gpt5os.coordinator.run_spec import RobustSpec

DEFAULTS = RobustSpec()  # the run spec's `robust` (one place for the thresholds)
NORM_CHUNK = 1 << 20  # values summed at a time (sum_of_squares)


@dataclass(frozen=True)
class RobustConfig:
    clip: float = DEFAULTS.clip  # a part's norm is clipped to clip × the group's median part norm
    weight_cap: float = DEFAULTS.weight_cap  # a sender's weight is capped at this × the median
    max_weight: float = math.inf  # and at this (claim_bound: see "Claimed weight")

    @classmethod
    def for_run(cls, robust: RobustSpec, round_tokens: int) -> RobustConfig:
        """A reducer's bounds from the run spec's `robust` and `round_tokens`."""
        return cls(
            clip=robust.clip,
            weight_cap=robust.weight_cap,
            max_weight=float(claim_bound(round_tokens, robust.max_claim_rounds)),
        )


@dataclass(frozen=True)
class Reduction:
    """What the reducer did to one part (for logs and tests)."""

    dropped: tuple[int, ...] = ()  # senders whose part was non-finite
    clipped: tuple[int, ...] = ()  # senders whose part was scaled down
    capped: tuple[int, ...] = ()  # senders whose weight was capped at weight_cap × median
    bounded: tuple[int, ...] = ()  # senders whose weight was above max_weight
    total_weight: float = 0.0


def lower_median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def median(values: Sequence[float]) -> float:
    """The median; of an even count, the mean of the middle two (see the module doc)."""
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


MAX_CLAIM_ROUNDS = DEFAULTS.max_claim_rounds  # a member counts for at most this many rounds' tokens


def claim_bound(round_tokens: int, rounds: int = MAX_CLAIM_ROUNDS) -> int:
    """The most tokens any member's round counts for (see "Claimed weight"): `rounds` is the run
    spec's robust.max_claim_rounds."""
    return rounds * round_tokens


def claimed_tokens(declared: object, bound: int) -> int:
    """The tokens a member's round counts for: what it declared, at most `bound`
    (`claim_bound`); 0 for anything that is not a non-negative number."""
    try:
        tokens = float(declared)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0
    if not tokens >= 0:  # NaN, negative
        return 0
    return int(min(tokens, bound))


def robust_mean(
    parts: Sequence[torch.Tensor | None], weights: Sequence[float], config: RobustConfig
) -> tuple[torch.Tensor | None, Reduction]:
    """The weighted mean of `parts` (None: the sender sent nothing for this part) after dropping
    non-finite ones, bounding each weight at `max_weight`, capping weights at `weight_cap` × the
    median and clipping norms; None when no weight remains."""
    bounded = tuple(i for i, w in enumerate(weights) if w > config.max_weight)
    weights = [min(w, config.max_weight) for w in weights]
    usable = [
        i
        for i, (p, w) in enumerate(zip(parts, weights, strict=True))
        if p is not None and math.isfinite(w) and w > 0
    ]
    dropped = tuple(i for i in usable if not bool(torch.isfinite(parts[i]).all()))
    usable = [i for i in usable if i not in dropped]
    if not usable:
        return None, Reduction(dropped=dropped, bounded=bounded)
    cap = config.weight_cap * lower_median([weights[i] for i in usable])
    capped = tuple(i for i in usable if weights[i] > cap)
    norms = {i: float(parts[i].double().norm()) for i in usable}
    bound = config.clip * median(list(norms.values()))
    total = torch.zeros(parts[usable[0]].shape, dtype=torch.float64)
    total_weight = 0.0
    clipped = []
    for i in usable:
        w = min(weights[i], cap)
        scale = 1.0
        if norms[i] > bound:
            scale = bound / norms[i]
            clipped.append(i)
        total.add_(parts[i].double(), alpha=w * scale)
        total_weight += w
    return (total / total_weight).to(torch.float32), Reduction(
        dropped=dropped,
        clipped=tuple(clipped),
        capped=capped,
        bounded=bounded,
        total_weight=total_weight,
    )


def sum_of_squares(t: torch.Tensor, chunk: int = NORM_CHUNK) -> float:
    """Σ t², summed in float64 over `chunk` values at a time: the float64 copies exist for one
    chunk, not for a whole tensor (a 0.1b model's embedding: 2 × 400 MB)."""
    flat = t.detach().reshape(-1)
    return sum(
        float(flat[s : s + chunk].double().pow(2).sum()) for s in range(0, flat.numel(), chunk)
    )


@dataclass
class SendGuard:
    """The sender's check (see module doc). `observe` records the norms that a group's members
    declared (gather data); `check` compares ours with their recent median."""

    factor: float = DEFAULTS.send_factor  # refuse a norm above factor × the swarm's recent median
    min_samples: int = 3  # the median means something only with a few norms seen
    window: int = 32
    recent: deque = field(default_factory=deque)

    def observe(self, norms: Sequence[float]) -> None:
        for n in norms:
            if math.isfinite(n) and n > 0:
                self.recent.append(float(n))
        while len(self.recent) > self.window:
            self.recent.popleft()

    def check(
        self, deltas: Sequence[torch.Tensor], lr_sum: float | None = None
    ) -> tuple[float, str | None]:
        """(our norm, None) when the pseudo-gradient may be sent, else (norm, why not).

        With `lr_sum` (the sum of the inner learning rates of the round's steps) the norm is per
        unit of learning rate: a pseudo-gradient grows with the learning rate, which the warmup
        raises many times over within a few rounds, and a legitimate round must not look like
        an outlier against the rounds before it (measured: norms 1.2 then 17 in rounds 2 and 3
        of `tiny`, whose warmup ends in round 3). The norms the group declares are in the same
        unit, so the median compares like with like."""
        norm2 = sum(sum_of_squares(d) for d in deltas)
        if not math.isfinite(norm2):
            return math.inf, "it has NaN/Inf values"
        norm = math.sqrt(norm2)
        if lr_sum is not None and lr_sum > 0:
            norm /= lr_sum
        if len(self.recent) >= self.min_samples:
            median = lower_median(list(self.recent))
            if median > 0 and norm > self.factor * median:
                unit = " per unit of learning rate" if lr_sum else ""
                return norm, (
                    f"its norm{unit} {norm:.3g} is {norm / median:.0f}x the swarm's recent "
                    f"median {median:.3g} (limit {self.factor:g}x)"
                )
        return norm, None
