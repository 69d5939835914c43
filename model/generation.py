"""Text generation: prefill the prompt through the parallel path, then decode in RNN mode.

RWKV's state is fixed-size, so each new token costs the same however long the text is: the
prompt is run once in parallel (chunked WKV), and every later token is one recurrent step from
the carried `RWKV7State`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

import torch
from torch import Tensor

from .rwkv7 import RWKV7

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
        for _ in range(max_tokens):
            token = sample_logits(logits[0, -1].cpu(), temperature, top_p, generator)
            if stop_at_eod and token == END_OF_DOCUMENT:
                return
            yield token
            logits, state = model(torch.tensor([[token]], device=device), state, return_state=True)
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
