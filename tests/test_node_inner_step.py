"""Gradient accumulation (node/inner_step.py): a step in micro-batches is the step of the batch."""

from __future__ import annotations

import copy

import pytest
import torch
from gpt5os.model import RWKV7, ModelConfig
from gpt5os.node.inner_step import accumulate_gradients, micro_batches


def test_micro_batches_cover_the_batch_once() -> None:
    assert micro_batches(8, None) == [slice(0, 8)]
    assert micro_batches(8, 16) == [slice(0, 8)]
    assert micro_batches(8, 2) == [slice(0, 2), slice(2, 4), slice(4, 6), slice(6, 8)]
    assert micro_batches(8, 3) == [slice(0, 3), slice(3, 6), slice(6, 8)]


def _one_step(model: torch.nn.Module, inputs, targets, micro_batch: int | None) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    loss = accumulate_gradients(model.loss, inputs, targets, micro_batch)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss


@pytest.mark.parametrize("micro_batch", [2, 3])
def test_one_step_in_micro_batches_equals_one_step_with_the_whole_batch(micro_batch) -> None:
    """Batch 8 as 4 micro-batches of 2 (or 3+3+2): the same loss, gradients and parameters after
    an AdamW step, to float rounding."""
    torch.manual_seed(0)
    whole = RWKV7(ModelConfig(vocab_size=97, n_layer=2, n_embd=64, head_size=32))
    split = copy.deepcopy(whole)
    data = torch.randint(0, 97, (8, 17), generator=torch.Generator().manual_seed(1))
    inputs, targets = data[:, :-1], data[:, 1:]

    loss_whole = _one_step(whole, inputs, targets, None)
    loss_split = _one_step(split, inputs, targets, micro_batch)

    assert loss_split == pytest.approx(loss_whole, rel=1e-5)
    moved = 0.0
    for a, b in zip(whole.parameters(), split.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6)
        # Adam's first step is ~lr x sign(grad): where a gradient is ~0 its rounding shows, so
        # the bound is 1% of a step (lr 1e-2); the gradients above are compared tightly
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-4)
    for a, b in zip(whole.parameters(), RWKV7(whole.config).parameters(), strict=True):
        moved = max(moved, float((a - b).abs().max()))
    assert moved > 1e-3  # the step really moved the parameters (not a trivially equal no-op)


def test_a_non_finite_micro_batch_loss_is_returned_for_the_caller_to_skip() -> None:
    calls = []

    def loss_fn(x, y):
        calls.append(x.shape[0])
        return torch.tensor(float("nan"), requires_grad=True)

    data = torch.zeros(4, 5, dtype=torch.long)
    value = accumulate_gradients(loss_fn, data, data, 2)
    assert value != value and calls == [2]
