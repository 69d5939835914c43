"""Getting the run's model out (`export`) and a released model in (`init --from-checkpoint`).

Export reads a run checkpoint (coordinator/checkpoints.py), verifies its digest and writes either
our model safetensors (loads with `gpt5os.model.load_checkpoint`) or the official RWKV-7 `.pth`
(loads in the `rwkv` package, ChatRWKV, RWKV-Runner...). Import reads any of: our model
safetensors, a run checkpoint, or an official x070 `.pth`, whose tensor shapes decide the model.

torch is imported inside the functions: the CLI module that imports this one stays light.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gpt5os.coordinator.checkpoints import (
    FORMAT as RUN_CHECKPOINT_FORMAT,
)
from gpt5os.coordinator.checkpoints import (
    CheckpointDir,
    CheckpointInfo,
    load_file,
    read_safetensors_header,
)
from gpt5os.model.config import VOCAB_SIZE, ModelConfig

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

EXPORT_FORMATS = ("safetensors", "rwkv-pth")
PTH_DTYPES = ("fp32", "bf16")
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's zip container
_PICKLE_MAGIC = b"\x80"  # torch.save's legacy pickle format


def pick_checkpoint(run_dir: Path, round: int | None) -> CheckpointInfo:
    """The latest (or round `round`'s) intact checkpoint; LookupError saying what exists."""
    ckpts = CheckpointDir(run_dir)
    if round is not None:
        return ckpts.get(round)
    info = ckpts.latest()
    if info is None:
        raise LookupError(
            f"no checkpoint in {ckpts.dir} yet: the keeper writes one after the run's first "
            "rounds (or start the run with `init --from-checkpoint`)"
        )
    return info


def export_checkpoint(
    run_dir: Path, fmt: str, out: Path, *, round: int | None = None, pth_dtype: str = "fp32"
) -> CheckpointInfo:
    """Write the run's checkpoint as `fmt` to `out` (atomically); returns what was exported.

    :raises ValueError: unknown format/dtype, a checkpoint that fails its digest check
    :raises LookupError: no checkpoint (of that round)
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown --format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    if pth_dtype not in PTH_DTYPES:
        raise ValueError(f"unknown dtype {pth_dtype!r}: choose one of {', '.join(PTH_DTYPES)}")
    if Path(out).is_dir():
        raise ValueError(f"--out {out} is a directory: give a file path")
    import torch
    from gpt5os.model.checkpoint import model_from_state_dict, save_checkpoint
    from gpt5os.model.rwkv_pth import export_rwkv_pth

    info = pick_checkpoint(run_dir, round)
    loaded = CheckpointDir(run_dir).load(info)
    model = model_from_state_dict(loaded.model_config, loaded.params, source=str(info.path))
    if fmt == "safetensors":
        meta = {
            "outer_round": str(loaded.round),
            "swarm_tokens": str(loaded.tokens),
            "params_sha256": loaded.params_sha256,
            "run_spec": loaded.run_spec_json,
        }
        save_checkpoint(model, out, metadata=meta)
    else:
        dtype = torch.float32 if pth_dtype == "fp32" else torch.bfloat16
        export_rwkv_pth(model, out, dtype=dtype)
    log.info("exported round %d (%s) as %s to %s", info.round, info.path.name, fmt, out)
    return info


@dataclass(frozen=True)
class InitialModel:
    """A model read from a file for `init --from-checkpoint`: fp32 params by name."""

    config: ModelConfig
    params: dict[str, Tensor]
    kind: str  # "safetensors", "run-checkpoint" or "rwkv-pth"


def read_model_file(path: Path) -> InitialModel:
    """Read our safetensors, a run checkpoint or an official x070 `.pth` (format by content).

    :raises FileNotFoundError: no such file
    :raises ValueError: unreadable, truncated, or tensors that do not fit an RWKV-7 model
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC):
        from gpt5os.model.rwkv_pth import import_rwkv_pth

        model = import_rwkv_pth(path)
        params = {n: p.detach() for n, p in model.named_parameters()}
        return InitialModel(config=model.config, params=params, kind="rwkv-pth")
    _, meta = read_safetensors_header(path)  # ValueError for truncated / not safetensors
    if meta.get("format") == RUN_CHECKPOINT_FORMAT:
        loaded = load_file(path)
        return InitialModel(config=loaded.model_config, params=loaded.params, kind="run-checkpoint")
    from gpt5os.model.checkpoint import load_checkpoint

    model = load_checkpoint(path)
    params = {n: p.detach().float() for n, p in model.named_parameters()}
    return InitialModel(config=model.config, params=params, kind="safetensors")


def check_fits_run_spec(config: ModelConfig, source: Path) -> None:
    """A run spec describes a model by vocab, layers, width and head size; the low-rank and FFN
    widths follow the reference formulas. Refuse a model that this cannot describe."""
    if config.vocab_size != VOCAB_SIZE:
        raise ValueError(
            f"{source} has a vocabulary of {config.vocab_size} tokens; runs train on the RWKV "
            f"World tokenizer ({VOCAB_SIZE} tokens)"
        )
    described = ModelConfig(
        vocab_size=config.vocab_size,
        n_layer=config.n_layer,
        n_embd=config.n_embd,
        head_size=config.head_size,
    )
    if described.to_dict() != {**config.to_dict(), "extra": {}}:
        raise ValueError(
            f"{source} has non-standard FFN or low-rank widths (dim_ffn {config.dim_ffn}, "
            f"lora {config.d_decay_lora}/{config.d_aaa_lora}/{config.d_mv_lora}/"
            f"{config.d_gate_lora}): a run spec describes only the reference widths"
        )
