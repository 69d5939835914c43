"""RWKV-7 (x070): model, WKV kernels, tokenizer, checkpoints and generation.

Exports are loaded lazily so that `gpt5os.model.tokenizer` (used by the coordinator's data
pipeline) does not pull in torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module (relative to this package) that defines it
_EXPORTS: dict[str, str] = {
    "WorldTokenizer": "tokenizer",
    "load_tokenizer": "tokenizer",
    "ModelConfig": "config",
    "PRESETS": "config",
    "RWKV7": "rwkv7",
    "RWKV7State": "rwkv7",
    "wkv7": "wkv",
    "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint",
    "export_rwkv_pth": "rwkv_pth",
    "import_rwkv_pth": "rwkv_pth",
    "generate": "generation",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gpt5os.model' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS)
