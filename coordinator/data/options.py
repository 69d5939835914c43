"""The options of a prepare: one value that decides, with the inputs, every output byte."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

from gpt5os.coordinator.data.filters import FilterConfig
from gpt5os.coordinator.data.neardup import NearDupConfig
from gpt5os.coordinator.run_spec import largest_val_tokens
from gpt5os.model.tokenizer import TOKENIZER_NAME

DEFAULT_VAL_TOKENS = largest_val_tokens()  # enough for every preset's default val batches


@dataclass(frozen=True, kw_only=True)
class PrepareOptions:
    """Everything besides the inputs that decides the output bytes; recorded in the manifest's
    report and in the resume state, so a rerun can tell whether it may continue. The worker
    count is not here: it does not change a byte."""

    shard_tokens: int = 65536
    val_fraction: float = 0.01
    val_tokens: int = DEFAULT_VAL_TOKENS
    seed: int = 0
    field: str = "text"
    max_documents: int | None = None
    max_bytes: int | None = None
    filters: FilterConfig = dataclasses.field(default_factory=FilterConfig)
    near_dup: NearDupConfig = dataclasses.field(default_factory=NearDupConfig)
    tokenizer: str = TOKENIZER_NAME

    def validate(self) -> None:
        if self.shard_tokens < 1:
            raise ValueError(f"shard_tokens must be >= 1, got {self.shard_tokens}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.val_tokens < 0 or self.seed < 0:
            raise ValueError("val_tokens and seed must be >= 0")
        for name in ("max_documents", "max_bytes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.near_dup.validate()

    def to_dict(self) -> dict:
        return {**asdict(self), "near_dup": self.near_dup.to_dict()}
