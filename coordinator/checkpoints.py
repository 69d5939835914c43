"""The run's checkpoints: θ_global, the outer momentum, the round and the swarm's token count.

    RUN_DIR/checkpoints/round-00000042.safetensors

One safetensors file per checkpoint. Parameters are stored under their model names
(`emb.weight`, `blocks.0.att.r_k`, ...), outer momentum under `outer_momentum.<name>`; the header's
metadata holds the round, swarm tokens, `params_sha256`, write time, run spec JSON, model config
and the parameter order. The keeper writes them; `export`, `init --from-checkpoint` and `status`
read them.

Why this shape:
- Listing reads only the JSON header (no torch): the coordinator's status path stays torch-free.
  torch is imported inside the functions that touch tensors.
- Writes are atomic (temp file, fsync, rename, fsync of the folder): a crash or a full disk
  mid-write leaves the previous checkpoints loadable and no torn file under a real name.
- `params_sha256` is `tensors_sha256` of θ_global in `model.named_parameters()` order, fp32,
  i.e. exactly what `OuterState.digest()` computes on every node, so a checkpoint can be checked
  against a round's certified digest.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpt5os.model.config import ModelConfig

if TYPE_CHECKING:
    from torch import Tensor

log = logging.getLogger(__name__)

CHECKPOINTS_SUBDIR = "checkpoints"
FORMAT = "gpt5os-run-checkpoint"
FORMAT_VERSION = "1"
MOMENTUM_PREFIX = "outer_momentum."
_NAME = re.compile(r"^round-(\d{8})\.safetensors$")
_TEMP_PREFIX = ".round-"  # model.checkpoint.atomic_write names its temp files ".<name>.*.tmp"
MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit


def checkpoint_name(round: int) -> str:
    return f"round-{round:08d}.safetensors"


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint's header says; reading it needs no torch."""

    round: int  # outer rounds applied to θ_global (0 = the run's initial state)
    tokens: int  # swarm tokens trained into θ_global (drives the LR schedule)
    params_sha256: str  # tensors_sha256 of θ_global, named_parameters() order, fp32
    path: Path
    written_at: float  # unix time

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "tokens": self.tokens,
            "params_sha256": self.params_sha256,
            "path": str(self.path),
            "written_at": self.written_at,
        }


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint's contents; `params` in `model.named_parameters()` order."""

    params: dict[str, Tensor]
    momentum: dict[str, Tensor]
    round: int
    tokens: int
    run_spec_json: str
    model_config: ModelConfig
    params_sha256: str


def read_safetensors_header(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """(tensor entries, metadata) of a safetensors file, checking that the file is complete.

    Raises ValueError for a file that is truncated, oversized or not safetensors.
    """
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is truncated (no safetensors header)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise ValueError(f"{path} is not a safetensors file (header of {n} bytes)")
        raw = f.read(n)
        size = os.fstat(f.fileno()).st_size
    if len(raw) < n:
        raise ValueError(f"{path} is truncated (header cut short)")
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not a safetensors file: {e}") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a safetensors file")
    meta = header.pop("__metadata__", None) or {}
    end = max((int(e["data_offsets"][1]) for e in header.values()), default=0)
    if size != 8 + n + end:
        raise ValueError(f"{path} is truncated or padded: {size} bytes, expected {8 + n + end}")
    return header, meta


def read_info(path: Path) -> CheckpointInfo:
    """A run checkpoint's header as CheckpointInfo; ValueError if it is not one or is torn."""
    _, meta = read_safetensors_header(path)
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gpt5os run checkpoint (format {meta.get('format')!r})")
    try:
        return CheckpointInfo(
            round=int(meta["round"]),
            tokens=int(meta["tokens"]),
            params_sha256=meta["params_sha256"],
            path=path,
            written_at=float(meta["written_at"]),
        )
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path} has a broken checkpoint header: {e}") from None


def canonical_param_names(config: ModelConfig) -> list[str]:
    """`RWKV7(config).named_parameters()` names in order, built on the meta device (no memory)."""
    import torch
    from gpt5os.model.rwkv7 import RWKV7

    with torch.device("meta"):
        model = RWKV7(config, init_weights=False)
    return [name for name, _ in model.named_parameters()]


class CheckpointDir:
    """RUN_DIR/checkpoints: write, list, pick and load the run's checkpoints.

    :param run_dir: the run directory (the subfolder is made on the first write)
    :param keep: how many of the newest checkpoints a write leaves (older ones are deleted)

    Example::

        ckpts = CheckpointDir(run_dir)
        info = ckpts.write(params=..., momentum=..., round=3, tokens=49152,
                           run_spec_json=spec.to_json(), model_config=cfg)
        loaded = ckpts.load(ckpts.latest())
    """

    def __init__(self, run_dir: Path, keep: int = 3) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        self.dir = Path(run_dir) / CHECKPOINTS_SUBDIR
        self.keep = keep

    # -- writing ---------------------------------------------------------------------------

    def write(
        self,
        *,
        params: dict[str, Tensor],
        momentum: dict[str, Tensor],
        round: int,
        tokens: int,
        run_spec_json: str,
        model_config: ModelConfig,
    ) -> CheckpointInfo:
        """Write round `round`'s checkpoint atomically and keep the newest `keep`.

        `params` must hold exactly the model's parameters (any order: they are stored and hashed
        in `named_parameters()` order); `momentum` the same names or nothing (zeros then).
        On OSError (ENOSPC, EIO, ...) the temp file is removed, older checkpoints stay, and the
        error propagates: the caller reports it.
        """
        import torch
        from gpt5os.model.checkpoint import atomic_write, tensors_sha256
        from safetensors.torch import save_file

        if round < 0 or tokens < 0:
            raise ValueError(f"round and tokens must be >= 0, got {round}, {tokens}")
        names = canonical_param_names(model_config)
        _check_names("params", params, names)
        if momentum:
            _check_names("momentum", momentum, names)
        p = {n: params[n].detach().to("cpu", torch.float32).contiguous() for n in names}
        m = {
            MOMENTUM_PREFIX + n: (
                momentum[n].detach().to("cpu", torch.float32).contiguous()
                if momentum
                else torch.zeros_like(p[n])
            )
            for n in names
        }
        for n in names:
            if m[MOMENTUM_PREFIX + n].shape != p[n].shape:
                raise ValueError(f"momentum {n} has shape {tuple(m[MOMENTUM_PREFIX + n].shape)}")
        digest = tensors_sha256(p[n] for n in names)
        momentum_digest = tensors_sha256(m[MOMENTUM_PREFIX + n] for n in names)
        written_at = time.time()
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "round": str(round),
            "tokens": str(tokens),
            "params_sha256": digest,
            "momentum_sha256": momentum_digest,
            "written_at": repr(written_at),
            "run_spec": run_spec_json,
            "config": json.dumps(model_config.to_dict()),
            "param_names": json.dumps(names),
        }
        path = self.dir / checkpoint_name(round)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temps()
        try:
            atomic_write(path, lambda tmp: save_file({**p, **m}, tmp, metadata=meta))
        except OSError as e:
            log.error("checkpoint of round %d not written (%s); older ones kept", round, e)
            raise
        info = CheckpointInfo(
            round=round, tokens=tokens, params_sha256=digest, path=path, written_at=written_at
        )
        log.info("checkpoint round %d written: %s sha256 %s", round, path, digest[:16])
        self._prune()
        return info

    def _remove_stale_temps(self) -> None:
        """Temp files a killed writer left behind (one writer per run dir: the keeper)."""
        for entry in self.dir.iterdir():
            if entry.name.startswith(_TEMP_PREFIX) and entry.name.endswith(".tmp"):
                log.info("removing a stale checkpoint temp file %s", entry)
                entry.unlink(missing_ok=True)

    def _prune(self) -> None:
        for old in self.list()[: -self.keep]:
            log.info("removing old checkpoint round %d (%s)", old.round, old.path)
            old.path.unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------------------------

    def list(self) -> list[CheckpointInfo]:
        """Intact checkpoints, oldest first; a torn or unreadable file is skipped and logged."""
        if not self.dir.is_dir():
            return []
        found = []
        for entry in self.dir.iterdir():
            if not _NAME.match(entry.name):
                continue
            try:
                found.append(read_info(entry))
            except (OSError, ValueError) as e:
                log.warning("skipping checkpoint %s: %s", entry, e)
        return sorted(found, key=lambda i: i.round)

    def latest(self) -> CheckpointInfo | None:
        found = self.list()
        return found[-1] if found else None

    def get(self, round: int) -> CheckpointInfo:
        found = self.list()
        for info in found:
            if info.round == round:
                return info
        have = ", ".join(str(i.round) for i in found) or "none"
        raise LookupError(f"no checkpoint of round {round} in {self.dir} (rounds here: {have})")

    def load(self, info: CheckpointInfo) -> LoadedCheckpoint:
        """Read a checkpoint and verify its params_sha256; ValueError naming what is wrong."""
        return load_file(info.path)


def load_file(path: Path) -> LoadedCheckpoint:
    """Load a run checkpoint from any path (CheckpointDir.load, export, init --from-checkpoint)."""
    from gpt5os.model.checkpoint import tensors_sha256
    from safetensors import SafetensorError
    from safetensors.torch import load_file as st_load

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    info = read_info(path)
    _, meta = read_safetensors_header(path)
    try:
        config = ModelConfig.from_dict(json.loads(meta["config"]))
        names = json.loads(meta["param_names"])
        run_spec_json = meta["run_spec"]
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} has a broken checkpoint header: {e}") from None
    try:
        tensors = st_load(str(path))
    except SafetensorError as e:
        raise ValueError(f"{path} is not a readable safetensors file: {e}") from None
    expected = canonical_param_names(config)
    if names != expected:
        raise ValueError(f"{path}: its parameters do not match its model config")
    try:
        params = {n: tensors[n] for n in names}
        momentum = {n: tensors[MOMENTUM_PREFIX + n] for n in names}
    except KeyError as e:
        raise ValueError(f"{path} lacks tensor {e.args[0]}") from None
    digest = tensors_sha256(params.values())
    if digest != info.params_sha256:
        raise ValueError(
            f"{path} is corrupt: its parameters hash to {digest[:16]}…, "
            f"the header says {info.params_sha256[:16]}…"
        )
    if tensors_sha256(momentum.values()) != meta.get("momentum_sha256"):
        raise ValueError(f"{path} is corrupt: its outer momentum does not match its sha256")
    return LoadedCheckpoint(
        params=params,
        momentum=momentum,
        round=info.round,
        tokens=info.tokens,
        run_spec_json=run_spec_json,
        model_config=config,
        params_sha256=digest,
    )


def _check_names(what: str, tensors: dict[str, Any], names: list[str]) -> None:
    missing = sorted(set(names) - set(tensors))
    extra = sorted(set(tensors) - set(names))
    if missing or extra:
        raise ValueError(
            f"{what} do not match the model config: missing {missing[:5]}, unexpected {extra[:5]}"
        )


class LatestCheckpoint:
    """The newest intact checkpoint, re-read only when the folder's listing changes.

    The server asks every tick (GetStatus and WatchSwarm then carry it); a folder of a few
    checkpoints costs one scandir per call, headers are read only after the keeper wrote or
    removed one.
    """

    def __init__(self, ckpts: CheckpointDir) -> None:
        self.ckpts = ckpts
        self.info: CheckpointInfo | None = None
        self._key: tuple[tuple[str, int, int], ...] | None = None

    def refresh(self) -> CheckpointInfo | None:
        try:
            key = self._listing()
        except OSError as e:  # unreadable folder: keep what we knew, say why once per change
            if self._key is not None:
                log.warning("cannot list %s: %s", self.ckpts.dir, e)
                self._key = None
            return self.info
        if key != self._key:
            self._key = key
            self.info = self.ckpts.latest() if key else None
            if self.info is not None:
                log.info("latest checkpoint: round %d (%s)", self.info.round, self.info.path.name)
        return self.info

    def _listing(self) -> tuple[tuple[str, int, int], ...]:
        if not self.ckpts.dir.is_dir():
            return ()
        found = []
        with os.scandir(self.ckpts.dir) as it:
            for entry in it:
                if not _NAME.match(entry.name):
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:  # pruned while we looked
                    continue
                found.append((entry.name, st.st_mtime_ns, st.st_size))
        return tuple(sorted(found))
