"""Exact averaging: whatever rounding hivemind's all-reduce adds, every peer decodes the same sum."""

from __future__ import annotations

import torch
from gpt5os.node import fixed_point


def _hivemind_like_average(encoded: list[torch.Tensor]) -> list[torch.Tensor]:
    """What each peer holds after hivemind's all-reduce with weight 1: local + (mean - local),
    computed in floating point, so each peer's result differs in its last bits."""
    mean = torch.stack(encoded).sum(0) / len(encoded)
    return [local + (mean - local) for local in encoded]


def test_every_peer_decodes_the_identical_exact_weighted_mean() -> None:
    torch.manual_seed(0)
    n_peers = 5
    tokens = [16384, 900, 51200, 3, 7777]
    target = 16384
    deltas = [
        torch.randn(50_000) * 10 ** torch.empty(50_000).uniform_(-6, 0) for _ in range(n_peers)
    ]
    encoded = []
    for delta, t in zip(deltas, tokens, strict=False):
        buf = torch.empty(delta.numel(), dtype=torch.float64)
        fixed_point.encode(delta, t / target, buf)
        encoded.append(buf)
    results = _hivemind_like_average(encoded)
    assert not all(torch.equal(results[0], r) for r in results[1:])  # hivemind's output differs

    total_weight = sum(tokens) / target
    decoded = [fixed_point.decode_sum(r, n_peers) / total_weight for r in results]
    for d in decoded[1:]:
        assert torch.equal(decoded[0], d)

    exact = sum(d.double() * t for d, t in zip(deltas, tokens, strict=False)) / sum(tokens)
    assert torch.allclose(decoded[0], exact, rtol=0, atol=n_peers * fixed_point.QUANTUM)


def test_encoding_clips_absurd_values_instead_of_losing_exactness() -> None:
    buf = torch.empty(3, dtype=torch.float64)
    fixed_point.encode(torch.tensor([1e9, -1e9, 0.5]), 1.0, buf)
    assert buf.tolist() == [fixed_point.MAX_ABS, -fixed_point.MAX_ABS, 0.5]


def test_decode_in_place_gives_the_same_bits_without_a_copy() -> None:
    torch.manual_seed(3)
    mean = torch.randn(1000, dtype=torch.float64) * 1e-3
    expected = fixed_point.decode_sum(mean.clone(), 3)
    buffer = mean.clone()
    decoded = fixed_point.decode_sum(buffer, 3, in_place=True)
    assert decoded.data_ptr() == buffer.data_ptr()
    assert torch.equal(decoded, expected)
