"""One inner step's gradients, in micro-batches when the run's batch does not fit at once.

The run's batch (RunSpec.batch_size sequences) defines the step; a node may split it into
micro-batches of `micro_batch` sequences (`gpt5os-node join --micro-batch N`) and accumulate:
each micro-batch's mean loss is scaled by its share of the batch's tokens, so the summed gradient
is the gradient of the whole batch's mean loss, the same step up to float rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch


def micro_batches(batch_size: int, micro_batch: int | None) -> list[slice]:
    """Row slices of a batch of `batch_size` sequences, `micro_batch` at a time (None or larger
    than the batch: one slice)."""
    size = batch_size if not micro_batch else min(micro_batch, batch_size)
    return [slice(i, min(i + size, batch_size)) for i in range(0, batch_size, size)]


def accumulate_gradients(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    inputs: torch.Tensor,
    targets: torch.Tensor,
    micro_batch: int | None,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
) -> float:
    """Backward the batch's mean loss in micro-batches; returns that loss (NaN/Inf when a micro-
    batch's loss is not finite: then gradients may be partial and the caller skips the step)."""
    total = targets.numel()
    loss_sum = 0.0
    for rows in micro_batches(inputs.shape[0], micro_batch):
        with autocast():
            loss = loss_fn(inputs[rows], targets[rows])
        share = targets[rows].numel() / total
        value = float(loss.detach())
        if not math.isfinite(value):
            return value
        (loss * share).backward()
        loss_sum += value * share
    return loss_sum
