"""Checkpoints: safetensors weights with the model config in the file's metadata.

One file holds everything needed to rebuild the model, and it is written atomically (temp file in
the same folder, fsync, rename, fsync of the folder): a crash mid-write leaves the previous
checkpoint intact, never a torn one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .config import ModelConfig
from .rwkv7 import RWKV7

FORMAT = "gpt5os-rwkv7"
FORMAT_VERSION = "1"


def tensors_sha256(tensors: Iterable[torch.Tensor]) -> str:
    """sha256 over the tensors' bytes in order: equal on two peers iff the tensors are.

    The one digest of θ_global: nodes (OuterState.digest), the keeper and run checkpoints
    (`params_sha256`) all hash fp32 CPU tensors in `model.named_parameters()` order with it.
    """
    h = hashlib.sha256()
    for t in tensors:
        # a byte view, not .tobytes(): no copy of each tensor (same digest)
        h.update(t.detach().cpu().contiguous().numpy().reshape(-1).view("u1"))
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, write: Any) -> None:
    """Call ``write(tmp_path)``, then fsync and rename it over `path`.

    Any failure removes the temp file and leaves `path` as it was. Writers report a full disk in
    their own types (safetensors: SafetensorError "I/O error: No space left on device"; torch.save:
    RuntimeError "unexpected pos"), so every failure of `write` is raised as OSError: callers
    handle one type.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        try:
            write(tmp)
        except OSError:
            raise
        except Exception as e:
            raise OSError(f"cannot write {path}: {e}{_full_disk_note(path.parent)}") from e
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a checkpoint is meant to be shared
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


FULL_DISK_BYTES = 1 << 20


def _full_disk_note(folder: Path) -> str:
    """torch.save says only "unexpected pos" when the disk is full: name the likely cause."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return ""
    return f" (the disk is full: {free:,} bytes free)" if free < FULL_DISK_BYTES else ""


def save_checkpoint(
    model: RWKV7, path: str | os.PathLike, metadata: dict[str, str] | None = None
) -> None:
    """Write `model`'s weights and config to `path` (safetensors), atomically.

    :param metadata: extra string key/values stored in the header (e.g. run id, outer round)
    """
    meta = dict(metadata or {})
    meta.update(
        format=FORMAT, format_version=FORMAT_VERSION, config=json.dumps(model.config.to_dict())
    )
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


def read_checkpoint_metadata(path: str | os.PathLike) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> RWKV7:
    """Rebuild the model saved by `save_checkpoint`.

    Raises FileNotFoundError for a missing file and ValueError for a file that is not a gpt5os
    checkpoint or whose tensors do not match its config.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        meta = read_checkpoint_metadata(path)
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from exc
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ValueError(f"{path} is not a gpt5os RWKV-7 checkpoint (metadata: {sorted(meta)})")
    config = ModelConfig.from_dict(json.loads(meta["config"]))
    with safe_open(str(path), framework="pt", device=str(map_location)) as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open API)
    return model_from_state_dict(config, tensors, source=str(path))


def model_from_state_dict(
    config: ModelConfig, tensors: dict[str, torch.Tensor], source: str = "state dict"
) -> RWKV7:
    """An RWKV7 holding exactly `tensors`; ValueError naming missing/extra/misshapen ones."""
    with torch.device("meta"):
        model = RWKV7(config, init_weights=False)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    bad = sorted(k for k in expected if k in tensors and tuple(tensors[k].shape) != expected[k])
    if missing or extra or bad:
        detail = [f"missing {missing[:5]}"] if missing else []
        detail += [f"unexpected {extra[:5]}"] if extra else []
        detail += [f"{k}: {tuple(tensors[k].shape)} != {expected[k]}" for k in bad[:5]]
        raise ValueError(f"{source} does not match its config: " + "; ".join(detail))
    model.load_state_dict(tensors, assign=True)
    return model
