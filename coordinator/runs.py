"""Creating and opening a run directory.

A run directory holds:

    RUN_DIR/run.json             RunConfig: the RunSpec plus coordinator settings and data dir
    RUN_DIR/coordinator.sqlite   the store (leases, completions, nodes, rounds, events)
    RUN_DIR/data/                prepared data, for the embedded default run (any path works)
    RUN_DIR/checkpoints/         θ_global checkpoints (coordinator/checkpoints.py); a run made
                                 with `init --from-checkpoint` starts with round 0's there

`create_run` is what `gpt5os-coordinator init` calls; `load_run` what `serve` and `status` call.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt5os.coordinator import certify
from gpt5os.coordinator.admission import DEFAULT_MODE, check_mode
from gpt5os.coordinator.certify import Certified
from gpt5os.coordinator.checkpoints import CHECKPOINTS_SUBDIR, CheckpointDir, CheckpointInfo
from gpt5os.coordinator.manifest import Manifest, load_manifest
from gpt5os.coordinator.run_spec import (
    PRESETS,
    ModelSpec,
    RunSpec,
    check_run_id,
    default_run_id,
    preset_spec,
)
from gpt5os.coordinator.scheduler import ShardRef, ShardScheduler
from gpt5os.coordinator.store import DB_NAME, Store

RUN_FILE = "run.json"
CUSTOM_PRESET = "custom"  # ModelSpec.preset of a model whose shape is no preset's

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class RunConfig:
    """What the coordinator needs besides the spec; `data_dir` may be relative to the run dir."""

    spec: RunSpec
    data_dir: str
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 5.0
    max_leases_per_node: int = 4
    admission: str = DEFAULT_MODE  # open | invite-only (coordinator/admission.py)

    def validate(self) -> None:
        self.spec.validate()
        check_mode(self.admission)
        if not self.heartbeat_seconds > 0:
            raise ValueError("heartbeat_seconds must be > 0")
        if not self.lease_seconds > 2 * self.heartbeat_seconds:
            raise ValueError(
                "lease_seconds must be more than twice heartbeat_seconds, or leases expire "
                "between two heartbeats of a healthy node"
            )
        if self.max_leases_per_node < 1:
            raise ValueError("max_leases_per_node must be >= 1")

    def data_path(self, run_dir: Path) -> Path:
        return (Path(run_dir) / self.data_dir).resolve()

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["spec"] = self.spec.to_dict()
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        raw = json.loads(text)
        raw["spec"] = RunSpec.from_dict(raw["spec"])
        return cls(**raw)


_SETTINGS = {f.name for f in dataclasses.fields(RunConfig)} - {"spec", "data_dir"}
_NESTED = ("model", "inner", "outer")


def _apply_overrides(spec: RunSpec, overrides: dict[str, Any]) -> None:
    """`seq_len=...` sets a top-level field; `inner_lr=...` sets spec.inner.lr, and so on."""
    top = {f.name for f in dataclasses.fields(spec)}
    for key, value in overrides.items():
        if value is None:
            continue
        prefix, _, rest = key.partition("_")
        if key in top and key not in _NESTED:
            setattr(spec, key, value)
        elif prefix in _NESTED and rest in {
            f.name for f in dataclasses.fields(getattr(spec, prefix))
        }:
            setattr(getattr(spec, prefix), rest, value)
        else:
            raise ValueError(f"unknown run setting {key!r}")


def create_run(
    run_dir: Path, data_dir: Path, *, from_checkpoint: Path | None = None, **spec_overrides: Any
) -> RunSpec:
    """Create a run in `run_dir` from prepared data in `data_dir` and return its spec.

    :param from_checkpoint: start from this model (our safetensors, a run checkpoint or an
        official RWKV-7 `.pth`): its shape becomes the spec's model, its weights the run's round-0
        checkpoint; without `preset`, the preset of the same shape (else "tiny") gives the
        training settings
    :param spec_overrides: `preset` (default "tiny"), any RunSpec field (`seq_len=256`), nested
        fields as `inner_lr=1e-3` / `outer_momentum=0.8` / `model_n_layer=4`, and the coordinator
        settings `lease_seconds`, `heartbeat_seconds`, `max_leases_per_node`, `admission`.
    :raises FileExistsError: the directory already holds a run
    :raises FileNotFoundError / ValueError: no usable prepared data or checkpoint, a bad setting
    """
    run_dir = Path(run_dir)
    if (run_dir / RUN_FILE).exists() or (run_dir / DB_NAME).exists():
        raise FileExistsError(f"{run_dir} already holds a run: choose an empty directory")
    if (run_dir / CHECKPOINTS_SUBDIR).exists():
        raise FileExistsError(f"{run_dir} already holds checkpoints: choose an empty directory")
    overrides = dict(spec_overrides)
    initial = None
    if from_checkpoint is not None:
        from gpt5os.coordinator.model_files import check_fits_run_spec, read_model_file

        initial = read_model_file(Path(from_checkpoint))
        check_fits_run_spec(initial.config, Path(from_checkpoint))
        shaped = [k for k, v in overrides.items() if k.startswith("model_") and v is not None]
        if shaped:
            raise ValueError(f"--from-checkpoint decides the model's shape: drop {shaped}")
    shape_preset = _preset_of_shape(initial.config) if initial else None
    preset = overrides.pop("preset", None) or shape_preset or "tiny"
    run_id = overrides.pop("run_id", None)
    run_id = default_run_id(preset, secrets.token_hex(4)) if run_id is None else run_id
    check_run_id(run_id)  # before anything is written
    settings = {k: overrides.pop(k) for k in list(overrides) if k in _SETTINGS}
    settings = {k: v for k, v in settings.items() if v is not None}
    spec = preset_spec(preset, run_id=run_id)
    _apply_overrides(spec, overrides)
    if initial is not None:
        c = initial.config
        spec.model = ModelSpec(
            preset=shape_preset or CUSTOM_PRESET,
            vocab_size=c.vocab_size,
            n_layer=c.n_layer,
            n_embd=c.n_embd,
            head_size=c.head_size,
        )

    data_dir = Path(data_dir).resolve()
    manifest = load_manifest(data_dir)
    if not manifest.train:
        raise ValueError(f"{data_dir} has no training shards: prepare more data")
    run_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(run_dir, 0o700)  # keys, sessions and invites live here: owner only
    try:
        rel = os.path.relpath(data_dir, run_dir.resolve())
    except ValueError:  # another drive on Windows
        rel = str(data_dir)
    config = RunConfig(
        spec=spec, data_dir=rel if not rel.startswith("..") else str(data_dir), **settings
    )
    config.validate()
    check_validation_split(spec, manifest, data_dir)
    try:
        info = None
        if initial is not None:
            info = _write_round_zero(run_dir, spec, initial)
            log.info(
                "run %s starts from %s (%s): round-0 checkpoint %s, params sha256 %s",
                spec.run_id,
                from_checkpoint,
                initial.kind,
                info.path,
                info.params_sha256,
            )
        _init_store(run_dir, config, manifest, round_zero=info)
        tmp = run_dir / (RUN_FILE + ".tmp")
        tmp.write_text(config.to_json())
        os.replace(tmp, run_dir / RUN_FILE)
    except BaseException:
        # a half-made run would block `init` in this directory: take back what this call wrote
        shutil.rmtree(run_dir / CHECKPOINTS_SUBDIR, ignore_errors=True)
        for name in (DB_NAME, DB_NAME + "-wal", DB_NAME + "-shm", RUN_FILE + ".tmp"):
            (run_dir / name).unlink(missing_ok=True)
        raise
    return spec


def _preset_of_shape(config: Any) -> str | None:
    """The preset whose model has this shape, if any."""
    for name in PRESETS:
        m = preset_spec(name, run_id="probe").model
        shape = (m.vocab_size, m.n_layer, m.n_embd, m.head_size)
        if shape == (config.vocab_size, config.n_layer, config.n_embd, config.head_size):
            return name
    return None


def _write_round_zero(run_dir: Path, spec: RunSpec, initial: Any) -> CheckpointInfo:
    """The imported weights as the run's round-0 checkpoint: the keeper starts from it."""
    return CheckpointDir(run_dir).write(
        params=initial.params,
        momentum={},
        round=0,
        tokens=0,
        run_spec_json=spec.to_json(),
        model_config=initial.config,
    )


def check_validation_split(spec: RunSpec, manifest: Manifest, data_dir: Path) -> None:
    """Refuse a run whose held-out split cannot fill `val_batches` full batches at its seq_len:
    its nodes would report no validation loss at all (issue 13: seq_len 4096 on 2,048 tokens)."""
    have = sum(s.tokens for s in manifest.val)
    need = spec.val_tokens
    if have < need:
        raise ValueError(
            f"{data_dir} holds {have:,} held-out tokens; this run needs {need:,} "
            f"({spec.val_batches} validation batches of {spec.batch_size} x {spec.seq_len} "
            f"tokens, plus one): prepare the data again with "
            f"`gpt5os-coordinator data prepare --val-tokens {need} ...`, or lower --val-batches"
        )


def _init_store(
    run_dir: Path,
    config: RunConfig,
    manifest: Manifest,
    *,
    round_zero: CheckpointInfo | None = None,
) -> None:
    """The run's database; with `round_zero` (the checkpoint of `init --from-checkpoint`) its
    digest is round 0's certificate from the start, so no node ever starts from the seeded model
    (not even one that joins before the keeper's first report, or a run without a keeper)."""
    store = Store(run_dir / DB_NAME)
    try:
        sched = ShardScheduler.fresh(
            [shard_ref(s) for s in manifest.train],
            lease_seconds=config.lease_seconds,
            seed=config.spec.seed,
        )
        with store.tx():
            store.set_meta("run_id", config.spec.run_id)
            store.set_meta("epoch", 0)
            store.set_meta("paused", 0)
            store.set_meta("started_unix", time.time())
            store.put_shard_defs(
                dict(
                    shard_id=s.shard_id,
                    split=s.split,
                    tokens=s.tokens,
                    size_bytes=s.size_bytes,
                    sha256=s.sha256,
                    path=s.path,
                    ord=i,
                )
                for i, s in enumerate(manifest.shards)
            )
            store.put_shard_states(sched.states.values())
            if round_zero is not None:
                store.put_certified(
                    Certified(0, 0, round_zero.params_sha256, certify.CHECKPOINT, time.time()).row()
                )
    finally:
        store.close()


def shard_ref(s: Any) -> ShardRef:
    return ShardRef(shard_id=s.shard_id, tokens=s.tokens, size_bytes=s.size_bytes, sha256=s.sha256)


def load_run(run_dir: Path) -> RunConfig:
    """Read RUN_DIR/run.json; raises FileNotFoundError / ValueError with an actionable message."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: create a run with `gpt5os-coordinator init --dir {run_dir} ...`"
        )
    try:
        return RunConfig.from_json(path.read_text())
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not a valid run file: {e}") from e


def update_spec(run_dir: Path, changes: dict[str, str]) -> RunSpec:
    """Change the spec of an existing run and bump its revision (`gpt5os-coordinator spec`).

    Keys name fields as in `create_run` (`inner_lr`, `inner_steps`, `outer.momentum` also
    works); values are text converted to the field's type. A running server picks the new spec
    up within a second and tells nodes through HeartbeatResponse.spec_revision.
    """
    config = load_run(run_dir)
    spec = RunSpec.from_dict(config.spec.to_dict())
    typed: dict[str, Any] = {}
    for key, text in changes.items():
        key = key.replace(".", "_").replace("-", "_")
        prefix, _, rest = key.partition("_")
        holder = getattr(spec, prefix) if prefix in _NESTED and not hasattr(spec, key) else spec
        name = rest if holder is not spec else key
        if key in ("run_id", "spec_version", "revision") or not hasattr(holder, name):
            raise ValueError(f"unknown or fixed run setting {key!r}")
        current = getattr(holder, name)
        try:
            if isinstance(current, bool):
                if text.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(text)
                typed[key] = text.lower() in ("true", "1")
            else:
                typed[key] = type(current)(text)
        except ValueError:
            raise ValueError(f"{key}={text!r}: expected a {type(current).__name__}") from None
    _apply_overrides(spec, typed)
    spec.revision += 1
    new = RunConfig(**{**dataclasses.asdict(config), "spec": spec})
    new.validate()
    check_validation_split(spec, load_manifest(new.data_path(run_dir)), new.data_path(run_dir))
    tmp = Path(run_dir) / (RUN_FILE + ".tmp")
    tmp.write_text(new.to_json())
    os.replace(tmp, Path(run_dir) / RUN_FILE)
    return spec
