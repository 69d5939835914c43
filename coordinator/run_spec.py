"""The run spec: one versioned value that tells every node what to train and how.

A run is a value, not a pile of flags: `RunSpec` is what `gpt5os-coordinator init` writes into
the run directory (as JSON), what the server hands to nodes in JoinResponse (as pb.RunSpec), and
what a maintainer changes (bumping `revision`). Presets give the model shape and the optimizer
settings that fit it; any field can be overridden.

No torch and no gRPC here: `to_pb` / `from_pb` import the generated messages lazily-cheaply
(protobuf only).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import re
from dataclasses import dataclass, field
from typing import Any

from gpt5os.proto import pb

SPEC_VERSION = 1
TOKENIZER = "rwkv-world-v20230424"
# How pseudo-gradients travel (node/codec.py, node/allreduce.py): "blockwise8" (the default),
# "blockwise4", "blockwise2" (0.5 and 0.25 bytes a value: what they cost in loss is in
# bench/RESULTS.md) and "float16", with error feedback, every member decoding the same quantized
# average; "none": exact float64 fixed point (8 bytes a value), for tests and as an option.
COMPRESSIONS = ("blockwise8", "blockwise4", "blockwise2", "float16", "none")
DEFAULT_COMPRESSION = "blockwise8"
# Validation: every node measures the loss of θ_global on the same first `val_batches` full
# batches (batch_size x seq_len tokens each) of the held-out split after each outer round.
DEFAULT_VAL_BATCHES = 8
# Run ids name DHT keys, averager prefixes and files: letters, digits, '.', '_' and '-', starting
# with a letter or digit (so never a hidden file, an option or a path), at most 64 characters.
RUN_ID_MAX = 64
_RUN_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._-]{{0,{RUN_ID_MAX - 1}}}")
# hivemind's averager refuses a '.' in its prefix (it joins key parts with '.'): DHT prefixes use
# only these characters.
_DHT_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
INNER_OPTIMIZERS = ("adamw", "adamw8bit")


def running_version() -> str:
    """The installed gpt5os version: the default `min_node_version` of a new run."""
    try:
        return importlib.metadata.version("gpt5os")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - source checkout only
        return "0.0.0"


@dataclass(kw_only=True)
class ModelSpec:
    preset: str
    vocab_size: int = 65536
    n_layer: int
    n_embd: int
    head_size: int = 64


@dataclass(kw_only=True)
class InnerOptimizerSpec:
    name: str = "adamw"
    lr: float
    min_lr: float
    weight_decay: float
    beta1: float
    beta2: float
    eps: float
    warmup_tokens: int
    decay_tokens: int
    grad_clip: float = 1.0


@dataclass(kw_only=True)
class OuterOptimizerSpec:
    """DiLoCo's outer Nesterov SGD (Douillard et al. 2023: lr 0.7, momentum 0.9), with its
    momentum warmed up over a run's first rounds (`outer_schedule`)."""

    lr: float = 0.7
    momentum: float = 0.9
    nesterov: bool = True
    # 0 (and a spec or peer from before the field): full momentum from round 1; new runs get
    # OUTER_WARMUP_ROUNDS from their preset
    warmup_rounds: int = 0


def outer_schedule(outer: OuterOptimizerSpec, round_number: int) -> tuple[float, float]:
    """(learning rate, momentum) of outer round `round_number` (1 for a run's first).

    The momentum ramps from 0 in round 1 to its full value in round warmup_rounds + 1:
    momentum × (r − 1) / warmup_rounds. A run from a random model makes its first pseudo-gradients
    far larger than later ones; full Nesterov momentum steps 1.9 × the first and then replays it
    in every later round (0.81 × in round 2), and θ_global overshoots (bench/RESULTS.md: the
    validation loss rose from 7.05 to 11.38 in round 2 of the default bench; bench/outer_sim.py
    compares settings). Round 1 then takes a plain SGD step, and its pseudo-gradient never enters
    the momentum. The learning rate stays the same.

    A pure function of the run spec and the round, so every member and the keeper step alike
    (their θ_global stays bitwise equal)."""
    w = outer.warmup_rounds
    if w <= 0 or round_number > w:
        return outer.lr, outer.momentum
    return outer.lr, outer.momentum * max(0, round_number - 1) / w


@dataclass(kw_only=True)
class RobustSpec:
    """How members bound each other's part of a round (node/robust.py). The same for every member
    of a run, so every reducer of a part applies the same bounds and every member the same claim
    bound (a node may not pick looser ones for itself)."""

    clip: float = 2.0  # a reducer clips each sender's part to clip × the group's median part norm
    weight_cap: float = 4.0  # ... and caps its weight at weight_cap × the median weight
    # a member's tokens count for at most this many rounds' worth (round_tokens): honest nodes
    # train a step or two past H; none trains two rounds' worth
    max_claim_rounds: int = 2
    send_factor: float = 10.0  # a node does not send a norm above this × the swarm's recent median


@dataclass(kw_only=True)
class RunSpec:
    spec_version: int = SPEC_VERSION
    run_id: str
    revision: int = 1
    model: ModelSpec
    tokenizer: str = TOKENIZER
    seq_len: int
    batch_size: int
    inner: InnerOptimizerSpec
    outer: OuterOptimizerSpec = field(default_factory=OuterOptimizerSpec)
    robust: RobustSpec = field(default_factory=RobustSpec)
    # DiLoCo's H: inner steps each node trains between two outer rounds, however many nodes there
    # are (a slower node joins the round when a peer has trained H steps, with what it trained).
    inner_steps: int
    # See COMPRESSIONS: every mode keeps every peer's θ_global bitwise identical; blockwise8 sends
    # ~1.001 bytes a value each way, float16 2, none 8.
    compression: str = DEFAULT_COMPRESSION
    seed: int = 0
    min_node_version: str = field(default_factory=running_version)
    matchmaking_time_s: float = 3.0
    averaging_timeout_s: float = 60.0
    val_batches: int = DEFAULT_VAL_BATCHES

    @property
    def round_tokens(self) -> int:
        """Tokens one node trains in a full round (H steps of batch_size x seq_len): the unit of
        a member's weight in the round's average."""
        return self.inner_steps * self.batch_size * self.seq_len

    @property
    def val_tokens(self) -> int:
        """Held-out tokens this run needs: see `val_tokens_needed`."""
        return val_tokens_needed(self.seq_len, self.batch_size, self.val_batches)

    def validate(self) -> None:
        """Raise ValueError with the field name and what would be accepted."""
        check_run_id(self.run_id)
        positive_ints = {
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "inner_steps": self.inner_steps,
            "val_batches": self.val_batches,
            "model.n_layer": self.model.n_layer,
            "model.n_embd": self.model.n_embd,
            "model.head_size": self.model.head_size,
            "model.vocab_size": self.model.vocab_size,
        }
        for name, value in positive_ints.items():
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.model.n_embd % self.model.head_size:
            raise ValueError("model.n_embd must be a multiple of model.head_size")
        if self.compression not in COMPRESSIONS:
            raise ValueError(f"compression must be one of {', '.join(COMPRESSIONS)}")
        if self.inner.name not in INNER_OPTIMIZERS:
            raise ValueError(f"inner optimizer must be one of {', '.join(INNER_OPTIMIZERS)}")
        if not (self.inner.lr > 0 and 0 <= self.inner.min_lr <= self.inner.lr):
            raise ValueError("need inner lr > 0 and 0 <= min_lr <= lr")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.matchmaking_time_s <= 0 or self.averaging_timeout_s <= 0:
            raise ValueError("matchmaking_time_s and averaging_timeout_s must be > 0")
        o = self.outer
        if not (o.lr > 0 and 0 <= o.momentum < 1):
            raise ValueError(f"need outer lr > 0 and 0 <= momentum < 1, got {o.lr}, {o.momentum}")
        if not isinstance(o.warmup_rounds, int) or o.warmup_rounds < 0:
            raise ValueError(
                f"outer.warmup_rounds must be an integer >= 0, got {o.warmup_rounds!r}"
            )
        r = self.robust
        if not (r.clip >= 1 and r.weight_cap >= 1 and r.send_factor > 1):
            raise ValueError(
                "need robust.clip >= 1, robust.weight_cap >= 1, robust.send_factor > 1"
            )
        if not isinstance(r.max_claim_rounds, int) or r.max_claim_rounds < 1:
            raise ValueError(
                f"robust.max_claim_rounds must be an integer >= 1, got {r.max_claim_rounds!r}"
            )

    # -- serialisation ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, sort_keys=True)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunSpec:
        raw = dict(raw)
        if raw.get("spec_version", SPEC_VERSION) != SPEC_VERSION:
            raise ValueError(
                f"run spec version {raw.get('spec_version')} is not {SPEC_VERSION}: "
                "this run was made by another gpt5os version"
            )
        legacy = raw.pop("tokens_per_round", None)  # run.json written before inner_steps
        if legacy is not None and "inner_steps" not in raw:
            raw["inner_steps"] = max(1, int(legacy) // (raw["seq_len"] * raw["batch_size"]))
        raw["model"] = ModelSpec(**raw["model"])
        raw["inner"] = InnerOptimizerSpec(**raw["inner"])
        raw["outer"] = OuterOptimizerSpec(**raw.get("outer", {}))
        raw["robust"] = RobustSpec(**raw.get("robust", {}))  # runs made before it: the defaults
        return cls(**raw)

    @classmethod
    def from_json(cls, text: str) -> RunSpec:
        return cls.from_dict(json.loads(text))

    def to_pb(self) -> pb.RunSpec:
        d = self.to_dict()
        return pb.RunSpec(
            **{k: v for k, v in d.items() if k not in NESTED},
            model=pb.ModelSpec(**d["model"]),
            inner=pb.InnerOptimizerSpec(**d["inner"]),
            outer=pb.OuterOptimizerSpec(**d["outer"]),
            robust=pb.RobustSpec(**d["robust"]),
        )

    @classmethod
    def from_pb(cls, msg: pb.RunSpec) -> RunSpec:
        def fields(m: Any, kind: type) -> dict[str, Any]:
            return {f.name: getattr(m, f.name) for f in dataclasses.fields(kind)}

        top = {
            f.name: getattr(msg, f.name) for f in dataclasses.fields(cls) if f.name not in NESTED
        }
        if not top["val_batches"]:  # a peer from before the field existed sends 0
            top["val_batches"] = DEFAULT_VAL_BATCHES
        spec = cls(
            **top,
            model=ModelSpec(**fields(msg.model, ModelSpec)),
            inner=InnerOptimizerSpec(**fields(msg.inner, InnerOptimizerSpec)),
            outer=OuterOptimizerSpec(**fields(msg.outer, OuterOptimizerSpec)),
            # a peer from before the field existed sends none: the defaults
            robust=RobustSpec(**fields(msg.robust, RobustSpec))
            if msg.HasField("robust")
            else RobustSpec(),
        )
        spec.validate()
        return spec


NESTED = ("model", "inner", "outer", "robust")  # RunSpec fields that are messages of their own


def val_tokens_needed(seq_len: int, batch_size: int, val_batches: int) -> int:
    """Tokens of the held-out stream that `val_batches` full batches read: each sequence takes
    seq_len inputs and the next token as its last target, so one token more than the windows."""
    return val_batches * batch_size * seq_len + 1


def check_run_id(run_id: object) -> None:
    """ValueError unless `run_id` is a valid run id (see _RUN_ID)."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise ValueError(
            f"run id {run_id!r} is not valid: use 1-{RUN_ID_MAX} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


def default_run_id(preset: str, suffix: str) -> str:
    """`<preset>-<suffix>`, e.g. `0.1b-3fa2c1d0`."""
    return f"{preset}-{suffix}"


def dht_prefix(run_id: str) -> str:
    """The run's hivemind key prefix: every DHT key and averager prefix of the run starts with it.

    hivemind forbids '.' in averager prefixes, so unsafe characters become '_' and a short hash of
    the exact run id keeps two run ids that differ only there apart (`0.1b-x` vs `0_1b-x`). Total
    on any string, so a run created before run ids were checked still serves."""
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:8]
    return f"gpt5os_{_DHT_UNSAFE.sub('_', run_id)}_{digest}"


# -- presets ---------------------------------------------------------------------------------

# (n_layer, n_embd, seq_len, batch_size, peak lr, min lr). Large presets follow the magnitudes of
# RWKV-LM's RWKV-7 training scripts (ctx 4096, lr 6e-4 for L12-D768 falling with width, final lr
# a tenth of the peak, beta2 0.99, weight decay 0.1); batch sizes are per node per inner step.
_PRESETS: dict[str, tuple[int, int, int, int, float, float]] = {
    "tiny": (2, 128, 128, 4, 2e-3, 2e-4),
    "0.1b": (12, 768, 4096, 8, 6e-4, 6e-5),
    "0.4b": (24, 1024, 4096, 8, 5e-4, 5e-5),
    "1.5b": (24, 2048, 4096, 4, 3e-4, 3e-5),
    "3b": (32, 2560, 4096, 4, 2e-4, 2e-5),
    "7b": (32, 4096, 4096, 2, 1.5e-4, 1.5e-5),
}
PRESETS = tuple(_PRESETS)
# DiLoCo's H (Douillard et al. 2023: 500) for the real presets; the tiny CPU preset rounds every
# few steps so a 2-core laptop sees several rounds in minutes.
INNER_STEPS = 500
# Rounds over which a new run's outer momentum warms up (outer_schedule); bench/outer_sim.py
OUTER_WARMUP_ROUNDS = 3
TINY_INNER_STEPS = 16


def preset_spec(preset: str, *, run_id: str) -> RunSpec:
    """The default RunSpec of a preset; raises ValueError naming the known presets."""
    if preset not in _PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    n_layer, n_embd, seq_len, batch, lr, min_lr = _PRESETS[preset]
    model = ModelSpec(preset=preset, n_layer=n_layer, n_embd=n_embd)
    if preset == "tiny":
        # The CPU demo/test preset: small rounds so a 2-core laptop sees several in minutes.
        inner = InnerOptimizerSpec(
            lr=lr,
            min_lr=min_lr,
            weight_decay=0.01,
            beta1=0.9,
            beta2=0.95,
            eps=1e-8,
            warmup_tokens=8192,
            decay_tokens=10_000_000,
        )
        return RunSpec(
            run_id=run_id,
            model=model,
            seq_len=seq_len,
            batch_size=batch,
            inner=inner,
            outer=OuterOptimizerSpec(warmup_rounds=OUTER_WARMUP_ROUNDS),
            inner_steps=TINY_INNER_STEPS,
        )
    tokens_per_step = seq_len * batch
    inner = InnerOptimizerSpec(
        lr=lr,
        min_lr=min_lr,
        weight_decay=0.1,
        beta1=0.9,
        beta2=0.99,
        eps=1e-18,
        warmup_tokens=tokens_per_step * 1000,
        decay_tokens=tokens_per_step * 1_000_000,
    )
    return RunSpec(
        run_id=run_id,
        model=model,
        seq_len=seq_len,
        batch_size=batch,
        inner=inner,
        outer=OuterOptimizerSpec(warmup_rounds=OUTER_WARMUP_ROUNDS),
        inner_steps=INNER_STEPS,
        matchmaking_time_s=15.0,
        averaging_timeout_s=600.0,
    )


def largest_val_tokens(val_batches: int = DEFAULT_VAL_BATCHES) -> int:
    """Held-out tokens that suffice for every preset's defaults: `data prepare`'s default, so
    data prepared without thinking of a preset can be used by any of them."""
    return max(
        val_tokens_needed(seq_len, batch, val_batches)
        for _l, _e, seq_len, batch, _lr, _min in _PRESETS.values()
    )
