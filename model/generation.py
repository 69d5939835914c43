"""Text generation: prefill the prompt through the parallel path, then decode in RNN mode.

RWKV's state is fixed-size, so each new token costs the same however long the text is: the
prompt is run once in parallel (chunked WKV), and every later token is one recurrent step from
the carried `RWKV7State`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from . import decode_cpu
from .rwkv7 import DECAY_SCALE, RWKV7, RWKV7State

END_OF_DOCUMENT = 0


class Tokenizer(Protocol):
    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


def sample_logits(
    logits: Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> int:
    """One token id from `logits [vocab]`: greedy at temperature 0, else nucleus sampling."""
    if temperature == 0:
        return int(torch.argmax(logits))
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cum = torch.cumsum(sorted_probs, dim=-1)
        # keep the smallest prefix whose mass reaches top_p (always at least one token)
        keep = cum - sorted_probs < top_p
        sorted_probs = torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))
        choice = torch.multinomial(sorted_probs / sorted_probs.sum(), 1, generator=generator)
        return int(order[choice])
    return int(torch.multinomial(probs, 1, generator=generator))


@torch.no_grad()
def relayout_for_decoding(model: RWKV7) -> RWKV7:
    """Store every Linear weight as the transpose of a contiguous ``[in, out]`` matrix: the same
    values and the same Parameter objects, another memory layout. Returns the model.

    Why: decoding is one token at a time, so each weight is read once per token and the step is
    bound by memory bandwidth. A one-row matmul against an ``[out, in]`` row-major weight takes
    the dot-product route, which this CPU's BLAS streams at ~5-9 GB/s; against ``[in, out]`` rows
    it scales and adds rows at ~12 GB/s (measured 0.1b decode: 104 -> 75 ms per token). The
    `rwkv` package transposes its weights at load for the same reason. Prefill and training give
    the same results in either layout (PyTorch passes the strides to BLAS).

    Use it on a model loaded for inference: it swaps each weight's storage, so anything that
    shares memory with the old storage (views, flat buffers of an optimizer or averager) stops
    seeing the model's weights. Calling it twice is harmless.
    """
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            weight = module.weight
            if not weight.t().is_contiguous():
                weight.data = weight.data.t().contiguous().t()
    return model


def _kernel_mm(x: Tensor, w: Tensor) -> Tensor:
    return decode_cpu.matvec(x, w)


def _kernel_mm_add(acc: Tensor, x: Tensor, w: Tensor) -> Tensor:
    return decode_cpu.matvec(x, w, acc, accumulate=True)  # in place: acc is the residual


def _kernel_mm_bias(bias: Tensor, x: Tensor, w: Tensor) -> Tensor:
    return decode_cpu.matvec(x, w, bias.clone(), accumulate=True)


class _Layer(NamedTuple):
    """One block's tensors, arranged for one-token steps (field order is the unpacking order)."""

    ln1: tuple
    mix: Tensor  # the six token-shift mixes, [6, 1, C]
    rw: Tensor
    kw: Tensor
    vw: Tensor
    ow: Tensor
    w0: Tensor
    w1: Tensor
    w2: Tensor
    a0: Tensor
    a1: Tensor
    a2: Tensor
    vlora: tuple | None  # (v0, v1, v2) in layers >= 1
    g1: Tensor
    g2: Tensor
    k_k: Tensor
    k_a: Tensor
    one_minus_k_a: Tensor
    r_k: Tensor
    ln_x: tuple
    ln2: tuple
    ffn_mix: Tensor
    ffn_kw: Tensor
    ffn_vw: Tensor

    def kernel_operands(self) -> list[Tensor]:
        """Every 2-D tensor the decode kernels read directly (all must suit them)."""
        mats = [self.rw, self.kw, self.vw, self.ow, self.w0, self.w1, self.w2, self.a0, self.a1]
        mats += [self.a2, self.g1, self.g2, self.k_k, self.k_a, self.one_minus_k_a, self.r_k]
        mats += [self.ffn_mix, self.ffn_kw, self.ffn_vw]
        return mats + (list(self.vlora[1:]) if self.vlora is not None else [])


class RnnDecoder:
    """One-token RNN steps of a model: ``decoder.step(tokens, state) -> logits``.

    Decoding reads every weight once per token, so a step is bound by memory bandwidth, plus
    ~60 small ops per layer. The decoder pre-arranges the weights once (the six token-shift
    mixes stacked, ``[in, out]`` views of every matrix, each layer's tensors in one tuple: no
    nn.Module dispatch per token). For one sequence of fp32 on the CPU it runs the
    `decode_cpu` kernels: one-row matrix products 1.3-1.8x faster than BLAS, and the small ops
    between them fused into two calls per layer (`kernel` says whether it does); any other
    batch, device or dtype takes PyTorch ops. Residual adds are fused into the output products.

    Build it after the weights are final (the stacked mixes and ``1 - k_a`` are copies: later
    in-place updates of those are not seen) and run it under ``torch.inference_mode()``;
    `relayout_for_decoding` first makes every matrix ``[in, out]``-contiguous, which both the
    kernel and BLAS need to be fast.
    """

    def __init__(self, model: RWKV7) -> None:
        cfg = model.config
        c = cfg.n_embd
        self.n_head, self.head_size, self.n_embd = cfg.n_head, cfg.head_size, c
        blocks = list(model.blocks)
        ln0 = blocks[0].ln0

        def row(t: Tensor) -> Tensor:
            return t.detach().reshape(1, c)

        def d(t: Tensor) -> Tensor:
            return t.detach()

        self.emb = d(model.emb.weight)
        self.ln0 = (d(ln0.weight), d(ln0.bias), ln0.eps)
        self.ln_out = (d(model.ln_out.weight), d(model.ln_out.bias), model.ln_out.eps)
        self.head = d(model.head.weight).t()
        self.layers = []
        matrices = [self.head]  # every 2-D weight: all must suit the kernels (fp32, CPU, rows)
        for b in blocks:
            att, ffn = b.att, b.ffn
            mixes = (att.x_r, att.x_w, att.x_k, att.x_v, att.x_a, att.x_g)
            has_v = att.layer_id > 0
            self.layers.append(_Layer(
                (d(b.ln1.weight), d(b.ln1.bias), b.ln1.eps),
                torch.cat([m.detach().reshape(1, 1, c) for m in mixes]),  # [6, 1, C]
                *(d(m.weight).t() for m in (att.receptance, att.key, att.value, att.output)),
                row(att.w0), d(att.w1), d(att.w2), row(att.a0), d(att.a1), d(att.a2),
                (row(att.v0), d(att.v1), d(att.v2)) if has_v else None,
                d(att.g1), d(att.g2),
                row(att.k_k), row(att.k_a), 1 - row(att.k_a), row(att.r_k),
                (d(att.ln_x.weight), d(att.ln_x.bias), att.ln_x.eps),
                (d(b.ln2.weight), d(b.ln2.bias), b.ln2.eps),
                row(ffn.x_k), d(ffn.key.weight).t(), d(ffn.value.weight).t(),
            ))  # fmt: skip
            matrices += self.layers[-1].kernel_operands()
        self.kernel = all(decode_cpu.supports(m) for m in matrices) and decode_cpu.available()

    def step(self, tokens: Tensor, state: RWKV7State) -> Tensor:
        """Logits ``[B, vocab]`` after ``tokens [B]``, updating `state` in place."""
        x = F.layer_norm(self.emb[tokens], (self.n_embd,), *self.ln0[:2], self.ln0[2])
        if self.kernel and x.shape[0] == 1:
            x = self._blocks_kernel(x, state)
            return _kernel_mm(
                F.layer_norm(x, (self.n_embd,), *self.ln_out[:2], self.ln_out[2]), self.head
            )
        x = self._blocks_torch(x, state)
        return F.layer_norm(x, (self.n_embd,), *self.ln_out[:2], self.ln_out[2]) @ self.head

    def _blocks_kernel(self, x: Tensor, state: RWKV7State) -> Tensor:
        """Every block for one sequence, fp32 on the CPU: decode_cpu kernels, ~20 calls a layer."""
        mm, mm_add, mm_bias = _kernel_mm, _kernel_mm_add, _kernel_mm_bias
        h, n = self.n_head, self.head_size
        v_first = x
        for i, layer in enumerate(self.layers):
            (ln1, mix, rw, kw, vw, ow, w0, w1, w2, a0, a1, a2, vlora, g1, g2,
             k_k, k_a, _, r_k, ln_x, ln2, ffn_mix, ffn_kw, ffn_vw) = layer  # fmt: skip
            xm = decode_cpu.ln_shift_mix(x, *ln1, state.att_shift[i], mix)
            xr, xw, xk, xv, xa, xg = xm.unbind(0)
            r, k, v = mm(xr, rw), mm(xk, kw), mm(xv, vw)
            if vlora is None:
                v_first = v
            else:  # value residual: v + (v_first - v) * gate
                v = torch.lerp(
                    v, v_first, torch.sigmoid_(mm_bias(vlora[0], mm(xv, vlora[1]), vlora[2]))
                )
            u = decode_cpu.tmix_core(
                state.wkv[i].view(h, n, n),
                r,
                mm_bias(w0, torch.tanh_(mm(xw, w1)), w2),
                k,
                v,
                mm_bias(a0, mm(xa, a1), a2),
                mm(torch.sigmoid_(mm(xg, g1)), g2),
                k_k,
                k_a,
                r_k,
                *ln_x,
                DECAY_SCALE,
            )
            x = mm_add(x, u, ow)
            kx = decode_cpu.ln_shift_mix(x, *ln2, state.ffn_shift[i], ffn_mix)
            x = mm_add(x, torch.relu_(mm(kx, ffn_kw)).square_(), ffn_vw)
        return x

    def _blocks_torch(self, x: Tensor, state: RWKV7State) -> Tensor:
        """Every block, any batch, device and dtype: PyTorch ops (`TimeMix.forward` for one
        token, the state updated in place)."""
        bsz, c = x.shape
        h, n = self.n_head, self.head_size
        bh = bsz * h
        v_first = x
        for i, layer in enumerate(self.layers):
            (ln1, mix, rw, kw, vw, ow, w0, w1, w2, a0, a1, a2, vlora, g1, g2,
             k_k, k_a, one_minus_k_a, r_k, ln_x, ln2, ffn_mix, ffn_kw, ffn_vw) = layer  # fmt: skip
            xa = F.layer_norm(x, (c,), ln1[0], ln1[1], ln1[2])
            shift = state.att_shift[i]
            xm = torch.addcmul(xa, shift - xa, mix)  # the six token-shift mixes, [6, B, C]
            shift.copy_(xa)
            xr, xw, xk, xv, xa_, xg = xm.unbind(0)
            r, k, v = xr @ rw, xk @ kw, xv @ vw
            w_raw = torch.addmm(w0, torch.tanh(xw @ w1), w2)
            a = torch.sigmoid(torch.addmm(a0, xa_ @ a1, a2))  # in-context learning rate
            g = torch.sigmoid(xg @ g1) @ g2
            if vlora is None:
                v_first = v
            else:  # value residual: v + (v_first - v) * gate
                v = torch.lerp(
                    v, v_first, torch.sigmoid(torch.addmm(vlora[0], xv @ vlora[1], vlora[2]))
                )
            kk = (k * k_k).view(bsz, h, n)
            kk = kk / torch.linalg.vector_norm(kk, dim=-1, keepdim=True).clamp_min(1e-12)
            k = k * torch.addcmul(one_minus_k_a, a, k_a)  # k * (1 + (a - 1) * k_a)
            w = torch.exp(torch.sigmoid(w_raw.float()).mul_(-DECAY_SCALE))
            # S = S diag(w) + (S a) b^T + v k^T with a = -kk, b = kk * a;  y = S r  (in place,
            # the rank-1 updates as batched [N, 1] x [1, N] products: no [H, N, N] temporaries)
            s3 = state.wkv[i].view(bh, n, n)
            sa = torch.bmm(s3, kk.float().view(bh, n, 1))  # S kk (= -S a)
            s3.mul_(w.view(bh, 1, n))
            s3.baddbmm_(sa, (kk * a.view(bsz, h, n)).float().view(bh, 1, n), alpha=-1.0)
            s3.baddbmm_(v.float().view(bh, n, 1), k.float().view(bh, 1, n))
            y = torch.bmm(s3, r.float().view(bh, n, 1)).view(bsz, c).to(x.dtype)
            y = F.group_norm(y, h, ln_x[0], ln_x[1], ln_x[2])
            bonus = (r * k * r_k).view(bsz, h, n).sum(-1, keepdim=True) * v.view(bsz, h, n)
            x = torch.addmm(x, (y + bonus.view(bsz, c)) * g, ow)
            xf = F.layer_norm(x, (c,), ln2[0], ln2[1], ln2[2])
            fshift = state.ffn_shift[i]
            kx = torch.addcmul(xf, fshift - xf, ffn_mix)
            fshift.copy_(xf)
            x = torch.addmm(x, torch.relu(kx @ ffn_kw).square_(), ffn_vw)
        return x


def decode_step(model: RWKV7, tokens: Tensor, state: RWKV7State) -> Tensor:
    """One RNN step: logits ``[B, vocab]`` after ``tokens [B]``, updating `state` in place.

    The same math as ``model(tokens[:, None], state, return_state=True)`` (the tests check that
    they agree). A convenience that builds an `RnnDecoder` each call: for many steps, build one
    and call its `step` (what `generate_ids` does).
    """
    return RnnDecoder(model).step(tokens, state)


def _check_sampling(max_tokens: int, temperature: float, top_p: float) -> None:
    if max_tokens < 0:
        raise ValueError(f"max_tokens must be >= 0, got {max_tokens}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


@torch.inference_mode()
def generate_ids(
    model: RWKV7,
    prompt_ids: list[int],
    *,
    max_tokens: int = 200,
    temperature: float = 1.0,
    top_p: float = 0.85,
    seed: int | None = None,
    stop_at_eod: bool = True,
) -> Iterator[int]:
    """Yield up to `max_tokens` new token ids after `prompt_ids` (empty prompt: starts after
    the end-of-document token, as RWKV models are trained)."""
    _check_sampling(max_tokens, temperature, top_p)
    if max_tokens == 0:
        return
    vocab = model.config.vocab_size
    ids = list(prompt_ids) or [END_OF_DOCUMENT]
    if min(ids) < 0 or max(ids) >= vocab:
        raise ValueError(f"prompt token ids must be in [0, {vocab})")
    was_training = model.training
    model.eval()
    # decaying states reach denormal floats after a few hundred tokens, and CPU arithmetic on
    # denormals is ~10x slower: flush them to zero (process-wide; harmless for inference)
    torch.set_flush_denormal(True)
    try:
        device = model.head.weight.device
        generator = torch.Generator(device="cpu")
        if seed is None:
            generator.seed()
        else:
            generator.manual_seed(seed)
        logits, state = model(torch.tensor([ids], device=device), return_state=True, only_last=True)
        logits = logits[:, -1]
        decoder = RnnDecoder(model)
        for _ in range(max_tokens):
            token = sample_logits(logits[0].cpu(), temperature, top_p, generator)
            if stop_at_eod and token == END_OF_DOCUMENT:
                return
            yield token
            logits = decoder.step(torch.tensor([token], device=device), state)
    finally:
        model.train(was_training)


def generate(
    model: RWKV7,
    tokenizer: Tokenizer,
    prompt: str,
    *,
    max_tokens: int = 200,
    temperature: float = 1.0,
    top_p: float = 0.85,
    seed: int | None = None,
    stop_at_eod: bool = True,
    on_token: Callable[[int], None] | None = None,
) -> str:
    """Continue `prompt` with up to `max_tokens` tokens and return the new text (prompt
    excluded).

    :param temperature: 0 for greedy decoding
    :param top_p: nucleus sampling mass (1.0 disables it)
    :param seed: makes sampling reproducible
    :param stop_at_eod: stop at the end-of-document token (id 0)
    :param on_token: called with each new token id as it is produced (for streaming output)
    """
    out: list[int] = []
    for token in generate_ids(
        model,
        tokenizer.encode(prompt),
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        stop_at_eod=stop_at_eod,
    ):
        out.append(token)
        if on_token is not None:
            on_token(token)
    return tokenizer.decode(out)
