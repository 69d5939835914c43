"""The CUDA WKV-7 path, built on any machine: the kernel compiles with nvcc (with the flags torch
adds) and defines the launchers the binding calls; the torch binding (kernels/wkv7_op.cpp) builds
against CPU tensors with stub launchers and refuses bad arguments with clear errors. The GPU
tests and the pure logic around the kernel are in test_model_cuda.py."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from gpt5os.model.wkv_cuda import CHUNK, KERNEL_DIR, NVCC_FLAGS
from test_model_cuda import backward_args, op_args

STUB_LAUNCHER = Path(__file__).resolve().parent / "wkv7_stub_launch.cpp"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernel_compiles_with_nvcc(tmp_path, arch):
    """A kernel that no longer compiles fails CI even on machines without a GPU; with the flags
    torch's extension builder adds (no implicit half/bf16 conversions, C++17)."""
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    compute = arch.replace("sm_", "compute_")
    cmd = ["nvcc", "-c", str(KERNEL_DIR / "wkv7.cu"), "-o", str(tmp_path / "wkv7.o"),
           f"-gencode=arch={compute},code={arch}", *COMMON_NVCC_FLAGS, "-std=c++17",
           *NVCC_FLAGS]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    if shutil.which("nm") and shutil.which("g++"):
        # The binding declares the launchers; tests/wkv7_stub_launch.cpp defines them with the
        # same signatures (the binding test links against it). C++ names encode the parameter
        # types, so the kernel object must define exactly these names or loading would fail.
        stub = tmp_path / "stub.o"
        subprocess.run(["g++", "-c", str(STUB_LAUNCHER), "-o", str(stub)], check=True)
        missing = launcher_symbols(stub) - launcher_symbols(tmp_path / "wkv7.o")
        assert not missing, f"wkv7.cu lacks the launchers the binding calls: {missing}"


def launcher_symbols(obj: Path) -> set[str]:
    out = subprocess.run(["nm", "--defined-only", str(obj)], capture_output=True, text=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if "wkv7_" in line}


# -- the binding's checks, built for CPU tensors ------------------------------------------------


@pytest.fixture(scope="module")
def binding():
    """kernels/wkv7_op.cpp as it ships, built with WKV7_DEVICE=CPU and stub launchers whose
    "error" says what they were given (~1 min the first time, then cached by torch)."""
    from torch.utils.cpp_extension import is_ninja_available, load

    if shutil.which("g++") is None or not is_ninja_available():
        pytest.skip("needs g++ and ninja to build the binding")
    return load(
        name="gpt5os_wkv7_stub",
        sources=[str(KERNEL_DIR / "wkv7_op.cpp"), str(STUB_LAUNCHER)],
        extra_cflags=["-O0", f"-DWKV7_CHUNK={CHUNK}", "-DWKV7_DEVICE=at::kCPU"],
    )


class TestBindingChecks:
    def test_valid_call_reaches_the_launcher_with_gradient_buffers(self, binding):
        with pytest.raises(RuntimeError, match="stub forward launch B=2 T=5 H=3 N=16 s_saved=set sa=set"):  # fmt: skip
            binding.forward(*op_args(), True, 0)

    def test_no_grad_call_passes_no_gradient_buffers(self, binding):
        with pytest.raises(RuntimeError, match="s_saved=null sa=null"):
            binding.forward(*op_args(), False, 0)

    @pytest.mark.parametrize("save", [True, False])
    def test_empty_batch_returns_empty_results_without_a_launch(self, binding, save):
        y, s_out, s_saved, sa = binding.forward(*op_args(bsz=0, t_len=20), save, 0)
        assert y.shape == (0, 20, 3, 16) and s_out.shape == (0, 3, 16, 16)
        assert s_saved.shape == ((0, 3, 2, 16, 16) if save else (0,))
        assert sa.shape == ((0, 20, 3, 16) if save else (0,))
        grads = binding.backward(*backward_args(bsz=0, t_len=20), 0)
        assert [g.shape for g in grads] == [(0, 20, 3, 16)] * 6 + [(0, 3, 16, 16)]

    def test_empty_heads_return_empty_results_without_a_launch(self, binding):
        y, *_ = binding.forward(*op_args(h=0, t_len=7), True, 0)
        assert y.shape == (2, 7, 0, 16)

    def test_empty_sequence_passes_the_state_through(self, binding):
        args = op_args(t_len=0)
        args[-1] = torch.randn(2, 3, 16, 16)
        _, s_out, _, _ = binding.forward(*args, True, 0)
        assert torch.equal(s_out, args[-1])

    def test_valid_backward_reaches_the_launcher(self, binding):
        with pytest.raises(RuntimeError, match="stub backward launch B=2 T=5 H=3 N=16"):
            binding.backward(*backward_args(), 0)

    @pytest.mark.parametrize(
        "index, bad, message",
        [
            (
                6,
                torch.zeros(2, 3, 16, 16, device="meta"),
                r"s0 \(initial state\) must be on CPU, got meta",
            ),  # fmt: skip
            (
                6,
                torch.zeros(2, 3, 16, 8),
                r"s0 \(initial state\) has shape \[2, 3, 16, 8\], expected \[2, 3, 16, 16\]",
            ),  # fmt: skip
            (
                6,
                torch.zeros(2, 3, 16, 16, dtype=torch.bfloat16),
                "s0 .* has dtype BFloat16, expected Float",
            ),  # fmt: skip
            (6, torch.zeros(2, 3, 16, 16).transpose(-1, -2), "s0 .* must be contiguous"),
            (
                1,
                torch.rand(2, 5, 3, 16).to(torch.bfloat16),
                "w has dtype BFloat16, expected Float",
            ),  # fmt: skip
            (3, torch.zeros(2, 5, 3, 32).to(torch.bfloat16)[..., ::2], "v must be contiguous"),
            (4, torch.zeros(2, 5, 3, 8).to(torch.bfloat16), "a has shape"),
            (0, torch.zeros(5, 3, 16).to(torch.bfloat16), r"inputs must be \[B, T, H, N\]"),
        ],
    )
    def test_forward_refuses(self, binding, index, bad, message):
        args = op_args()
        args[index] = bad
        with pytest.raises(RuntimeError, match=message):
            binding.forward(*args, True, 0)

    def test_head_size_128_is_refused(self, binding):
        with pytest.raises(RuntimeError, match="head size must be 16, 32 or 64, got 128"):
            binding.forward(*op_args(n=128), True, 0)

    @pytest.mark.parametrize(
        "index, bad, message",
        [
            (
                7,
                torch.zeros(2, 3, 16, 16, device="meta"),
                r"ds_out \(final-state gradient\) must be on CPU",
            ),  # fmt: skip
            (7, torch.zeros(2, 3, 16, 16, dtype=torch.float64), r"ds_out .* has dtype Double"),
            (
                8,
                torch.zeros(2, 3, 2, 16, 16),
                r"s_saved .* has shape \[2, 3, 2, 16, 16\], expected \[2, 3, 1, 16, 16\]",
            ),  # fmt: skip
            (
                8,
                torch.zeros(0),
                r"s_saved \(the forward's chunk states; was it run with save=True\?\)",
            ),  # fmt: skip
            (
                9,
                torch.zeros(0),
                r"sa \(the forward's S a; was it run with save=True\?\) has shape",
            ),  # fmt: skip
            (6, torch.zeros(2, 5, 3, 16), "dy has dtype Float, expected BFloat16"),
        ],
    )
    def test_backward_refuses(self, binding, index, bad, message):
        args = backward_args()
        args[index] = bad
        with pytest.raises(RuntimeError, match=message):
            binding.backward(*args, 0)
