"""The CUDA WKV-7 path (its build and the binding's errors: test_model_cuda_build.py).

Everywhere (CPU only is enough): the decay guard, the head-size fallback, the no-grad switch, and
the custom ops' glue (autograd formula, saved buffers, fake shapes, opcheck, tracing) with the
kernels emulated in PyTorch (wkv7_emulation.py).
On a GPU (marked ``gpu``): the kernel against a float64 reference, per output, over chunk
boundaries and head sizes; the no-grad path; compiled against eager; non-contiguous inputs;
opcheck; the guard as a device-side assert without host sync.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from gpt5os.model import wkv7
from gpt5os.model.wkv import choose_impl, wkv7_reference
from gpt5os.model.wkv_cuda import (
    CHUNK,
    DECAY_MESSAGE,
    KERNEL_DIR,
    W_MIN,
    check_decay_async,
    needs_grad,
)
from test_model_wkv import make_inputs, rel_err

has_cuda = torch.cuda.is_available()


def test_kernel_sources_ship_as_package_data():
    names = {p.name for p in KERNEL_DIR.iterdir()}
    assert {"wkv7.cu", "wkv7_op.cpp"} <= names


# -- helpers shared with test_model_cuda_build.py ------------------------------------------------


def op_args(bsz=2, t_len=5, h=3, n=16):
    """Valid forward arguments for the binding: bf16 r, k, v, a, b; fp32 w and state."""
    x = [torch.rand(bsz, t_len, h, n) for _ in range(6)]
    r, k, v, a, b = (t.to(torch.bfloat16) for t in (x[0], *x[2:]))
    return [r, x[1] * 0.4 + 0.6, k, v, a, b, torch.zeros(bsz, h, n, n)]


def backward_args(bsz=2, t_len=5, h=3, n=16):
    r, w, k, v, a, b, s0 = op_args(bsz, t_len, h, n)
    n_chunks = -(-t_len // CHUNK)
    dy, ds_out = torch.zeros_like(r), torch.zeros_like(s0)
    s_saved, sa = torch.zeros(bsz, h, n_chunks, n, n), torch.zeros(bsz, t_len, h, n)
    return [r, w, k, v, a, b, dy, ds_out, s_saved, sa]


# -- pure logic around the kernel ---------------------------------------------------------------


class TestDecayGuard:
    """check_decay_async raises synchronously on the CPU; on CUDA it is a device-side assert."""

    @pytest.mark.parametrize("lo, hi", [(W_MIN, 1.0), (0.5452, 0.9999)])
    def test_accepts_the_contract(self, lo, hi):
        check_decay_async(torch.tensor([lo, (lo + hi) / 2, hi]))

    @pytest.mark.parametrize("bad", [W_MIN - 1e-3, 0.25, 1.001, math.nan, -0.7])
    def test_refuses_outside_it(self, bad):
        with pytest.raises(RuntimeError, match=r"needs decay factors w in \[0.5, 1\]"):
            check_decay_async(torch.tensor([0.9, bad, 0.8]))

    def test_model_clamp_is_inside_the_cuda_limit(self):
        assert math.exp(-math.exp(-0.5)) > W_MIN
        assert "0.545" in DECAY_MESSAGE


class TestImplChoice:
    @pytest.mark.parametrize("n", [16, 32, 64])
    def test_auto_on_cuda_uses_the_kernel(self, n):
        assert choose_impl("auto", "cuda", n) == "cuda"

    @pytest.mark.parametrize("n", [8, 128, 256])
    def test_auto_on_cuda_falls_back_for_other_head_sizes(self, n):
        assert choose_impl("auto", "cuda", n) == "cpu"  # chunked PyTorch form, on the GPU

    def test_auto_on_cpu_and_explicit_choices(self):
        assert choose_impl("auto", "cpu", 64) == "cpu"
        assert choose_impl("cuda", "cuda", 128) == "cuda"  # explicit: wkv7_cuda refuses it
        assert choose_impl("reference", "cuda", 64) == "reference"

    def test_fallback_form_runs_head_size_128(self):
        """What auto falls back to on a GPU is wkv7_cpu's chunked branch for non-CPU tensors;
        the same form on the CPU, N=128, against the reference."""
        from gpt5os.model.wkv_chunked import wkv7_chunked

        xs, state = make_inputs(1, 20, 1, 128, with_state=True, seed=5)
        y, s = wkv7_chunked(*xs, state=state)
        y_ref, s_ref = wkv7_reference(*xs, state=state)
        assert rel_err(y, y_ref) < 1e-4 and rel_err(s, s_ref) < 1e-4


def test_needs_grad_follows_grad_mode_and_requires_grad():
    x, y = torch.zeros(2), torch.zeros(2, requires_grad=True)
    assert needs_grad(x, y) and not needs_grad(x, x)
    with torch.no_grad():
        assert not needs_grad(x, y)
    with torch.inference_mode():
        assert not needs_grad(x, y)


def test_fake_forward_has_no_gradient_buffers_without_save():
    """torch.compile traces through the fake: its shapes must match what the binding returns."""
    from gpt5os.model.wkv_cuda import wkv7_forward_op
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        args = op_args(t_len=33)
        _, _, s_saved, sa = wkv7_forward_op(*args, False)
        assert s_saved.shape == (0,) and sa.shape == (0,)
        _, _, s_saved, sa = wkv7_forward_op(*args, True)
        assert s_saved.shape == (2, 3, 3, 16, 16) and sa.shape == (2, 33, 3, 16)


# -- the custom ops' glue, on the CPU with the kernels emulated -----------------------------------


@pytest.fixture
def emulated(monkeypatch):
    """The custom ops run on CPU tensors with tests/wkv7_emulation.py as the extension."""
    import wkv7_emulation
    from gpt5os.model import wkv_cuda

    monkeypatch.setattr(wkv_cuda, "_extension", lambda: wkv7_emulation)
    return wkv_cuda


def op_inputs(bsz, t_len, h, n, seed):
    """Model-like op arguments: bf16 r, k, v, a, b (requiring grad), fp32 w and state."""
    xs, state = make_inputs(bsz, t_len, h, n, with_state=True, seed=seed)
    args = [x if i == 1 else x.to(torch.bfloat16) for i, x in enumerate(xs)] + [state]
    return [x.requires_grad_() for x in args]


class TestOpGlueOnCpu:
    @pytest.mark.parametrize("t_len", [1, 16, 33])
    def test_op_gradients_match_the_reference(self, emulated, t_len):
        """Autograd formula + what the forward saves for the backward, against autograd through
        the reference on the same (bf16-rounded) inputs."""
        args = op_inputs(2, t_len, 2, 16, seed=t_len)
        y, s, _, _ = emulated.wkv7_forward_op(*args, True)
        gy = torch.randn(y.shape).to(torch.bfloat16)
        ((y.float() * gy.float()).sum() + s.square().sum()).backward()
        ref_args = [x.detach().float().requires_grad_() for x in args]
        y_ref, s_ref = wkv7_reference(*ref_args[:6], state=ref_args[6])
        ((y_ref * gy.float()).sum() + s_ref.square().sum()).backward()
        assert rel_err(y, y_ref) < 5e-3 and rel_err(s, s_ref) < 1e-5
        for name, x, x_ref in zip(GRAD_NAMES, args, ref_args, strict=True):
            assert rel_err(x.grad, x_ref.grad) < TOL[name], name

    def test_no_save_returns_empty_buffers(self, emulated):
        args = [x.detach() for x in op_inputs(1, 20, 2, 16, seed=1)]
        y, s, s_saved, sa = emulated.wkv7_forward_op(*args, False)
        assert s_saved.numel() == 0 and sa.numel() == 0
        y_save, s_save, _, _ = emulated.wkv7_forward_op(*args, True)
        assert torch.equal(y, y_save) and torch.equal(s, s_save)

    @pytest.mark.parametrize("save", [True, False])
    def test_opcheck_forward(self, emulated, save):
        """Schema, fake implementation (shapes, dtypes, strides), autograd registration and AOT
        dispatch of the forward op."""
        args = op_inputs(1, 33, 2, 16, seed=3)
        if not save:
            args = [x.detach() for x in args]
        torch.library.opcheck(emulated.wkv7_forward_op, (*args, save))

    def test_opcheck_backward(self, emulated):
        args = [x.detach() for x in op_inputs(1, 33, 2, 16, seed=4)]
        _, _, s_saved, sa = emulated.wkv7_forward_op(*args, True)
        dy, ds_out = torch.randn_like(args[0]), torch.randn_like(args[6])
        torch.library.opcheck(emulated.wkv7_backward_op, (*args[:6], dy, ds_out, s_saved, sa))

    def test_traced_backward_matches_eager(self, emulated):
        """torch.compile through the ops (fake shapes + autograd formula; aot_eager: no codegen)."""
        args = op_inputs(1, 20, 2, 16, seed=5)

        def loss_fn(*xs):
            y, s, _, _ = emulated.wkv7_forward_op(*xs, True)
            return y.float().square().sum() + s.square().sum()

        def grads(fn):
            leaves = [x.detach().clone().requires_grad_() for x in args]
            fn(*leaves).backward()
            return [x.grad for x in leaves]

        eager = grads(loss_fn)
        traced = grads(torch.compile(loss_fn, backend="aot_eager", fullgraph=True))
        for name, g_t, g_e in zip(GRAD_NAMES, traced, eager, strict=True):
            assert torch.equal(g_t, g_e), name


# -- on a GPU -----------------------------------------------------------------------------------

# Per-output tolerances (relative, `rel_err`) against a float64 reference on the same
# bf16-rounded inputs: bf16 outputs carry their own rounding (~1e-3); dw is fp32 but reads the
# state rebuilt by backstepping; the final state and ds0 never leave fp32.
TOL = {"y": 5e-3, "state": 1e-5, "r": 5e-3, "w": 2e-3, "k": 5e-3, "v": 5e-3, "a": 5e-3,
       "b": 5e-3, "s0": 1e-5}  # fmt: skip
GRAD_NAMES = ["r", "w", "k", "v", "a", "b", "s0"]


def bf16_round(xs):
    """Inputs as the kernel sees them: bf16 except the fp32 decay."""
    return [x if i == 1 else x.to(torch.bfloat16).float() for i, x in enumerate(xs)]


def outputs_and_grads(impl, xs, state, seed, dtype, device):
    """y, final state and the gradients of <y, gy> + <S, gs> w.r.t. every input and the state,
    with gy rounded to bf16 so that both sides see the same output gradient."""
    leaves = [x.detach().to(device, dtype).requires_grad_() for x in xs]
    leaves.append(state.detach().to(device, torch.float64 if dtype == torch.float64 else torch.float32).requires_grad_())  # fmt: skip
    y, s = wkv7(*leaves[:6], state=leaves[6], impl=impl)
    g = torch.Generator().manual_seed(seed)
    gy = torch.randn(y.shape, generator=g).to(torch.bfloat16).to(device, torch.float64)
    gs = torch.randn(s.shape, generator=g).to(device, torch.float64)
    loss = (y.double() * gy).sum() + (s.double() * gs).sum()
    grads = torch.autograd.grad(loss, leaves)
    return {"y": y, "state": s} | dict(zip(GRAD_NAMES, grads, strict=True))


def errors_against_reference(xs, state, seed):
    xs = bf16_round(xs)
    ref = outputs_and_grads("reference", xs, state, seed, torch.float64, "cpu")
    got = outputs_and_grads("cuda", xs, state, seed, torch.float32, "cuda")
    return {name: rel_err(got[name].double(), ref[name]) for name in ref}


def assert_within(errors, tol):
    bad = {name: f"{err:.2e} > {tol[name]:.0e}" for name, err in errors.items() if err > tol[name]}
    assert not bad, f"relative errors over tolerance: {bad}"


@pytest.mark.parametrize("n", [16, 32, 64])
@pytest.mark.parametrize("t_len", [1, 15, 16, 17, 32, 33, 64, 100])
@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda, reason="needs a CUDA device")
def test_cuda_matches_float64_reference(n, t_len, with_state):
    xs, state = make_inputs(2, t_len, 3, n, with_state=True, seed=t_len * 100 + n)
    if not with_state:
        state = torch.zeros_like(state)
    assert_within(errors_against_reference(xs, state, seed=t_len), TOL)


@pytest.mark.gpu
@pytest.mark.skipif(not has_cuda, reason="needs a CUDA device")
class TestCuda:
    def test_long_sequence_at_the_decay_clamp(self):
        """T=1000 at w=0.5452 (the strongest decay the model makes): backstepping over every
        chunk; an fp32 emulation predicted gradient errors ~1.7e-3, mostly bf16 rounding."""
        xs, state = make_inputs(1, 1000, 2, 64, with_state=True, seed=11)
        xs[1] = torch.full_like(xs[1], 0.5452)
        errors = errors_against_reference(xs, state, seed=1)
        assert_within(errors, TOL | {name: 5e-3 for name in GRAD_NAMES[:6]})

    def test_no_grad_forward_allocates_no_gradient_buffers(self):
        xs, state = make_inputs(2, 1024, 4, 64, with_state=True, seed=2, device="cuda")
        xs = [x if i == 1 else x.to(torch.bfloat16) for i, x in enumerate(xs)]  # no copies
        wkv7(*xs, state=state, impl="cuda")  # build and warm up
        torch.cuda.synchronize()
        sa_bytes = xs[0].numel() * 4
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        with torch.no_grad():
            y, s = wkv7(*xs, state=state, impl="cuda")
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        assert peak < sa_bytes, f"no-grad forward used {peak} bytes, sa alone is {sa_bytes}"
        xs_g = [x.clone().requires_grad_() for x in xs]
        y_g, s_g = wkv7(*xs_g, state=state, impl="cuda")
        assert torch.equal(y, y_g) and torch.equal(s, s_g)

    def test_direct_op_without_save_returns_empty_buffers(self):
        from gpt5os.model.wkv_cuda import wkv7_forward_op

        args = [x.cuda() for x in op_args(t_len=40)]
        _, _, s_saved, sa = wkv7_forward_op(*args, False)
        assert s_saved.numel() == 0 and sa.numel() == 0

    def test_guard_needs_no_host_sync(self):
        xs, state = make_inputs(1, 64, 2, 64, with_state=True, seed=4, device="cuda")
        xs = [x.requires_grad_() for x in xs]
        state = state.cuda()
        wkv7(*xs, state=state, impl="cuda")  # build and warm up outside the check
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            y, s = wkv7(*xs, state=state, impl="cuda")
            (y.float().sum() + s.sum()).backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")

    def test_decay_below_the_limit_is_a_device_side_assert(self):
        """In a child process: a device-side assert ends the CUDA context it happens in."""
        code = (
            "import torch\nfrom gpt5os.model import wkv7\n"
            "x = torch.rand(1, 8, 1, 16, device='cuda')\n"
            "w = torch.full_like(x, float(__import__('sys').argv[1]))\n"
            "wkv7(x, w, x, x, x, x, impl='cuda')\ntorch.cuda.synchronize()\nprint('finished')\n"
        )
        ok = subprocess.run([sys.executable, "-c", code, "0.6"], capture_output=True, text=True,
                            timeout=300)  # fmt: skip
        assert ok.returncode == 0 and "finished" in ok.stdout, ok.stderr[-2000:]
        bad = subprocess.run([sys.executable, "-c", code, "0.3"], capture_output=True,
                             text=True, timeout=300)  # fmt: skip
        assert bad.returncode != 0 and "finished" not in bad.stdout
        assert "assert" in bad.stderr.lower(), bad.stderr[-2000:]

    def test_auto_falls_back_for_head_size_128(self):
        xs, state = make_inputs(1, 40, 2, 128, with_state=True, seed=6)
        y_ref, s_ref = wkv7_reference(*xs, state=state)
        y, s = wkv7(*[x.cuda() for x in xs], state=state.cuda(), impl="auto")
        assert rel_err(y, y_ref) < 1e-4 and rel_err(s, s_ref) < 1e-4
        with pytest.raises(ValueError, match="supports head sizes"):
            wkv7(*[x.cuda() for x in xs], state=state.cuda(), impl="cuda")

    def test_empty_batch(self):
        xs, state = make_inputs(0, 20, 2, 64, with_state=True, seed=7, device="cuda")
        xs = [x.requires_grad_() for x in xs]
        y, s = wkv7(*xs, state=state.cuda(), impl="cuda")
        assert y.shape == (0, 20, 2, 64) and s.shape == (0, 2, 64, 64)
        y.sum().backward()
        assert xs[0].grad.shape == xs[0].shape

    def test_non_contiguous_inputs_through_the_wrapper(self):
        xs, state = make_inputs(2, 33, 3, 32, with_state=True, seed=8, device="cuda")
        state = state.cuda()
        strided = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in xs]  # [B,H,T,N] memory
        strided[3] = torch.stack([xs[3], xs[3]], dim=-1)[..., 0]  # a step between elements
        assert not any(x.is_contiguous() for x in strided)
        assert torch.equal(strided[3], xs[3])
        got = outputs_and_grads("cuda", strided, state, 3, torch.float32, "cuda")
        want = outputs_and_grads("cuda", [x.contiguous() for x in xs], state, 3, torch.float32,
                                 "cuda")  # fmt: skip
        for name in want:
            assert torch.equal(got[name], want[name]), name

    def test_compiled_backward_matches_eager(self):
        xs, state = make_inputs(2, 40, 2, 64, with_state=True, seed=9, device="cuda")
        xs = bf16_round(xs)
        gy = torch.randn(2, 40, 2, 64, device="cuda").to(torch.bfloat16)

        def loss_fn(*args):
            y, s = wkv7(*args[:6], state=args[6], impl="cuda")
            return (y.float() * gy.float()).sum() + s.square().sum()

        def grads(fn):
            leaves = [x.detach().clone().requires_grad_() for x in (*xs, state.cuda())]
            fn(*leaves).backward()
            return [x.grad for x in leaves]

        eager = grads(loss_fn)
        compiled = grads(torch.compile(loss_fn, fullgraph=True))
        for name, g_c, g_e in zip(GRAD_NAMES, compiled, eager, strict=True):
            assert rel_err(g_c, g_e) < 1e-6, name

    def test_opcheck(self):
        from gpt5os.model.wkv_cuda import wkv7_backward_op, wkv7_forward_op

        xs, state = make_inputs(1, 33, 2, 64, with_state=True, seed=3, device="cuda")
        args = [x.to(torch.bfloat16) for x in xs]
        args[1] = xs[1].float()
        args = [x.requires_grad_() for x in args] + [state.cuda().requires_grad_()]
        torch.library.opcheck(wkv7_forward_op, (*args, True))
        plain = [x.detach() for x in args]
        torch.library.opcheck(wkv7_forward_op, (*plain, False))
        _, _, s_saved, sa = wkv7_forward_op(*plain, True)
        dy = torch.randn_like(plain[0])
        ds_out = torch.randn_like(plain[6])
        torch.library.opcheck(wkv7_backward_op, (*plain[:6], dy, ds_out, s_saved, sa))
