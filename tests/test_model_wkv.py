"""WKV-7: the fast paths against the per-step reference (outputs, final states, all gradients)."""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from gpt5os.model import wkv7, wkv_cpu
from gpt5os.model.wkv import wkv7_reference
from gpt5os.model.wkv_chunked import wkv7_chunked

REL_TOL = 1e-4


def make_inputs(bsz, t_len, h, n, *, with_state, seed, dtype=torch.float32, device="cpu"):
    """Model-like random inputs: a = -kk, b = kk * iclr with |kk| = 1, w inside the decay clamp."""
    g = torch.Generator().manual_seed(seed)

    def randn(*shape, scale=1.0):
        return torch.randn(*shape, generator=g) * scale

    kk = F.normalize(randn(bsz, t_len, h, n), dim=-1)
    iclr = torch.rand(bsz, t_len, h, n, generator=g)
    w = torch.exp(-0.6065 * torch.rand(bsz, t_len, h, n, generator=g))
    r, k, v = (
        randn(bsz, t_len, h, n, scale=0.5),
        randn(bsz, t_len, h, n, scale=0.5),
        randn(bsz, t_len, h, n),
    )
    xs = [x.to(device=device, dtype=dtype) for x in (r, w, k, v, -kk, kk * iclr)]
    state = randn(bsz, h, n, n, scale=0.3).to(device) if with_state else None
    return xs, state


def run_with_grads(fn, xs, state, seed):
    """y, final state and the gradients of a random projection of both w.r.t. every input."""
    xs = [x.detach().clone().requires_grad_() for x in xs]
    leaves = list(xs)
    if state is not None:
        state = state.detach().clone().requires_grad_()
        leaves.append(state)
    y, s = fn(*xs, state=state)
    g = torch.Generator().manual_seed(seed + 1)
    gy = torch.randn(y.shape, generator=g).to(y.device, y.dtype)
    gs = torch.randn(s.shape, generator=g).to(s.device)
    loss = (y.float() * gy.float()).sum() + (s * gs).sum()
    grads = torch.autograd.grad(loss, leaves)
    return y.detach().float(), s.detach(), [gr.float() for gr in grads]


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative error, with a floor of 1e-3 RMS on the denominator: a gradient that is exactly
    zero in the reference (dw at T=1 from a zero state) compares as absolute error there."""
    x, ref = x.float().cpu(), ref.float().cpu()
    floor = 1e-3 * max(ref.numel(), 1) ** 0.5
    return ((x - ref).norm() / ref.norm().clamp_min(floor)).item()


NAMES = ["r", "w", "k", "v", "a", "b", "state"]


def assert_close_to_reference(fn, xs, state, seed, tol=REL_TOL):
    ref = run_with_grads(wkv7_reference, [x.cpu().float() for x in xs],
                         None if state is None else state.cpu(), seed)  # fmt: skip
    got = run_with_grads(fn, xs, state, seed)
    assert rel_err(got[0], ref[0]) < tol, f"y rel err {rel_err(got[0], ref[0])}"
    assert rel_err(got[1], ref[1]) < tol, f"final state rel err {rel_err(got[1], ref[1])}"
    for name, g_got, g_ref in zip(NAMES[: len(ref[2])], got[2], ref[2], strict=True):
        assert rel_err(g_got, g_ref) < tol, f"d{name} rel err {rel_err(g_got, g_ref)}"


class TestCpuAgainstReference:
    @pytest.mark.parametrize("t_len", [1, 15, 17, 100])
    @pytest.mark.parametrize("with_state", [False, True])
    def test_public_cpu_impl(self, t_len, with_state):
        xs, state = make_inputs(2, t_len, 2, 16, with_state=with_state, seed=t_len)
        assert_close_to_reference(
            lambda *a, state: wkv7(*a, state=state, impl="cpu"), xs, state, seed=t_len
        )

    @pytest.mark.parametrize("chunk", [4, 16])
    @pytest.mark.parametrize("t_len", [15, 17, 33])
    def test_several_chunks_and_padding(self, chunk, t_len):
        xs, state = make_inputs(3, t_len, 2, 8, with_state=True, seed=100 + t_len)
        assert_close_to_reference(
            lambda *a, state: wkv7_chunked(*a, state=state, chunk=chunk), xs, state, seed=7
        )

    def test_head_size_64(self):
        xs, state = make_inputs(1, 70, 2, 64, with_state=True, seed=3)
        assert_close_to_reference(
            lambda *a, state: wkv7(*a, state=state, impl="cpu"), xs, state, seed=3
        )

    def test_decays_at_the_clamp(self):
        """w at exp(-e^-0.5) everywhere: the strongest decay the model can produce."""
        xs, state = make_inputs(1, 64, 1, 16, with_state=True, seed=4)
        xs[1] = torch.full_like(xs[1], 0.5452)
        assert_close_to_reference(
            lambda *a, state: wkv7(*a, state=state, impl="cpu"), xs, state, seed=4
        )

    def test_bf16_inputs_give_bf16_output_and_fp32_state(self):
        xs, state = make_inputs(1, 20, 2, 8, with_state=True, seed=5, dtype=torch.bfloat16)
        y, s = wkv7(*xs, state=state, impl="cpu")
        assert y.dtype == torch.bfloat16 and s.dtype == torch.float32
        y_ref, s_ref = wkv7_reference(*xs, state=state)
        assert rel_err(y, y_ref) < 1e-2 and rel_err(s, s_ref) < 1e-4


HAS_CXX = bool(shutil.which("g++") or shutil.which("c++"))


@pytest.mark.skipif(not HAS_CXX, reason="no C++ compiler: impl='cpu' runs the chunked form")
class TestFusedKernel:
    """impl="cpu" runs the fused C++ kernel wherever a compiler exists; the tests above already
    compare it with the reference at N = 16, 32, 64. Here: its build, head sizes, threads."""

    def test_builds_and_is_what_cpu_runs(self):
        assert all(wkv_cpu.available(n) for n in wkv_cpu.HEAD_SIZES)
        assert not wkv_cpu.available(8)  # N = 8 (tests above) takes the chunked form

    @pytest.mark.parametrize(("bsz", "h", "n"), [(3, 1, 128), (1, 3, 32), (5, 1, 16)])
    def test_head_sizes_and_uneven_thread_split(self, bsz, h, n):
        xs, state = make_inputs(bsz, 45, h, n, with_state=True, seed=20 + n)
        assert_close_to_reference(
            lambda *a, state: wkv7(*a, state=state, impl="cpu"), xs, state, seed=n
        )

    def test_non_contiguous_inputs(self):
        xs, state = make_inputs(2, 37, 3, 16, with_state=True, seed=21)
        strided = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in xs]
        assert_close_to_reference(
            lambda *a, state: wkv7(*a, state=state, impl="cpu"), strided, state.mT.contiguous().mT,
            seed=21,
        )  # fmt: skip

    def test_same_as_chunked_fallback_forward(self):
        xs, state = make_inputs(2, 300, 2, 64, with_state=True, seed=22)
        y, s = wkv7(*xs, state=state, impl="cpu")
        y_c, s_c = wkv7_chunked(*xs, state=state)
        assert rel_err(y, y_c) < 1e-5 and rel_err(s, s_c) < 1e-5

    @pytest.mark.parametrize("width", [8, 16])  # AVX2-sized and AVX-512-sized vectors
    def test_fresh_build_into_an_empty_cache(self, width, tmp_path, monkeypatch):
        monkeypatch.setenv("GPT5OS_CACHE", str(tmp_path))
        monkeypatch.setattr(wkv_cpu, "_vector_width", lambda cpu_id: width)
        wkv_cpu._library.cache_clear()
        try:
            assert wkv_cpu.available(64)
            assert len(list(tmp_path.rglob("wkv7_cpu_*.so"))) == 1
            for n in (16, 64):
                xs, state = make_inputs(2, 40, 2, n, with_state=True, seed=24 + n)
                assert_close_to_reference(
                    lambda *a, state: wkv7(*a, state=state, impl="cpu"), xs, state, seed=n
                )
        finally:
            wkv_cpu._library.cache_clear()

    def test_without_a_compiler_cpu_falls_back_to_the_chunked_form(self, tmp_path, monkeypatch):
        monkeypatch.setenv("GPT5OS_CACHE", str(tmp_path))
        monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
        wkv_cpu._library.cache_clear()
        try:
            assert not wkv_cpu.available(64)
            xs, state = make_inputs(2, 33, 2, 64, with_state=True, seed=23)
            assert_close_to_reference(
                lambda *a, state: wkv7(*a, state=state, impl="cpu"), xs, state, seed=23
            )
        finally:
            wkv_cpu._library.cache_clear()


class TestChunkedFallback:
    """The pure-PyTorch chunked form at the head sizes the kernel usually takes."""

    @pytest.mark.parametrize("t_len", [1, 15, 17, 100])
    def test_against_reference(self, t_len):
        xs, state = make_inputs(2, t_len, 2, 16, with_state=True, seed=30 + t_len)
        assert_close_to_reference(
            lambda *a, state: wkv7_chunked(*a, state=state), xs, state, seed=t_len
        )

    def test_head_size_64(self):
        xs, state = make_inputs(1, 70, 2, 64, with_state=False, seed=31)
        assert_close_to_reference(
            lambda *a, state: wkv7_chunked(*a, state=state), xs, state, seed=31
        )


class TestContract:
    def test_state_continues_the_sequence(self):
        xs, _ = make_inputs(2, 40, 2, 8, with_state=False, seed=6)
        y_all, s_all = wkv7(*xs, impl="cpu")
        y1, s1 = wkv7(*(x[:, :23] for x in xs), impl="cpu")
        y2, s2 = wkv7(*(x[:, 23:] for x in xs), state=s1, impl="cpu")
        assert rel_err(torch.cat([y1, y2], 1), y_all) < 1e-5
        assert rel_err(s2, s_all) < 1e-5

    def test_empty_sequence_returns_the_state(self):
        xs, state = make_inputs(1, 0, 2, 8, with_state=True, seed=8)
        for impl in ("reference", "cpu"):
            y, s = wkv7(*xs, state=state, impl=impl)
            assert y.shape == (1, 0, 2, 8) and torch.equal(s, state)

    def test_decay_outside_the_clamp_is_refused_by_cpu(self):
        xs, _ = make_inputs(1, 40, 1, 8, with_state=False, seed=9)
        xs[1] = torch.full_like(xs[1], 1e-3)
        with pytest.raises(ValueError, match="impl='reference'"):
            wkv7(*xs, impl="cpu")
        wkv7(*xs, impl="reference")  # the reference has no such limit

    def test_shape_errors_are_clear(self):
        xs, _ = make_inputs(1, 5, 2, 8, with_state=False, seed=10)
        with pytest.raises(ValueError, match="k has shape"):
            wkv7(xs[0], xs[1], xs[2][:, :4], *xs[3:])
        with pytest.raises(ValueError, match="state must be"):
            wkv7(*xs, state=torch.zeros(1, 2, 8, 4))
        with pytest.raises(ValueError, match="unknown wkv7 impl"):
            wkv7(*xs, impl="tpu")


def test_inference_mode_then_autograd():
    """Nothing created under inference_mode (generation) may leak into a later training step."""
    xs, _ = make_inputs(1, 40, 1, 8, with_state=False, seed=12)
    with torch.inference_mode():
        wkv7(*xs, impl="cpu")
    xs = [x.requires_grad_() for x in xs]
    y, s = wkv7(*xs, impl="cpu")
    (y.sum() + s.sum()).backward()
    assert all(x.grad is not None for x in xs)


class TestHandWrittenBackward:
    """The cpu path's backward is written by hand: check what autograd used to give for free."""

    def test_non_contiguous_inputs_and_output_gradients(self):
        xs, state = make_inputs(2, 37, 3, 16, with_state=True, seed=13)
        # [B, H, T, N] tensors seen as [B, T, H, N]: every input and the state is a strided view
        strided = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in xs]
        assert not any(x.is_contiguous() for x in strided)
        state_t = state.mT.contiguous().mT
        assert_close_to_reference(
            lambda *a, state: wkv7_chunked(*a, state=state, chunk=8), strided, state_t, seed=13
        )

    def test_only_some_inputs_require_grad(self):
        xs, _ = make_inputs(1, 40, 2, 8, with_state=False, seed=14)
        r = xs[0].clone().requires_grad_()
        y, s = wkv7(r, *xs[1:], impl="cpu")
        (y.sum() + s.sum()).backward()
        r_ref = xs[0].clone().requires_grad_()
        y, s = wkv7_reference(r_ref, *xs[1:])
        (y.sum() + s.sum()).backward()
        assert rel_err(r.grad, r_ref.grad) < REL_TOL

    def test_bf16_gradients(self):
        xs, state = make_inputs(1, 40, 2, 8, with_state=True, seed=15, dtype=torch.bfloat16)
        got = run_with_grads(lambda *a, state: wkv7(*a, state=state, impl="cpu"), xs, state, 15)
        ref = run_with_grads(wkv7_reference, [x.float() for x in xs], state, 15)
        for g_got, g_ref in zip(got[2], ref[2], strict=True):
            assert rel_err(g_got, g_ref) < 2e-2
        xs = [x.detach().requires_grad_() for x in xs]
        y, _ = wkv7(*xs, impl="cpu")
        y.float().sum().backward()
        assert all(x.grad.dtype == torch.bfloat16 for x in xs)

    @pytest.mark.parametrize("t_len", [31, 32, 33, 200])
    def test_default_chunk_around_its_boundaries(self, t_len):
        xs, state = make_inputs(2, t_len, 1, 32, with_state=True, seed=16 + t_len)
        assert_close_to_reference(
            lambda *a, state: wkv7(*a, state=state, impl="cpu"), xs, state, seed=t_len
        )

    @pytest.mark.parametrize("n", [8, 16])  # chunked form, fused kernel
    def test_no_graph_under_no_grad(self, n):
        xs, _ = make_inputs(1, 40, 1, n, with_state=False, seed=17)
        xs = [x.requires_grad_() for x in xs]
        with torch.no_grad():
            y, s = wkv7(*xs, impl="cpu")
        assert not y.requires_grad and not s.requires_grad


@pytest.mark.parametrize(
    ("t_len", "expected"), [(1, 1), (15, 15), (32, 32), (33, 17), (100, 25), (1024, 32)]
)
def test_balanced_chunk_keeps_padding_small(t_len, expected):
    from gpt5os.model.wkv_chunked import balanced_chunk

    chunk = balanced_chunk(t_len, 32)
    assert (
        chunk == expected and chunk <= 32 and -(-t_len // chunk) * chunk - t_len < -(-t_len // 32)
    )


def test_reference_computes_in_float64_given_float64():
    """The CUDA tests compare fp32 outputs at 1e-5: the reference must not round to fp32."""
    xs, state = make_inputs(1, 20, 2, 16, with_state=True, seed=3, dtype=torch.float64)
    y, s = wkv7_reference(*xs, state=state.double())
    assert y.dtype == s.dtype == torch.float64
    y_mixed, s_mixed = wkv7_reference(*xs, state=state)  # fp32 state, float64 inputs
    assert y_mixed.dtype == s_mixed.dtype == torch.float64
    y_f, _ = wkv7_reference(*(x.float() for x in xs), state=state)
    assert 0 < (y - y_f.double()).abs().max() < 1e-5


@pytest.mark.parametrize(("impl", "n"), [("reference", 8), ("cpu", 8), ("cpu", 16)])
def test_gradients_match_finite_differences(impl, n):
    """Every gradient (r, w, k, v, a, b, state) against a central difference of the forward
    along a random direction: checks the reference's autograd and the cpu path's hand-written
    backwards (chunked form at N=8, fused kernel at N=16) against the math itself."""
    fn = (
        wkv7_reference
        if impl == "reference"
        else lambda *a, state: wkv7(*a, state=state, impl="cpu")
    )
    xs, state = make_inputs(1, 5, 2, n, with_state=True, seed=21)
    g = torch.Generator().manual_seed(22)
    leaves = [x.clone().requires_grad_() for x in [*xs, state]]
    y, s = fn(*leaves[:6], state=leaves[6])
    gy, gs = torch.randn(y.shape, generator=g), torch.randn(s.shape, generator=g)
    grads = torch.autograd.grad((y * gy).sum() + (s * gs).sum(), leaves)

    def loss(inputs: list[torch.Tensor]) -> float:
        with torch.no_grad():
            yy, ss = fn(*inputs[:6], state=inputs[6])
        return ((yy.double() * gy).sum() + (ss.double() * gs).sum()).item()

    h = 1e-2
    for i, (name, grad) in enumerate(zip(NAMES, grads, strict=True)):
        d = torch.randn(grad.shape, generator=g)
        if name == "w":  # decays stay <= 1 (the cpu path refuses others)
            d = d * (1 - xs[1])
        plus = [*xs, state]
        minus = [*xs, state]
        plus[i], minus[i] = plus[i] + h * d, plus[i] - h * d
        numeric = (loss(plus) - loss(minus)) / (2 * h)
        analytic = (grad * d).sum().item()
        assert abs(numeric - analytic) <= 1e-3 * max(abs(analytic), 1.0), (name, numeric, analytic)
