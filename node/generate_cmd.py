"""`gpt5os-node generate`: load a checkpoint (ours or an official .pth) and stream a continuation."""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from pathlib import Path


class GenerateError(RuntimeError):
    pass


def load_any_checkpoint(path: Path, device: str):
    """A gpt5os safetensors checkpoint, or an official RWKV-7 .pth (by its suffix)."""
    from gpt5os.model import import_rwkv_pth, load_checkpoint

    if not path.is_file():
        raise GenerateError(f"checkpoint {path} not found")
    try:
        model = import_rwkv_pth(path) if path.suffix == ".pth" else load_checkpoint(path)
    except Exception as e:  # a foreign or truncated file: say which and why
        raise GenerateError(f"cannot load checkpoint {path}: {e}") from None
    return model.to(device)


def run_generate(
    checkpoint: Path,
    prompt: str,
    *,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    device: str,
) -> Iterator[str]:
    """Yield the continuation as text pieces while tokens are decoded (UTF-8 safe)."""
    from gpt5os.model import load_tokenizer
    from gpt5os.model.generation import generate_ids, relayout_for_decoding

    # loaded only to generate: nothing shares the weights' memory, so the faster layout is safe
    model = relayout_for_decoding(load_any_checkpoint(checkpoint, device))
    tokenizer = load_tokenizer()
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    try:
        ids = generate_ids(
            model,
            tokenizer.encode(prompt),
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
        )
        for token in ids:
            piece = decoder.decode(tokenizer.decode_bytes([token]))
            if piece:
                yield piece
    except ValueError as e:
        raise GenerateError(str(e)) from None
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail
