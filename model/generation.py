"""Text generation: prefill the prompt through the parallel path, then decode in RNN mode.

RWKV's state is fixed-size, so each new token costs the same however long the text is: the
prompt is run once in parallel (chunked WKV), and every later token is one recurrent step from
the carried `RWKV7State`.
"""

from __future__ import annotations

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


def decode_step(model: RWKV7, tokens: Tensor, state: RWKV7State) -> Tensor:
    """One RNN step: logits ``[B, vocab]`` after ``tokens [B]``, updating `state` in place.

    The same math as ``model(tokens[:, None], state, return_state=True)`` (the tests check that
    they agree), written for one step: no token-shift concatenation, no new state stacked
    every token (the WKV state alone is 12 x 48 KB for 0.1b), the six token-shift mixes in one
    op. Run it under ``torch.inference_mode()``.
    """
    x = model.emb(tokens)
    v_first = None
    for i, block in enumerate(model.blocks):
        if i == 0:
            x = block.ln0(x)
        xa = block.ln1(x)
        att = block.att
        mixes = torch.cat([att.x_r, att.x_w, att.x_k, att.x_v, att.x_a, att.x_g]).view(6, 1, -1)
        xr, xw, xk, xv, xa_, xg = torch.addcmul(xa, state.att_shift[i] - xa, mixes).unbind(0)
        state.att_shift[i].copy_(xa)
        out, v_first = _time_mix_step(att, xr, xw, xk, xv, xa_, xg, v_first, state.wkv[i])
        x = x + out
        xf = block.ln2(x)
        ffn = block.ffn
        k = torch.addcmul(xf, state.ffn_shift[i] - xf, ffn.x_k.view(1, -1))
        state.ffn_shift[i].copy_(xf)
        x = x + ffn.value(torch.relu(ffn.key(k)).square_())
    return model.head(model.ln_out(x))


def _time_mix_step(att, xr, xw, xk, xv, xa, xg, v_first, s: Tensor) -> tuple[Tensor, Tensor]:
    """`TimeMix.forward` for one token ``[B, C]``; updates the WKV state `s [B, H, N, N]`."""
    bsz, c = xr.shape
    h, n = att.n_head, att.head_size
    r = att.receptance(xr)
    w_raw = att.w0.view(1, c) + torch.tanh(xw @ att.w1) @ att.w2
    k = att.key(xk)
    v = att.value(xv)
    if att.layer_id == 0:
        v_first = v
    else:
        v = v + (v_first - v) * torch.sigmoid(att.v0.view(1, c) + (xv @ att.v1) @ att.v2)
    a = torch.sigmoid(att.a0.view(1, c) + (xa @ att.a1) @ att.a2)
    g = torch.sigmoid(xg @ att.g1) @ att.g2
    kk = F.normalize((k * att.k_k.view(1, c)).view(bsz, h, n), dim=-1, p=2.0)
    k = k * (1 + (a - 1) * att.k_a.view(1, c))
    w = torch.exp(-DECAY_SCALE * torch.sigmoid(w_raw.float())).view(bsz * h, 1, n)
    # S = S diag(w) + (S a) b^T + v k^T with a = -kk, b = kk * a;  y = S r  (in place, the
    # rank-1 updates as batched [N, 1] x [1, N] products: no [H, N, N] temporaries)
    s3 = s.view(bsz * h, n, n)
    sa = s3 @ kk.float().view(bsz * h, n, 1)  # S kk (= -S a)
    kka = (kk * a.view(bsz, h, n)).float().view(bsz * h, 1, n)
    s3.mul_(w).baddbmm_(sa, kka, alpha=-1.0)
    s3.baddbmm_(v.float().view(bsz * h, n, 1), k.float().view(bsz * h, 1, n))
    y = (s3 @ r.float().view(bsz * h, n, 1)).view(bsz, c).to(xr.dtype)
    y = F.group_norm(y, h, att.ln_x.weight, att.ln_x.bias, att.ln_x.eps)
    bonus = (r * k * att.r_k.view(1, c)).view(bsz, h, n).sum(-1, keepdim=True) * v.view(bsz, h, n)
    return att.output((y + bonus.view(bsz, c)) * g), v_first


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
        for _ in range(max_tokens):
            token = sample_logits(logits[0].cpu(), temperature, top_p, generator)
            if stop_at_eod and token == END_OF_DOCUMENT:
                return
            yield token
            logits = decode_step(model, torch.tensor([token], device=device), state)
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
