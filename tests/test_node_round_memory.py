"""What a round holds in memory (issue 16): Δ computed per tensor when read, the outer step one
tensor at a time, error feedback chunk by chunk, the guard's norm chunk by chunk, contributions
of nothing that take no memory. Each must give the same bits as the whole-tensor version."""

from __future__ import annotations

import math

import torch
from gpt5os.coordinator.run_spec import OuterOptimizerSpec
from gpt5os.node.codec import Blockwise8, ErrorFeedback, Float16
from gpt5os.node.diloco import OuterState, tensors_sha256
from gpt5os.node.group_average import zero_deltas
from gpt5os.node.robust import sum_of_squares

OUTER = OuterOptimizerSpec(lr=0.7, momentum=0.9, nesterov=True)


def _model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(37, 53), torch.nn.LayerNorm(53), torch.nn.Linear(53, 5)
    )


def _drift(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 1e-2)


def _reference_step(outer: OuterState, averaged: list[torch.Tensor], delayed: bool) -> None:
    """The outer step as one SGD step over every tensor (how it was written before issue 16)."""
    with torch.no_grad():
        old = [g.clone() for g in outer.global_params]
        outer.round += 1
        for g, d in zip(outer.global_params, averaged, strict=True):
            g.grad = d.to(torch.float32).reshape(g.shape)
        outer.optimizer.step()
        outer.optimizer.zero_grad(set_to_none=True)
        for p, g, o in zip(outer.local_params, outer.global_params, old, strict=True):
            if delayed:
                p.add_((g - o).to(p.device, p.dtype))
            else:
                p.copy_(g)


def test_live_pseudo_gradients_are_the_same_bits_and_follow_the_parameters() -> None:
    model = _model()
    outer = OuterState(model, OUTER)
    _drift(model, 1)
    live = outer.live_pseudo_gradients()
    copied = outer.pseudo_gradients()
    assert len(live) == len(copied) and live.numels() == [d.numel() for d in copied]
    assert all(torch.equal(a, b) for a, b in zip(live, copied, strict=True))
    assert torch.equal(live[-1], copied[-1]) and len(live[1:3]) == 2
    _drift(model, 2)  # read again: computed from the parameters as they are now
    assert not torch.equal(live[0], copied[0])
    assert torch.equal(live[0], outer.pseudo_gradients()[0])


def test_the_per_tensor_outer_step_gives_the_bits_of_one_step_over_all_tensors() -> None:
    """Three rounds (momentum builds up), immediate and delayed, with the averaged Δ given as
    flat float64 buffers (exact mode), flat fp32 buffers (codec modes) and live Δ (alone)."""
    for delayed in (False, True):
        for kind in ("float64", "flat32", "live"):
            model_a, model_b = _model(), _model()
            a, b = OuterState(model_a, OUTER), OuterState(model_b, OUTER)
            for r in range(3):
                _drift(model_a, 10 + r)
                _drift(model_b, 10 + r)
                deltas = b.pseudo_gradients()
                if kind == "float64":
                    avg = [d.double().reshape(-1) * 0.5 for d in deltas]
                elif kind == "flat32":
                    avg = [d.reshape(-1) * 0.5 for d in deltas]
                else:
                    avg = None
                a.apply_outer_step(
                    avg if avg is not None else a.live_pseudo_gradients(),
                    tokens=1,
                    group_size=1,
                    delayed=delayed,
                )
                _reference_step(b, avg if avg is not None else deltas, delayed)
                assert tensors_sha256(a.global_params) == tensors_sha256(b.global_params)
                assert tensors_sha256(a.momentum_buffers()) == tensors_sha256(b.momentum_buffers())
                assert tensors_sha256(model_a.parameters()) == tensors_sha256(model_b.parameters())
                assert all(g.grad is None for g in a.global_params)


def test_chunked_error_feedback_gives_the_bits_of_whole_tensors() -> None:
    """Chunks of whole blocks: the same blocks, so the same wire values and errors, round after
    round; a chunk size that is not a whole number of blocks is rounded to one."""
    for codec in (Blockwise8(block=64), Float16()):
        whole, chunked = ErrorFeedback(codec, chunk=1 << 30), ErrorFeedback(codec, chunk=200)
        assert chunked.chunk == (192 if isinstance(codec, Blockwise8) else 200)
        sizes = [1000, 64, 7, 0, 385]
        for r in range(4):
            g = torch.Generator().manual_seed(r)
            deltas = [torch.randn(n, generator=g) * 10.0 ** -(n % 4) for n in sizes]
            out_w = [torch.full((n,), math.nan) for n in sizes]
            out_c = [torch.full((n,), math.nan) for n in sizes]
            whole.write_contribution(deltas, out_w)
            chunked.write_contribution(deltas, out_c)
            assert all(torch.equal(x, y) for x, y in zip(out_w, out_c, strict=True))
            whole.commit(deltas)
            chunked.commit(deltas)
            assert all(torch.equal(x, y) for x, y in zip(whole.errors, chunked.errors, strict=True))
        assert whole.norm() > 0
        assert all(e.dtype == torch.bfloat16 for e in whole.errors)  # 2 bytes a parameter


def test_error_feedback_reads_sizes_of_live_deltas_without_computing_them() -> None:
    model = _model()
    outer = OuterState(model, OUTER)
    _drift(model, 3)
    live = outer.live_pseudo_gradients()
    ef = ErrorFeedback(Blockwise8(block=64))
    out = [torch.zeros(n) for n in live.numels()]
    ef.write_contribution(live, out)
    ref = ErrorFeedback(Blockwise8(block=64))
    ref_out = [torch.zeros(n) for n in live.numels()]
    ref.write_contribution(outer.pseudo_gradients(), ref_out)
    assert all(torch.equal(x, y) for x, y in zip(out, ref_out, strict=True))


def test_sum_of_squares_in_chunks_matches_the_whole_sum() -> None:
    x = torch.randn(10_007, generator=torch.Generator().manual_seed(0)).reshape(1, -1)
    exact = float(x.double().pow(2).sum())
    for chunk in (1, 1000, 10_007, 1 << 20):
        assert math.isclose(sum_of_squares(x, chunk), exact, rel_tol=1e-12)
    assert sum_of_squares(torch.zeros(0)) == 0
    assert not math.isfinite(sum_of_squares(torch.tensor([1.0, math.inf]), chunk=1))


def test_zero_deltas_take_no_memory_and_read_as_zeros() -> None:
    zeros = zero_deltas([5, 0, 3])
    assert [z.numel() for z in zeros] == [5, 0, 3]
    assert all(z.stride() == (0,) and not bool(z.any()) for z in zeros)
    buf = torch.ones(5)
    buf.copy_(zeros[0].reshape(-1))
    assert not bool(buf.any())


def _rss_shmem_kb() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssShmem:"):
            return int(line.split()[1])
    return -1


def test_shared_wire_pages_are_handed_back_and_read_as_zeros_until_written() -> None:
    from gpt5os.node.memory import PAGE, release_shared_pages

    t = torch.ones(3 * (1 << 20))  # 12 MiB
    assert release_shared_pages(t) == 0  # private memory: nothing to hand back this way
    t.share_memory_()
    t.fill_(1.5)
    before = _rss_shmem_kb()
    released = release_shared_pages(t)
    assert released >= t.numel() * 4 - 2 * PAGE
    if before >= 0:
        assert _rss_shmem_kb() <= before - released // 1024 + 8
    assert not bool(t[PAGE:-PAGE].any())  # every whole page reads as zeros
    t.fill_(2.0)  # written again: memory comes back, values are what was written
    assert bool((t == 2.0).all())
    calls = []
    assert release_shared_pages(t, madvise=lambda *a: calls.append(a) or -1) == 0 and calls
    assert release_shared_pages(torch.zeros(10).share_memory_()) == 0  # under a page
