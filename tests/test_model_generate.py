"""Generation: prefill + RNN decode gives what full re-computation gives; sampling options."""

from __future__ import annotations

import pytest
import torch
from gpt5os.model import RWKV7, ModelConfig, decode_cpu, generate
from gpt5os.model.generation import (
    RnnDecoder,
    decode_step,
    generate_ids,
    relayout_for_decoding,
    sample_logits,
)


class ByteTokenizer:
    """A tokenizer whose ids are bytes + 1 (0 stays end-of-document): no vocabulary to load."""

    def encode(self, text: str) -> list[int]:
        return [b + 1 for b in text.encode()]

    def decode(self, ids: list[int]) -> str:
        return bytes(i - 1 for i in ids if i > 0).decode(errors="replace")


@pytest.fixture(scope="module")
def model() -> RWKV7:
    torch.manual_seed(0)
    m = RWKV7(ModelConfig(vocab_size=257, n_layer=2, n_embd=64, head_size=32))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.3)
    return m


def test_greedy_decoding_matches_full_recomputation(model):
    prompt = [5, 9, 33, 2, 70]
    ids = list(generate_ids(model, prompt, max_tokens=12, temperature=0, stop_at_eod=False))
    assert len(ids) == 12
    seq = list(prompt)
    with torch.no_grad():
        for token in ids:  # each greedy token is the argmax of a full parallel forward
            assert int(model(torch.tensor([seq]))[0, -1].argmax()) == token
            seq.append(token)


def rel_err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return ((x - ref).norm() / ref.norm()).item()


def test_decode_step_matches_the_model_forward_step(model):
    """decode_step (in-place state, one-token math) == model(token, state) for several steps."""
    model.eval()
    g = torch.Generator().manual_seed(3)
    prompt = torch.randint(1, 257, (2, 7), generator=g)
    with torch.inference_mode():
        _, ref_state = model(prompt, return_state=True)
        state = ref_state.clone()
        for tokens in torch.randint(1, 257, (5, 2), generator=g):
            ref_logits, ref_state = model(tokens[:, None], ref_state, return_state=True)
            logits = decode_step(model, tokens, state)
            assert rel_err(logits, ref_logits[:, 0]) < 1e-5
            got_ref = zip(
                (state.att_shift, state.wkv, state.ffn_shift),
                (ref_state.att_shift, ref_state.wkv, ref_state.ffn_shift),
                strict=True,
            )
            for got, ref in got_ref:
                assert rel_err(got, ref) < 1e-5


needs_kernel = pytest.mark.skipif(not decode_cpu.available(), reason="no C++ compiler here")


@needs_kernel
@pytest.mark.parametrize("threads", [1, 2])
def test_matvec_kernel_matches_torch(threads):
    """Odd sizes (rows not a multiple of 4, columns past one 1024 block and not a multiple of
    16), a strided matrix, accumulation, and a matrix big enough to be split over threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(5)
        for k, n in ((5, 7), (67, 1030), (770, 1500)):
            w = torch.randn(k, n + 3, generator=g)[:, 2 : n + 2]  # row stride n + 3
            x = torch.randn(1, k, generator=g)
            assert decode_cpu.supports(w)
            assert rel_err(decode_cpu.matvec(x, w), x @ w) < 1e-6
            acc = torch.randn(1, n, generator=g)
            ref = acc + x @ w
            assert decode_cpu.matvec(x.view(k), w, acc, accumulate=True) is acc
            assert rel_err(acc, ref) < 1e-6
    finally:
        torch.set_num_threads(before)


@needs_kernel
def test_matvec_kernel_refuses_bad_shapes():
    w = torch.randn(8, 4)
    with pytest.raises(ValueError, match="8 contiguous fp32"):
        decode_cpu.matvec(torch.randn(1, 7), w)
    with pytest.raises(ValueError, match="4 contiguous"):
        decode_cpu.matvec(torch.randn(1, 8), w, torch.empty(1, 5))
    assert not decode_cpu.supports(w.t()) and not decode_cpu.supports(w.double())
    vec = torch.zeros(1, 8)
    with pytest.raises(ValueError, match="8 contiguous fp32"):
        decode_cpu.ln_shift_mix(vec, vec, vec, 1e-5, torch.zeros(1, 7), torch.zeros(6, 8))
    vecs = [vec] * 11
    with pytest.raises(ValueError, match="N <= 256"):
        decode_cpu.tmix_core(torch.zeros(2, 4, 3), *vecs, 1e-3, 0.6)
    with pytest.raises(ValueError, match="8 contiguous fp32"):
        decode_cpu.tmix_core(torch.zeros(2, 4, 4), *vecs[:10], torch.zeros(16)[::2], 1e-3, 0.6)


def test_decoder_kernel_path_matches_the_model_forward_step():
    """One sequence with [in, out] weights: the path generate_ids takes on a CPU (the matvec
    kernel where it builds) gives the parallel forward's logits and states."""
    torch.manual_seed(2)
    m = RWKV7(ModelConfig(vocab_size=1100, n_layer=2, n_embd=64, head_size=32)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    relayout_for_decoding(m)
    decoder = RnnDecoder(m)
    assert decoder.kernel == decode_cpu.available()
    g = torch.Generator().manual_seed(4)
    with torch.inference_mode():
        _, ref_state = m(torch.randint(0, 1100, (1, 6), generator=g), return_state=True)
        state = ref_state.clone()
        for token in torch.randint(0, 1100, (4, 1), generator=g):
            ref_logits, ref_state = m(token[:, None], ref_state, return_state=True)
            assert rel_err(decoder.step(token, state), ref_logits[:, 0]) < 1e-5
            assert rel_err(state.wkv, ref_state.wkv) < 1e-5
            assert rel_err(state.ffn_shift, ref_state.ffn_shift) < 1e-5


def test_relayout_for_decoding_keeps_values_and_parameters():
    torch.manual_seed(1)
    m = RWKV7(ModelConfig(vocab_size=257, n_layer=2, n_embd=64, head_size=32)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    idx = torch.randint(0, 257, (1, 9))
    params = list(m.parameters())
    with torch.no_grad():
        before = m(idx)
        assert relayout_for_decoding(m) is m and relayout_for_decoding(m) is m  # idempotent
        after = m(idx)
    assert list(m.parameters()) == params and all(
        p.t().is_contiguous() for p in (m.head.weight, m.blocks[1].ffn.value.weight)
    )
    assert rel_err(after, before) < 1e-5
    ids = list(generate_ids(m, [3, 4], max_tokens=6, temperature=0, stop_at_eod=False))
    seq = [3, 4]
    with torch.no_grad():
        for token in ids:
            assert int(m(torch.tensor([seq]))[0, -1].argmax()) == token
            seq.append(token)


def test_seed_makes_sampling_reproducible(model):
    tok = ByteTokenizer()
    kw = dict(max_tokens=20, temperature=1.0, top_p=0.9, stop_at_eod=False)
    a = generate(model, tok, "hello", seed=7, **kw)
    assert a == generate(model, tok, "hello", seed=7, **kw)
    streamed = []
    generate(model, tok, "hello", seed=7, on_token=streamed.append, **kw)
    assert tok.decode(streamed) == a and len(streamed) == 20


def test_model_mode_is_restored(model):
    model.train()
    list(generate_ids(model, [1], max_tokens=2, temperature=0))
    assert model.training


def test_top_p_keeps_the_nucleus():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    g = torch.Generator().manual_seed(0)
    draws = {sample_logits(logits, 1.0, 0.7, g) for _ in range(300)}
    assert draws == {0, 1}  # 0.5 + 0.3 reaches 0.7; tokens 2, 3 never drawn
    assert {sample_logits(logits, 1.0, 1e-6, g) for _ in range(20)} == {0}
    assert sample_logits(logits, 0.0, 1.0, g) == 0


def test_bad_arguments(model):
    for kw in (dict(max_tokens=-1), dict(temperature=-0.1), dict(top_p=0.0), dict(top_p=1.5)):
        with pytest.raises(ValueError):
            list(generate_ids(model, [1], **kw))
    with pytest.raises(ValueError, match="token ids"):
        list(generate_ids(model, [999], max_tokens=1))
