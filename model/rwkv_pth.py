"""Interop with the official RWKV-7 (x070) `.pth` layout: what BlinkDL/RWKV-LM trains and what
the `rwkv` package (and so ChatRWKV, RWKV-Runner, Ai00) loads.

Our parameter names are the official ones, so the conversion is only about the edges: official
files also carry layer 0's unused value-residual gate (`blocks.0.att.v0/v1/v2`), are usually
bf16, and describe their shape only through their tensors.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from .checkpoint import atomic_write, model_from_state_dict
from .config import ModelConfig
from .rwkv7 import RWKV7

_LAYER0_UNUSED = ("blocks.0.att.v0", "blocks.0.att.v1", "blocks.0.att.v2")


def export_rwkv_pth(
    model: RWKV7, path: str | os.PathLike, dtype: torch.dtype | None = torch.bfloat16
) -> None:
    """Write `model` as an official x070 `.pth` state dict, atomically.

    :param dtype: tensor dtype in the file; official checkpoints are bf16 (the default), pass
        ``torch.float32`` (or None: keep the model's dtype) for an exact copy
    """
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    c = model.config.n_embd
    rank = model.config.d_mv_lora
    ref = sd["blocks.0.att.a0"]
    # layer 0's value gate exists in official files but is never used: write neutral values
    sd["blocks.0.att.v0"] = torch.zeros_like(ref)
    sd["blocks.0.att.v1"] = torch.zeros(c, rank, dtype=ref.dtype)
    sd["blocks.0.att.v2"] = torch.zeros(rank, c, dtype=ref.dtype)
    if dtype is not None:
        sd = {k: v.to(dtype) for k, v in sd.items()}
    atomic_write(path, lambda tmp: torch.save(sd, tmp))


def config_from_rwkv_state_dict(sd: dict[str, torch.Tensor]) -> ModelConfig:
    """Read a model's shape from an official state dict's tensors."""
    try:
        vocab_size, n_embd = sd["emb.weight"].shape
        n_head, head_size = sd["blocks.0.att.r_k"].shape
        layers = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
        n_layer = max(layers) + 1
        att = "blocks.0.att."
        d_mv = sd["blocks.1.att.v1"].shape[1] if n_layer > 1 else sd[att + "v1"].shape[1]
        return ModelConfig(
            vocab_size=int(vocab_size),
            n_layer=n_layer,
            n_embd=int(n_embd),
            head_size=int(head_size),
            dim_ffn=int(sd["blocks.0.ffn.key.weight"].shape[0]),
            d_decay_lora=int(sd[att + "w1"].shape[1]),
            d_aaa_lora=int(sd[att + "a1"].shape[1]),
            d_mv_lora=int(d_mv),
            d_gate_lora=int(sd[att + "g1"].shape[1]),
        )
    except KeyError as exc:
        raise ValueError(f"not an RWKV-7 x070 state dict: missing {exc.args[0]}") from None


def import_rwkv_pth(path: str | os.PathLike, dtype: torch.dtype = torch.float32) -> RWKV7:
    """Load an official x070 `.pth` into an `RWKV7` (config inferred from tensor shapes).

    Raises FileNotFoundError, or ValueError for a file that is not an x070 checkpoint (for
    instance a DeepEmbed variant with `ffn.s_emb` tensors, which we do not implement).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:
        raise ValueError(f"{path} is not a readable PyTorch state dict: {exc}") from exc
    if not isinstance(sd, dict):
        raise ValueError(f"{path} does not hold a state dict")
    config = config_from_rwkv_state_dict(sd)
    tensors = {k: v.to(dtype) for k, v in sd.items() if k not in _LAYER0_UNUSED}
    return model_from_state_dict(config, tensors, source=str(path))
