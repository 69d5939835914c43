"""node/memory.py: the estimate `join` checks, and the refusal line (pure logic, milliseconds)."""

from __future__ import annotations

from pathlib import Path

import pytest
from gpt5os.coordinator.run_spec import PRESETS, preset_spec
from gpt5os.node import memory

GIB = memory.GIB


def _shape(**changes) -> memory.ModelShape:
    base = dict(params=100_000_000, n_layer=12, n_embd=768, vocab_size=65536, seq_len=64,
                batch_size=1, optimizer="adamw", compression="none")  # fmt: skip
    return memory.ModelShape(**{**base, **changes})


def test_per_parameter_terms_add_up() -> None:
    small, big = _shape(params=10**8), _shape(params=2 * 10**8)
    per_param = (memory.estimate(big, "cpu").host - memory.estimate(small, "cpu").host) / 10**8
    # the averaging peak: 12 weights and moments (no gradients) + 8 outer + 8 float64 wire
    assert per_param == 28
    small8, big8 = (_shape(params=n, compression="blockwise8") for n in (10**8, 2 * 10**8))
    per_param = (memory.estimate(big8, "cpu").host - memory.estimate(small8, "cpu").host) / 10**8
    # 12 + 8 outer + 2 bfloat16 error feedback + 4 fp32 wire
    assert per_param == 26
    eight_bit = _shape(params=2 * 10**8, optimizer="adamw8bit")
    assert (
        memory.estimate(big, "cpu").host - memory.estimate(eight_bit, "cpu").host == 6 * 2 * 10**8
    )


def test_a_gpu_node_keeps_training_state_on_the_gpu() -> None:
    cpu, gpu = memory.estimate(_shape(), "cpu"), memory.estimate(_shape(), "cuda")
    assert gpu.device_state == 16 * 10**8
    assert gpu.host < cpu.host <= gpu.host + gpu.device
    # on the host: the outer state, the wire buffer and one tensor's transients, no training state
    largest = 65536 * 768
    assert gpu.host == memory.BASELINE_HOST + 10**8 * (8 + 8) + largest * 16
    gpu8 = memory.estimate(_shape(compression="blockwise8"), "cuda")
    assert gpu8.host == memory.BASELINE_HOST + 10**8 * (8 + 2 + 4) + largest * 12


def test_overlap_holds_training_and_the_round_at_once_plus_two_copies() -> None:
    shape = _shape(compression="blockwise8", seq_len=2048)
    cpu, cpu_overlap = (memory.estimate(shape, "cpu", overlap=o) for o in (False, True))
    tokens = 2048
    activations = tokens * (12 * 768 * 230 + 65536 * 11 + 768 * 100)
    training = 10**8 * 16 + activations
    averaging = 10**8 * 4 + 65536 * 768 * 12
    assert cpu.host == memory.BASELINE_HOST + 10**8 * 10 + training  # training is the peak
    # both at once, plus Δ (4) and the validation model's weights (4)
    assert cpu_overlap.host == memory.BASELINE_HOST + 10**8 * (10 + 8) + training + averaging
    gpu, gpu_overlap = (memory.estimate(shape, "cuda", overlap=o) for o in (False, True))
    assert gpu_overlap.host - gpu.host == 10**8 * 4  # Δ, on the host
    assert gpu_overlap.device - gpu.device == 10**8 * 4  # the validation copy, on the GPU
    assert gpu_overlap.device_state - gpu.device_state == 10**8 * 4


def test_activations_grow_with_tokens() -> None:
    # (at 64 tokens the averaging peak, without gradients or activations, is the larger one)
    short, long = _shape(seq_len=2048), _shape(seq_len=4096)
    assert memory.estimate(long, "cpu").host > memory.estimate(short, "cpu").host
    assert memory.estimate(long, "cuda").device > memory.estimate(short, "cuda").device


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_has_an_estimate(preset: str) -> None:
    need = memory.estimate(memory.shape_of(preset_spec(preset, run_id="x")), "cpu")
    assert need.host > need.params * (16 + 8)


def test_refusal_is_one_line_naming_the_preset() -> None:
    need = memory.MemoryNeed(host=30 * GIB, device=0, params=10**9)
    line = memory.refusal(need, 20 * GIB, None, "1.5b")
    assert line is not None and "\n" not in line and "1.5b" in line and "30.0 GiB" in line
    assert memory.refusal(need, 31 * GIB, None, "1.5b") is None
    assert memory.refusal(need, None, None, "1.5b") is None  # unknown: do not refuse
    gpu = memory.MemoryNeed(host=GIB, device=40 * GIB, params=10**9, device_state=16 * GIB)
    assert memory.refusal(gpu, 8 * GIB, 20 * GIB, "1.5b") is None
    assert "GPU" in memory.refusal(gpu, 8 * GIB, 12 * GIB, "1.5b")


def test_available_host_bytes_reads_meminfo(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100 kB\nMemAvailable:    2048 kB\n")
    assert memory.available_host_bytes(meminfo) == 2048 * 1024
    assert memory.available_host_bytes(tmp_path / "missing") is None


def test_the_keeper_needs_its_outer_state_and_a_checkpoint_copy_but_no_training_state() -> None:
    shape = memory.ModelShape(
        params=10**8, n_layer=12, n_embd=768, vocab_size=65536, seq_len=512, batch_size=8,
        compression="blockwise8",
    )  # fmt: skip
    keeper = memory.estimate_keeper(shape)
    node = memory.estimate(shape, "cpu")
    floor = shape.params * (memory.WEIGHTS + memory.OUTER_STATE + 2 * memory.OUTER_STATE)
    assert floor < keeper.host < node.host  # no gradients, moments or activations
    assert keeper.device == 0
