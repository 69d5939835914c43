"""The wire codecs (node/codec.py) and error feedback, as pure logic; the end-to-end runs through
a real all-reduce are in test_node_group_average.py."""

from __future__ import annotations

import pytest
import torch
from gpt5os.node.codec import (
    CODECS,
    Blockwise2,
    Blockwise4,
    Blockwise8,
    CodecError,
    ErrorFeedback,
    Float16,
    codec_for,
)
from gpt5os.node.robust import RobustConfig, robust_mean


def _x(n: int = 100_000, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed)) * 1e-3


def test_blockwise8_is_about_one_byte_per_value() -> None:
    codec = Blockwise8()
    msg = codec.compress(_x(1 << 20))
    assert msg.ByteSize() / (1 << 20) < 1.0011  # scales included, protobuf framing included


@pytest.mark.parametrize("name", sorted(CODECS))
def test_decoding_the_same_bytes_gives_the_same_bits_and_survives_a_second_pass(name) -> None:
    codec = codec_for(name)
    x = _x(10_000 + 17)  # a partial last block
    once = codec.roundtrip(x)
    assert torch.equal(codec.extract(codec.compress(x)), once)
    # what a sender puts in its buffer travels unchanged (codec.py: whole blocks)
    assert torch.equal(codec.roundtrip(once), once)
    assert codec.compress(once).buffer == codec.compress(x).buffer


@pytest.mark.parametrize(("codec", "bytes_per_value"), [(Blockwise4(), 0.5), (Blockwise2(), 0.25)])
def test_low_bit_codecs_pack_their_codes(codec, bytes_per_value: float) -> None:
    """4-bit and 2-bit codes take half and a quarter of a byte (the scales add 2/2048), decode to
    a multiple of their block's scale within half a step, and a partial last byte round-trips."""
    n = 1 << 20
    assert codec.compress(_x(n)).ByteSize() / n < bytes_per_value + 0.0011
    x = _x(codec.block * 3 + 3)  # the last byte holds fewer codes than it can
    out = codec.roundtrip(x)
    block = slice(0, codec.block)
    step = out[block].abs().max() / codec.levels  # the block's (bfloat16) scale
    assert float((out[block] - x[block]).abs().max()) <= float(step) * 0.51
    codes = out[block] / step
    assert torch.equal(codes, codes.round())
    assert set(codes.round().int().tolist()) <= set(range(-codec.levels, codec.levels + 1))
    assert codec.levels in codes.round().int().abs().tolist()  # the block's absmax is a full code


@pytest.mark.parametrize("codec", [Blockwise4(), Blockwise2()])
def test_low_bit_codes_outside_the_range_are_refused(codec) -> None:
    msg = codec.compress(_x(5000))
    raw = bytearray(msg.buffer)
    raw[-1] = 0xFF  # every field of the last byte at its largest: beyond 2 * levels
    msg.buffer = bytes(raw)
    with pytest.raises(CodecError, match="outside"):
        codec.extract(msg)


def test_blockwise8_error_is_bounded_by_half_a_step_per_block() -> None:
    codec = Blockwise8(block=1024)
    x = _x(8192)
    err = (codec.roundtrip(x) - x).view(-1, 1024).abs().amax(dim=1)
    step = x.view(-1, 1024).abs().amax(dim=1) / 127
    assert bool((err <= step * 0.51).all())
    assert float((codec.roundtrip(x) - x).norm() / x.norm()) < 0.01


def test_blockwise8_handles_zero_blocks_and_refuses_nan() -> None:
    codec = Blockwise8()
    zeros = torch.zeros(5000)
    assert torch.equal(codec.roundtrip(zeros), zeros)
    with pytest.raises(CodecError):
        codec.compress(torch.tensor([1.0, float("nan")]))


def test_stochastic_rounding_is_unbiased() -> None:
    codec = Blockwise8(block=4)
    x = torch.tensor([1.0, 0.001, 0.002, -0.003])  # all but the first below half a step (1/127)
    g = torch.Generator().manual_seed(1)
    mean = sum(codec.extract(codec.compress(x, generator=g)) for _ in range(4000)) / 4000
    assert torch.allclose(mean[1:], x[1:], atol=4e-4)
    assert torch.equal(codec.roundtrip(x)[1:], torch.zeros(3))  # nearest rounding loses them


@pytest.mark.parametrize(
    "msg_change",
    [
        lambda m: setattr(m, "dtype", "float32"),
        lambda m: setattr(m, "buffer", m.buffer[:-1]),
        lambda m: m.size.append(3),
    ],
)
def test_malformed_messages_are_refused(msg_change) -> None:
    codec = Blockwise8()
    msg = codec.compress(_x(5000))
    msg_change(msg)
    with pytest.raises(CodecError):
        codec.extract(msg)


def test_float16_clamps_instead_of_sending_inf() -> None:
    assert torch.equal(
        Float16().roundtrip(torch.tensor([1e6, -1e6])), torch.tensor([65504.0, -65504.0])
    )


def _simulate(rounds: int, *, feedback: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """3 peers' pseudo-gradients through sender quantization (with or without error feedback)
    and the reducer's stochastic-rounded average, as allreduce.py does it; returns the sum of
    the applied averages and of the exact averages over `rounds`."""
    codec = Blockwise8(block=256)
    n, peers = 4096, 3
    weights = [700.0, 300.0, 123.0]
    efs = [ErrorFeedback(codec) for _ in range(peers)]
    applied = torch.zeros(n, dtype=torch.float64)
    exact = torch.zeros(n, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    for r in range(rounds):
        deltas = []
        for _ in range(peers):
            d = torch.randn(n, generator=g) * 1e-5
            d[::256] = 1e-2  # an outlier in every block: the step is ~8e-5, most values below it
            d[1::256] += 2e-5  # a persistent component below half a step
            deltas.append(d)
        sent = []
        for p, d in enumerate(deltas):
            buf = torch.empty(n)
            if feedback:
                efs[p].write_contribution([d], [buf])
                efs[p].commit([d])
            else:
                buf.copy_(codec.roundtrip(d))
            sent.append(buf)
        mean, _ = robust_mean(sent, weights, RobustConfig(clip=1e9, weight_cap=1e9))
        out = codec.extract(codec.compress(mean, generator=torch.Generator().manual_seed(r)))
        applied += out.double()
        exact += sum(w * d.double() for w, d in zip(weights, deltas, strict=True)) / sum(weights)
    return applied, exact


def test_error_feedback_tracks_exact_averaging_over_many_rounds() -> None:
    """The stated tolerance: over 200 rounds the applied averages sum to the exact ones within
    8 output steps per value on average and 35 at most (step = 1e-2/127 ≈ 8e-5; the reducer's
    unbiased rounding is a random walk of std ~sqrt(200/6) ≈ 5.8 steps, senders' rounding is
    fed back and does not add up). Without error feedback the values below half a step are
    rounded away every round: the persistent component (2e-5 a round) is lost, 51 steps."""
    applied, exact = _simulate(200, feedback=True)
    step = 1e-2 / 127
    error = (applied - exact).abs()
    assert float(error.mean()) < 8 * step
    assert float(error.max()) < 35 * step
    persistent = slice(1, None, 256)
    assert float(error[persistent].mean()) < 8 * step
    applied_no_ef, _ = _simulate(200, feedback=False)
    assert float((applied_no_ef - exact)[persistent].abs().mean()) > 30 * step
