"""hivemind's tensor codecs must survive our dependency pins.

hivemind 1.1.12's 8-bit codecs and bfloat16 serialization raise TypeError on NumPy 2.4, and inside
an all-reduce that error is swallowed: peers silently end up with different tensors. This test
sends bf16 and 8-bit tensors through hivemind's serialization so a dependency change that breaks
them fails CI instead.
"""

from __future__ import annotations

import pytest
import torch
from hivemind.compression import deserialize_torch_tensor, serialize_torch_tensor
from hivemind.proto.runtime_pb2 import CompressionType

LOSSY_8BIT = {
    CompressionType.UNIFORM_8BIT: 0.05,
    CompressionType.QUANTILE_8BIT: 0.08,
    CompressionType.BLOCKWISE_8BIT: 0.05,
}


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.mark.parametrize("codec", sorted(LOSSY_8BIT), ids=lambda c: CompressionType.Name(c))
def test_8bit_codecs_roundtrip(codec: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(100_000)
    wire = serialize_torch_tensor(x, codec)
    assert len(wire.buffer) < x.numel() * 1.1  # about one byte per value
    y = deserialize_torch_tensor(wire)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert _relative_error(y, x) < LOSSY_8BIT[codec]


def test_bfloat16_tensor_roundtrip_is_exact() -> None:
    torch.manual_seed(0)
    x = torch.randn(4096).to(torch.bfloat16)
    y = deserialize_torch_tensor(serialize_torch_tensor(x, CompressionType.NONE))
    assert y.dtype == torch.bfloat16
    assert torch.equal(x, y)


@pytest.mark.parametrize("codec", [CompressionType.FLOAT16, CompressionType.MEANSTD_16BIT])
def test_16bit_codecs_roundtrip(codec: int) -> None:
    torch.manual_seed(0)
    x = torch.randn(10_000)
    y = deserialize_torch_tensor(serialize_torch_tensor(x, codec))
    assert _relative_error(y, x) < 1e-3


def test_float64_roundtrip_is_exact() -> None:
    """Exact averaging sends float64 fixed-point values uncompressed: not one bit may change."""
    x = torch.randn(10_000, dtype=torch.float64)
    y = deserialize_torch_tensor(serialize_torch_tensor(x, CompressionType.NONE))
    assert torch.equal(x, y)
