"""Model configuration: the shape of an RWKV-7 (x070) network, as one serialisable value.

Torch-free on purpose: the coordinator reads presets and sizes without loading torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

VOCAB_SIZE = 65536  # the RWKV World tokenizer
HEAD_SIZE = 64


def _lora_dim(n_embd: int, factor: float) -> int:
    """The reference's suggested low-rank width: max(32, round(factor*sqrt(C)/32)*32).

    Python's round() (banker's rounding) is what the reference uses, so 0.1b gets w/a 64,
    v 32, g 128, the shapes of the official checkpoints.
    """
    return max(32, int(round((factor * math.sqrt(n_embd)) / 32) * 32))


@dataclass(kw_only=True)
class ModelConfig:
    """Shape of an RWKV-7 model.

    The low-rank widths (`d_decay_lora`, `d_aaa_lora`, `d_mv_lora`, `d_gate_lora`) and `dim_ffn`
    default to the reference's formulas; they are explicit fields so that an official checkpoint
    with other widths can be described exactly (``import_rwkv_pth`` reads them from its tensors).

    :param vocab_size: number of token ids (65,536 for the World tokenizer)
    :param n_layer: number of blocks
    :param n_embd: model width C; must be a multiple of ``head_size``
    :param head_size: WKV head size N (64 for every official RWKV-7)
    :param dim_ffn: channel-mix hidden width (default 4*C, as in x070)

    Example::

        cfg = ModelConfig.from_preset("tiny")
        cfg.n_head  # 2
    """

    vocab_size: int = VOCAB_SIZE
    n_layer: int
    n_embd: int
    head_size: int = HEAD_SIZE
    dim_ffn: int | None = None
    d_decay_lora: int | None = None
    d_aaa_lora: int | None = None
    d_mv_lora: int | None = None
    d_gate_lora: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes, kept in checkpoints

    def __post_init__(self) -> None:
        for name in ("vocab_size", "n_layer", "n_embd", "head_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.head_size != 0:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be a multiple of head_size ({self.head_size})"
            )
        c = self.n_embd
        if self.dim_ffn is None:
            self.dim_ffn = 4 * c
        if self.d_decay_lora is None:
            self.d_decay_lora = _lora_dim(c, 2.5)
        if self.d_aaa_lora is None:
            self.d_aaa_lora = _lora_dim(c, 2.5)
        if self.d_mv_lora is None:
            self.d_mv_lora = _lora_dim(c, 1.7)
        if self.d_gate_lora is None:
            self.d_gate_lora = _lora_dim(c, 5.0)

    @property
    def n_head(self) -> int:
        return self.n_embd // self.head_size

    @classmethod
    def from_preset(cls, name: str) -> ModelConfig:
        """A fresh copy of a named preset; ValueError naming the known presets otherwise."""
        try:
            preset = PRESETS[name]
        except KeyError:
            known = ", ".join(PRESETS)
            raise ValueError(f"unknown model preset {name!r}; known presets: {known}") from None
        return dataclasses.replace(preset, extra=dict(preset.extra))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of `to_dict`; unknown keys are an error (a newer file, or a corrupt one)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {unknown}; known: {sorted(known)}")
        return cls(**data)

    def num_params(self) -> int:
        """Exact parameter count of `RWKV7(self)` (computed from shapes, no torch needed)."""
        c, f, v = self.n_embd, self.dim_ffn, self.vocab_size
        assert f is not None and self.d_decay_lora and self.d_aaa_lora
        assert self.d_mv_lora and self.d_gate_lora
        per_layer = (
            4 * c  # ln1, ln2
            + 6 * c  # x_r .. x_g
            + c
            + 2 * c * self.d_decay_lora  # w0, w1, w2
            + c
            + 2 * c * self.d_aaa_lora  # a0, a1, a2
            + 2 * c * self.d_gate_lora  # g1, g2
            + 3 * c  # k_k, k_a, r_k
            + 4 * c * c  # receptance, key, value, output
            + 2 * c  # ln_x
            + c
            + 2 * c * f  # ffn.x_k, ffn.key, ffn.value
        )
        value_residual = (c + 2 * c * self.d_mv_lora) * (self.n_layer - 1)
        return 2 * v * c + 2 * c + 2 * c + per_layer * self.n_layer + value_residual


PRESETS: dict[str, ModelConfig] = {
    # tests and the CPU demo: trains at seq_len 128, batch 4 on one core
    "tiny": ModelConfig(n_layer=2, n_embd=128),
    "0.1b": ModelConfig(n_layer=12, n_embd=768),
    "0.4b": ModelConfig(n_layer=24, n_embd=1024),
    "1.5b": ModelConfig(n_layer=24, n_embd=2048),
    "3b": ModelConfig(n_layer=32, n_embd=2560),
    "7b": ModelConfig(n_layer=32, n_embd=4096),
}
