"""The CUDA WKV-7 kernel: compile checks (any machine with nvcc / g++) and numerics (GPU only)."""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

import pytest
import torch
from gpt5os.model import wkv7
from gpt5os.model.wkv_cuda import KERNEL_DIR, NVCC_FLAGS
from test_model_wkv import make_inputs, rel_err, run_with_grads

has_cuda = torch.cuda.is_available()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
def test_kernel_compiles_with_nvcc(tmp_path, arch):
    """A kernel that no longer compiles fails CI even on machines without a GPU."""
    compute = arch.replace("sm_", "compute_")
    cmd = ["nvcc", "-c", str(KERNEL_DIR / "wkv7.cu"), "-o", str(tmp_path / "wkv7.o"),
           f"-gencode=arch={compute},code={arch}", *NVCC_FLAGS]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


@pytest.mark.skipif(shutil.which("g++") is None, reason="g++ not installed")
def test_torch_binding_compiles():
    """wkv7_op.cpp needs only torch's CPU headers, so it is checked here too (syntax + types)."""
    torch_inc = Path(torch.__file__).parent / "include"
    cmd = ["g++", "-std=c++17", "-fsyntax-only", f"-I{torch_inc}",
           f"-I{torch_inc / 'torch/csrc/api/include'}", f"-I{sysconfig.get_paths()['include']}",
           "-DTORCH_EXTENSION_NAME=gpt5os_wkv7", str(KERNEL_DIR / "wkv7_op.cpp")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_kernel_sources_ship_as_package_data():
    names = {p.name for p in KERNEL_DIR.iterdir()}
    assert {"wkv7.cu", "wkv7_op.cpp"} <= names


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda, reason="needs a CUDA device")
class TestCudaAgainstReference:
    """bf16 in/out: the reference runs in fp32 on the same bf16-rounded inputs."""

    TOL = 2e-2

    @pytest.mark.parametrize("t_len", [1, 15, 17, 100])
    @pytest.mark.parametrize("with_state", [False, True])
    def test_matches_reference(self, t_len, with_state):
        xs, state = make_inputs(2, t_len, 3, 64, with_state=with_state, seed=t_len)
        xs = [x.to(torch.bfloat16).float() if i != 1 else x for i, x in enumerate(xs)]
        cuda_xs = [x.cuda() for x in xs]
        cuda_state = None if state is None else state.cuda()
        ref = run_with_grads(lambda *a, state: wkv7(*a, state=state, impl="reference"),
                             xs, state, seed=t_len)  # fmt: skip
        got = run_with_grads(lambda *a, state: wkv7(*a, state=state, impl="cuda"),
                             cuda_xs, cuda_state, seed=t_len)  # fmt: skip
        assert rel_err(got[0], ref[0]) < self.TOL
        assert rel_err(got[1], ref[1]) < 1e-3  # the state never leaves fp32
        for name, g_got, g_ref in zip("rwkvab" + "s", got[2], ref[2], strict=False):
            assert rel_err(g_got, g_ref) < self.TOL, name

    def test_long_sequence_backstepping_stays_accurate(self):
        xs, state = make_inputs(1, 1000, 2, 64, with_state=True, seed=11)
        xs[1] = torch.full_like(xs[1], 0.5452)  # strongest decay the model allows
        xs = [x.to(torch.bfloat16).float() if i != 1 else x for i, x in enumerate(xs)]
        ref = run_with_grads(lambda *a, state: wkv7(*a, state=state, impl="reference"),
                             xs, state, seed=1)  # fmt: skip
        got = run_with_grads(lambda *a, state: wkv7(*a, state=state, impl="cuda"),
                             [x.cuda() for x in xs], state.cuda(), seed=1)  # fmt: skip
        for g_got, g_ref in zip(got[2], ref[2], strict=True):
            assert rel_err(g_got, g_ref) < self.TOL

    def test_opcheck_and_compile(self):
        from gpt5os.model.wkv_cuda import wkv7_forward_op

        xs, state = make_inputs(1, 33, 2, 64, with_state=True, seed=3)
        args = [x.cuda().to(torch.bfloat16) for x in xs]
        args[1] = xs[1].cuda().float()
        args = [x.requires_grad_() for x in args] + [state.cuda()]
        torch.library.opcheck(wkv7_forward_op, args)
        compiled = torch.compile(
            lambda *a: wkv7(*a[:6], state=a[6], impl="cuda")[0], fullgraph=True
        )
        eager = wkv7(*args[:6], state=args[6], impl="cuda")[0]
        assert torch.equal(compiled(*args), eager)
