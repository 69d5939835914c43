"""Text generation: prefill the prompt through the parallel path, then decode in RNN mode.

RWKV's state is fixed-size, so each new token costs the same however long the text is: the
prompt is run once in parallel (chunked WKV), and every later token is one recurrent step from
the carried `RWKV7State`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

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


def _layers_step(
    x: Tensor,
    att_shift: Tensor,
    wkv: Tensor,
    ffn_shift: Tensor,
    n_head: int,
    head_size: int,
    ln_eps: float,
    lnx_eps: float,
    decay_scale: float,
    ln: list[Tensor],
    mix: list[Tensor],
    rkvo: list[Tensor],
    lora: list[Tensor],
    vecs: list[Tensor],
    ffn: list[Tensor],
) -> Tensor:
    """Every block for one token ``x [B, C]`` (after ln0); updates the state tensors in place.

    TorchScript-compiled (see `_scripted_layers_step`): one interpreter call per token instead
    of ~60 Python-dispatched ops per layer. Weights come pre-extracted, per layer ``i``:
    ``ln[4i:4i+4]`` ln1 w/b, ln2 w/b; ``mix[i]`` the six token-shift mixes ``[6, 1, C]``;
    ``rkvo[4i:4i+4]`` receptance/key/value/output as ``[in, out]``; ``lora[11i:11i+11]`` w0 w1
    w2 a0 a1 a2 v0 v1 v2 g1 g2 (the v's empty in layer 0); ``vecs[6i:6i+6]`` k_k, k_a, 1-k_a,
    r_k, ln_x w/b; ``ffn[3i:3i+3]`` x_k, key, value.
    """
    bsz, c = x.shape
    h, n = n_head, head_size
    bh = bsz * h
    v_first = x
    for i in range(len(mix)):
        xa = F.layer_norm(x, [c], ln[4 * i], ln[4 * i + 1], ln_eps)
        shift = att_shift[i]
        xm = torch.addcmul(xa, shift - xa, mix[i])  # [6, B, C]: the six token-shift mixes
        shift.copy_(xa)
        xr, xw, xk, xv, xa_, xg = xm[0], xm[1], xm[2], xm[3], xm[4], xm[5]
        lo = lora[11 * i : 11 * i + 11]
        r = xr @ rkvo[4 * i]
        k = xk @ rkvo[4 * i + 1]
        v = xv @ rkvo[4 * i + 2]
        w_raw = torch.addmm(lo[0], torch.tanh(xw @ lo[1]), lo[2])
        a = torch.sigmoid(torch.addmm(lo[3], xa_ @ lo[4], lo[5]))
        g = torch.sigmoid(xg @ lo[9]) @ lo[10]
        if i == 0:
            v_first = v
        else:  # value residual: v + (v_first - v) * gate
            v = torch.lerp(v, v_first, torch.sigmoid(torch.addmm(lo[6], xv @ lo[7], lo[8])))
        vec = vecs[6 * i : 6 * i + 6]
        kk = (k * vec[0]).view(bsz, h, n)
        kk = kk / torch.linalg.vector_norm(kk, dim=-1, keepdim=True).clamp_min(1e-12)
        k = k * torch.addcmul(vec[2], a, vec[1])  # k * (1 + (a - 1) * k_a)
        w = torch.exp(torch.sigmoid(w_raw.float()).mul_(-decay_scale))
        # S = S diag(w) + (S a) b^T + v k^T with a = -kk, b = kk * a;  y = S r  (in place, the
        # rank-1 updates as batched [N, 1] x [1, N] products: no [H, N, N] temporaries)
        s3 = wkv[i].view(bh, n, n)
        sa = torch.bmm(s3, kk.float().view(bh, n, 1))  # S kk (= -S a)
        s3.mul_(w.view(bh, 1, n))
        s3.baddbmm_(sa, (kk * a.view(bsz, h, n)).float().view(bh, 1, n), alpha=-1.0)
        s3.baddbmm_(v.float().view(bh, n, 1), k.float().view(bh, 1, n))
        y = torch.bmm(s3, r.float().view(bh, n, 1)).view(bsz, c).to(x.dtype)
        y = F.group_norm(y, h, vec[4], vec[5], lnx_eps)
        bonus = (r * k * vec[3]).view(bsz, h, n).sum(-1, keepdim=True) * v.view(bsz, h, n)
        x = torch.addmm(x, (y + bonus.view(bsz, c)) * g, rkvo[4 * i + 3])
        xf = F.layer_norm(x, [c], ln[4 * i + 2], ln[4 * i + 3], ln_eps)
        fshift = ffn_shift[i]
        kx = torch.addcmul(xf, fshift - xf, ffn[3 * i])
        fshift.copy_(xf)
        x = torch.addmm(x, torch.relu(kx @ ffn[3 * i + 1]).square_(), ffn[3 * i + 2])
    return x


@functools.cache
def _scripted_layers_step():
    """`_layers_step` compiled by TorchScript (~10 ms, once per process).

    TorchScript, not torch.compile: it compiles in milliseconds, where torch.compile takes
    minutes on a small CPU; torch 2.13 marks it deprecated (still supported, and the `rwkv`
    package relies on it too), so that warning is silenced here.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.script(_layers_step)


class RnnDecoder:
    """One-token RNN steps of a model: ``decoder.step(tokens, state) -> logits``.

    Holds references to the model's weights, pre-arranged for one-token steps (the six
    token-shift mixes stacked, `[in, out]` views of every matrix, the per-layer vectors flat),
    and runs all blocks in one TorchScript call. Build it after the weights are final (it copies
    the small mix and k_a vectors: in-place updates of those are not seen) and use it under
    ``torch.inference_mode()``; `relayout_for_decoding` first makes the matmuls faster.
    """

    def __init__(self, model: RWKV7) -> None:
        cfg = model.config
        c = cfg.n_embd
        self.n_head, self.head_size, self.n_embd = cfg.n_head, cfg.head_size, c
        blocks = list(model.blocks)
        ln0 = blocks[0].ln0

        def row(t: Tensor) -> Tensor:
            return t.detach().reshape(1, c)

        self.emb = model.emb.weight.detach()
        self.ln0 = (ln0.weight.detach(), ln0.bias.detach(), ln0.eps)
        self.ln_out = (model.ln_out.weight.detach(), model.ln_out.bias.detach(), model.ln_out.eps)
        self.head = model.head.weight.detach().t()
        self.ln_eps, self.lnx_eps = blocks[0].ln1.eps, blocks[0].att.ln_x.eps
        ln, mix, rkvo, lora, vecs, ffn = [], [], [], [], [], []
        empty = self.emb.new_empty(0)
        for b in blocks:
            att = b.att
            ln += [p.detach() for p in (b.ln1.weight, b.ln1.bias, b.ln2.weight, b.ln2.bias)]
            mixes = (att.x_r, att.x_w, att.x_k, att.x_v, att.x_a, att.x_g)
            mix.append(torch.cat([m.detach().reshape(1, 1, c) for m in mixes]))
            rkvo += [
                m.weight.detach().t() for m in (att.receptance, att.key, att.value, att.output)
            ]
            lora += [row(att.w0), att.w1.detach(), att.w2.detach()]
            lora += [row(att.a0), att.a1.detach(), att.a2.detach()]
            if att.layer_id > 0:
                lora += [row(att.v0), att.v1.detach(), att.v2.detach()]
            else:
                lora += [empty, empty, empty]
            lora += [att.g1.detach(), att.g2.detach()]
            vecs += [row(att.k_k), row(att.k_a), 1 - row(att.k_a), row(att.r_k)]
            vecs += [att.ln_x.weight.detach(), att.ln_x.bias.detach()]
            ffn += [row(b.ffn.x_k), b.ffn.key.weight.detach().t(), b.ffn.value.weight.detach().t()]
        self._weights = (ln, mix, rkvo, lora, vecs, ffn)
        self._step = _scripted_layers_step()

    def step(self, tokens: Tensor, state: RWKV7State) -> Tensor:
        """Logits ``[B, vocab]`` after ``tokens [B]``, updating `state` in place."""
        x = F.layer_norm(self.emb[tokens], (self.n_embd,), *self.ln0)
        x = self._step(
            x,
            state.att_shift,
            state.wkv,
            state.ffn_shift,
            self.n_head,
            self.head_size,
            self.ln_eps,
            self.lnx_eps,
            DECAY_SCALE,
            *self._weights,
        )
        return F.layer_norm(x, (self.n_embd,), *self.ln_out) @ self.head


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
