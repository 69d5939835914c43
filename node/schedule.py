"""The inner learning-rate schedule, a function of the swarm's tokens so every node agrees on it.

Linear warmup over `warmup_tokens`, then cosine decay to `min_lr` over `decay_tokens`, then flat.
"""

from __future__ import annotations

import math

from gpt5os.coordinator.run_spec import InnerOptimizerSpec


def inner_lr(spec: InnerOptimizerSpec, swarm_tokens: int) -> float:
    peak, floor = spec.lr, min(spec.min_lr, spec.lr)
    if spec.warmup_tokens and swarm_tokens < spec.warmup_tokens:
        return peak * (swarm_tokens + 1) / spec.warmup_tokens
    if not spec.decay_tokens:
        return peak
    progress = min(1.0, (swarm_tokens - spec.warmup_tokens) / spec.decay_tokens)
    return floor + 0.5 * (peak - floor) * (1.0 + math.cos(math.pi * progress))
