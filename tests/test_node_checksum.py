"""The group checksum: a complete all-reduce always passes, one that lost a part never does.

The all-reduce arithmetic here is hivemind's own TensorPartReducer (its float32 accumulator
included), driven in memory, so the tolerance is tested against the rounding it really adds.
"""

from __future__ import annotations

import asyncio

import pytest
import torch
from gpt5os.node import checksum, fixed_point
from hivemind.averaging.partition import TensorPartReducer

PART = 4096  # values per part (hivemind's default is 65,536 float64 values)


def _encoded_group(n_peers: int, numel: int, seed: int, scale: float) -> list[torch.Tensor]:
    torch.manual_seed(seed)
    encoded = []
    for _ in range(n_peers):
        delta = torch.randn(numel) * scale * 10 ** torch.empty(numel).uniform_(-3, 0)
        buf = torch.empty(numel, dtype=torch.float64)
        fixed_point.encode(delta, 1.0 / n_peers, buf)
        encoded.append(buf)
    return encoded


def _hivemind_all_reduce(
    encoded: list[torch.Tensor],
    *,
    sender_fails_at: tuple[int, int] | None = None,
    accumulator: torch.dtype = torch.float64,
) -> torch.Tensor:
    """The averaged vector every peer receives from a reducer with weight 1 per peer.

    `sender_fails_at=(sender, part)`: that sender's stream breaks before it sends `part`, and
    the reducer averages the remaining parts over the others (hivemind's on_sender_failed).
    `accumulator`: the default dtype in the averager's process (ours sets float64, swarm.py)."""
    parts = [buf.split(PART) for buf in encoded]

    async def run() -> list[torch.Tensor]:
        reducer = TensorPartReducer([p.shape for p in parts[0]], len(encoded))
        outputs: list[list[torch.Tensor]] = [[] for _ in encoded]

        async def send(sender: int) -> None:
            for index, part in enumerate(parts[sender]):
                if sender_fails_at == (sender, index):
                    reducer.on_sender_failed(sender)
                    return
                outputs[sender].append(await reducer.accumulate_part(sender, index, part, 1.0))

        await asyncio.gather(*(send(i) for i in range(len(encoded))))
        return outputs[0]

    default = torch.get_default_dtype()
    torch.set_default_dtype(accumulator)
    try:
        return torch.cat(asyncio.run(run())).to(torch.float64)
    finally:
        torch.set_default_dtype(default)


def _peer_result(local: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """What the averager leaves in a peer's buffer: local + (mean - local), in float64."""
    return local + (mean - local)


def _contributions(encoded: list[torch.Tensor], seed: int) -> list[checksum.Contribution]:
    return [checksum.project([buf], seed) for buf in encoded]


@pytest.mark.parametrize("accumulator", [torch.float64, torch.float32])
@pytest.mark.parametrize("n_peers", [2, 3, 8])
@pytest.mark.parametrize("scale", [1e-4, 1e-2, 1.0])
def test_a_complete_all_reduce_passes_on_every_peer(
    n_peers: int, scale: float, accumulator: torch.dtype
) -> None:
    """No false alarm, even with hivemind's stock float32 accumulator."""
    encoded = _encoded_group(n_peers, 60_000, seed=n_peers, scale=scale)
    mean = _hivemind_all_reduce(encoded, accumulator=accumulator)
    contributions = _contributions(encoded, seed=11)
    for local in encoded:
        total = fixed_point.decode_sum(_peer_result(local, mean), n_peers)
        ok, ratio = checksum.matches([total], contributions, seed=11)
        assert ok, f"false alarm at {ratio:.3g} x tolerance"
        assert ratio < 0.1  # the bound is loose, not tight to the edge


@pytest.mark.parametrize("n_peers", [2, 3, 8])
def test_with_a_float64_accumulator_every_peer_decodes_the_exact_sum(n_peers: int) -> None:
    encoded = _encoded_group(n_peers, 60_000, seed=20 + n_peers, scale=1e-2)
    mean = _hivemind_all_reduce(encoded)
    exact = torch.stack(encoded).sum(0)  # integer multiples of the quantum: exact in float64
    for local in encoded:
        assert torch.equal(fixed_point.decode_sum(_peer_result(local, mean), n_peers), exact)


@pytest.mark.parametrize("n_peers", [2, 3])
def test_a_peer_that_lost_a_reducers_part_fails(n_peers: int) -> None:
    """hivemind's register_failed_reducer: the peer keeps its own values for that part."""
    encoded = _encoded_group(n_peers, 60_000, seed=5, scale=1e-3)
    mean = _hivemind_all_reduce(encoded)
    contributions = _contributions(encoded, seed=3)
    unlucky = encoded[1]
    result = _peer_result(unlucky, mean)
    lost = slice(2 * PART, 3 * PART)
    result[lost] = unlucky[lost]
    total = fixed_point.decode_sum(result, n_peers)
    ok, ratio = checksum.matches([total], contributions, seed=3)
    assert not ok
    assert ratio > 100


def test_a_reducer_that_lost_a_sender_fails_everywhere_even_on_the_grid() -> None:
    """With two peers, a part averaged over the survivor alone is 2·x: on the fixed-point grid, so
    decode_sum cannot notice; the checksum does."""
    encoded = _encoded_group(2, 60_000, seed=7, scale=1e-3)
    mean = _hivemind_all_reduce(encoded, sender_fails_at=(1, 5))
    contributions = _contributions(encoded, seed=9)
    total = fixed_point.decode_sum(_peer_result(encoded[0], mean), 2)
    ok, ratio = checksum.matches([total], contributions, seed=9)
    assert not ok
    assert ratio > 100


def test_projection_is_linear_across_peers() -> None:
    """Σ r·x_i = r·Σ x_i: the group's checksums add up to the checksum of the sum."""
    torch.manual_seed(2)
    a = [torch.randn(3_000_000, dtype=torch.float64), torch.randn(17, dtype=torch.float64)]
    b = [torch.randn_like(t) for t in a]
    total = [x + y for x, y in zip(a, b, strict=True)]
    pa, pb, pt = (checksum.project(t, seed=4).probe for t in (a, b, total))
    assert pt == pytest.approx(pa + pb, rel=1e-12, abs=1e-9)


def test_the_probe_vector_is_pinned_and_changes_with_the_round() -> None:
    """Every peer must derive the same r in every version: changing the hash would split a swarm
    of mixed versions, so it must be a deliberate change that fails this test."""
    unit = torch.eye(8, dtype=torch.float64)
    assert [checksum.probe_dot(unit[i], 1, 0, 0) for i in range(8)] == [
        -1.0, -1.0, 1.0, -1.0, 1.0, -1.0, -1.0, -1.0
    ]  # fmt: skip
    assert [checksum.probe_dot(unit[i], 2, 0, 0) for i in range(8)] == [
        1.0, 1.0, 1.0, -1.0, -1.0, 1.0, -1.0, 1.0
    ]  # fmt: skip
