"""The DiLoCo trainer: inner AdamW steps on leased shards, outer rounds averaged over hivemind.

The loop is short on purpose; every side job (data, heartbeats, averaging, reports) is a call to
the object that owns it.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

import torch
from gpt5os.model import RWKV7, ModelConfig
from gpt5os.proto import pb

from .config import NodeConfig
from .coordinator_client import CoordinatorClient, CoordinatorError, Session
from .diloco import OuterState
from .group_average import GroupAverage, GroupAverageConfig
from .heartbeat import Heartbeat
from .progress import NodeProgress
from .reconcile import ClaimBoard, RoundClaim, better_claim
from .schedule import inner_lr
from .shard_feed import Batch, ShardFeed
from .swarm import (
    Membership,
    PseudoGradientAverager,
    make_tracker,
    start_dht,
    swarm_prefix,
    visible_maddrs,
)
from .validation import Validator

log = logging.getLogger("gpt5os.node")

STATE_DOWNLOAD_TIMEOUT_S = 60.0
RECONCILE_EVERY_S = 3.0


def resolve_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(choice)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU here")
    return device


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return "cpu"


def model_config(spec: pb.ModelSpec) -> ModelConfig:
    return ModelConfig(
        vocab_size=spec.vocab_size,
        n_layer=spec.n_layer,
        n_embd=spec.n_embd,
        head_size=spec.head_size,
    )


def build_inner_optimizer(
    model: torch.nn.Module, spec: pb.InnerOptimizerSpec
) -> torch.optim.Optimizer:
    kwargs = dict(
        lr=spec.lr,
        betas=(spec.beta1 or 0.9, spec.beta2 or 0.95),
        eps=spec.eps or 1e-8,
        weight_decay=spec.weight_decay,
    )
    if spec.name == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(model.parameters(), **kwargs)
    if spec.name not in ("", "adamw"):
        raise ValueError(f"unknown inner optimizer {spec.name!r} in the run spec")
    return torch.optim.AdamW(model.parameters(), **kwargs)


def initial_model(spec: pb.RunSpec) -> RWKV7:
    """The run's initial θ, bitwise the same on every node: built on the CPU from the spec's seed
    with one thread (multi-threaded LAPACK in the orthogonal init gives thread-dependent bits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(spec.seed)
        return RWKV7(model_config(spec.model))
    finally:
        torch.set_num_threads(threads)


def parameter_numels(spec: pb.RunSpec) -> list[int]:
    """The sizes of the model's parameters in order, without allocating them (meta device)."""
    with torch.device("meta"):
        return [p.numel() for p in RWKV7(model_config(spec.model)).parameters()]


@dataclass
class RoundOutcome:
    round: int
    peer_node_ids: list[str]
    tokens: int
    group_tokens: int
    mean_loss: float
    duration_s: float
    averaging_s: float
    params_sha256: str
    val_loss: float | None = None
    averaging_attempts: int = 1


class Trainer:
    """One volunteer's training: owns the model, its DiLoCo state and its place in the swarm."""

    def __init__(
        self, config: NodeConfig, client: CoordinatorClient, session: Session, stop: threading.Event
    ) -> None:
        self.config = config
        self.client = client
        self.session = session
        self.spec = session.spec
        self.stop = stop
        self.device = resolve_device(config.device)
        # RWKV states decay towards zero and denormal floats make CPU kernels ~10x slower; set on
        # every node (GPU ones too) so the CPU-side outer step computes the same bits everywhere.
        torch.set_flush_denormal(True)

        # hivemind forks its DHT and averager processes first, while this process holds no model:
        # forked later, each would keep a copy-on-write snapshot of the tensors training rewrites.
        prefix = swarm_prefix(session.join.dht_prefix, self.spec.run_id)
        self.dht = start_dht(list(session.join.initial_peers), config.resolved_dht_listen())
        self.averager = PseudoGradientAverager(
            None,
            self.dht,
            prefix=f"{prefix}_diloco",
            spec=self.spec,
            numels=parameter_numels(self.spec),
        )

        self.model = initial_model(self.spec).to(self.device)
        self.outer = OuterState(self.model, self.spec.outer)
        self.averager.outer = self.outer
        self.inner_opt = build_inner_optimizer(self.model, self.spec.inner)
        self.tracker = make_tracker(self.dht, f"{prefix}_diloco", self.spec.tokens_per_round)
        self.membership = Membership(self.dht, f"{prefix}_members", session.node_id)
        self.claims = ClaimBoard(self.dht, f"{prefix}_claims")
        self.group_average = GroupAverage(
            self.averager,
            self.dht,
            prefix=f"{prefix}_diloco",
            config=GroupAverageConfig(
                node_id=session.node_id,
                tokens_per_round=self.spec.tokens_per_round,
                matchmaking_time_s=self.spec.matchmaking_time_s or 3.0,
            ),
            exact=self.averager.exact,
        )
        self._claim: RoundClaim | None = None

        self.progress = NodeProgress()
        self.feed = ShardFeed(
            client,
            config.cache_dir,
            seq_len=self.spec.seq_len,
            batch_size=self.spec.batch_size,
            stop=stop,
        )
        self.validator = Validator(
            client,
            list(session.join.validation_shards),
            config.cache_dir,
            seq_len=self.spec.seq_len,
            batch_size=self.spec.batch_size,
        )
        self.heartbeat = Heartbeat(
            client,
            self.progress,
            interval_s=session.join.heartbeat_interval_s or 10.0,
            maddrs=lambda: visible_maddrs(self.dht),
            stop=stop,
        )
        self.rounds: list[RoundOutcome] = []
        self._round_tokens = 0
        self._round_loss_sum = 0.0
        self._round_started = time.monotonic()
        self._next_catch_up = 0.0
        self._next_reconcile = 0.0

    # -- the loop -----------------------------------------------------------------------------

    def train(self) -> list[RoundOutcome]:
        """Train until --max-rounds outer rounds are done or the node is asked to stop."""
        if self.stop.is_set():  # stopped while starting up (e.g. SIGTERM during model build)
            return self.rounds
        self.heartbeat.beat()
        self.heartbeat.start()
        if not self._load_state_from_peers():
            self._publish_claim(self.outer.digest())
        self.averager.allow_state_sharing = True
        if self.config.min_peers > 1:
            log.info("waiting for %d peers before training", self.config.min_peers)
            if not self.membership.wait_for(self.config.min_peers, self.stop.is_set):
                return self.rounds
        else:
            self.membership.announce()
        self._start_round()
        for batch in self.feed.batches():
            self.train_step(batch)
            self.tracker.report_local_progress(self.outer.round, self._round_tokens)
            if self.tracker.global_epoch > self.outer.round:
                self._catch_up()
            elif self.tracker.ready_to_update_epoch:
                outcome = self.outer_round()
                if outcome is not None:
                    self.rounds.append(outcome)
                    self._start_round()
            else:
                self._reconcile_if_due()
            if self._done():
                break
        return self.rounds

    def _done(self) -> bool:
        max_rounds = self.config.max_rounds
        return self.stop.is_set() or (max_rounds is not None and len(self.rounds) >= max_rounds)

    def _start_round(self) -> None:
        self._round_tokens = 0
        self._round_loss_sum = 0.0
        self._round_started = time.monotonic()

    # -- inner steps --------------------------------------------------------------------------

    def train_step(self, batch: Batch) -> float:
        swarm_tokens = self.outer.swarm_tokens + self.tracker.global_progress.samples_accumulated
        lr = inner_lr(self.spec.inner, swarm_tokens)
        for group in self.inner_opt.param_groups:
            group["lr"] = lr
        inputs = batch.inputs.to(self.device, non_blocking=True)
        targets = batch.targets.to(self.device, non_blocking=True)
        autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")
        with autocast:
            loss = self.model.loss(inputs, targets)
        value = float(loss.detach())
        if not math.isfinite(value):
            log.warning("non-finite loss on shard %s: step skipped", batch.shard_id)
            self.inner_opt.zero_grad(set_to_none=True)
            return value
        loss.backward()
        if self.spec.inner.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.spec.inner.grad_clip)
        self.inner_opt.step()
        self.inner_opt.zero_grad(set_to_none=True)
        tokens = batch.num_tokens
        self._round_tokens += tokens
        self._round_loss_sum += value * tokens
        self.progress.add_step(tokens, value)
        self.feed.record_loss(value, tokens)
        return value

    # -- outer rounds -------------------------------------------------------------------------

    def outer_round(self) -> RoundOutcome | None:
        """Average pseudo-gradients with whoever is in the swarm now, then take the outer step.

        Returns None when the swarm finished this round without us (we then adopt its state).
        """
        started = time.monotonic()
        tokens = max(1, self._round_tokens)
        deltas = self.outer.pseudo_gradients()
        averaged, peers, group_tokens = None, [self.session.node_id], tokens
        attempts = 1
        if not all(torch.isfinite(d).all() for d in deltas):
            log.error("pseudo-gradient has NaN/Inf: this round's local work is discarded")
            deltas = [torch.zeros_like(d) for d in deltas]
        elif self.tracker.global_progress.num_peers > 1:
            result = self.group_average.run(
                self.outer.round,
                deltas,
                tokens,
                cancel=lambda: self.stop.is_set() or self.tracker.global_epoch > self.outer.round,
            )
            if result is None:
                log.info("round %d finished without this node", self.outer.round + 1)
                self._catch_up(force=True)
                return None
            if result.complete:
                averaged, peers, group_tokens = (
                    result.averaged,
                    result.node_ids,
                    result.group_tokens,
                )
                attempts = result.attempts
            else:
                log.error(
                    "round %d: no checked average after %d attempt(s): applying this node's own "
                    "pseudo-gradient (a peer's group result will replace it)",
                    self.outer.round + 1,
                    result.attempts,
                )
        if averaged is None and self.tracker.global_epoch > self.outer.round:
            self._catch_up(force=True)  # a peer already defined this round: take its result
            return None
        with self.tracker.pause_updates():
            self.outer.apply_outer_step(
                averaged if averaged is not None else deltas,
                tokens=group_tokens,
                group_size=len(peers),
            )
            self.tracker.update_epoch(self.outer.round)
        averaging_s = time.monotonic() - started
        val_loss = self.validator.loss(self.model, self.device)
        outcome = RoundOutcome(
            round=self.outer.round,
            peer_node_ids=sorted(peers),
            tokens=self._round_tokens,
            group_tokens=group_tokens,
            mean_loss=self._round_loss_sum / max(1, self._round_tokens),
            duration_s=time.monotonic() - self._round_started,
            averaging_s=averaging_s,
            params_sha256=self.outer.digest(),
            val_loss=val_loss,
            averaging_attempts=attempts,
        )
        self.progress.outer_round = outcome.round
        self._publish_claim(outcome.params_sha256)
        self._report(outcome)
        log.info(
            "round %d: %d peer%s, %d tokens here (%d in group), loss %.4f, val %s, %.0f tok/s, "
            "averaging %.1f s%s",
            outcome.round,
            len(outcome.peer_node_ids),
            "" if len(outcome.peer_node_ids) == 1 else "s",
            outcome.tokens,
            outcome.group_tokens,
            outcome.mean_loss,
            "-" if outcome.val_loss is None else f"{outcome.val_loss:.4f}",
            self.progress.tokens_per_second,
            outcome.averaging_s,
            "" if attempts == 1 else f" ({attempts} attempts)",
        )
        return outcome

    def _report(self, outcome: RoundOutcome) -> None:
        request = pb.ReportRoundRequest(
            round=outcome.round,
            peer_node_ids=outcome.peer_node_ids,
            tokens=outcome.tokens,
            mean_loss=outcome.mean_loss,
            duration_s=outcome.duration_s,
            averaging_s=outcome.averaging_s,
            params_sha256=outcome.params_sha256,
            group_tokens=outcome.group_tokens,
        )
        if outcome.val_loss is not None:
            request.val_loss = outcome.val_loss
        try:
            self.client.report_round(request)
        except CoordinatorError as e:
            log.warning("could not report round %d: %s", outcome.round, e)

    # -- joining a swarm that is ahead ------------------------------------------------------

    def _load_state_from_peers(self) -> bool:
        """Adopt the swarm's θ_global, momentum and round from a peer, if any peer shares one."""
        try:
            loaded = self.averager.load_state_from_peers(timeout=STATE_DOWNLOAD_TIMEOUT_S)
        except Exception as e:
            log.warning("could not download state from peers: %s", e)
            return False
        if loaded is None:
            return False
        meta, tensors = loaded
        try:
            self.outer.import_state(meta, tensors)
        except (KeyError, TypeError, ValueError) as e:
            log.warning("ignoring a peer's state: %s", e)
            return False
        self.progress.outer_round = self.outer.round
        self.tracker.report_local_progress(self.outer.round, 0)
        self._publish_claim(self.outer.digest())
        log.info("loaded the swarm's state from a peer: round %d", self.outer.round)
        return True

    # -- one θ_global for the whole swarm -------------------------------------------------------

    def _publish_claim(self, digest: str) -> None:
        self._claim = RoundClaim(
            round=self.outer.round,
            digest=digest,
            group_size=self.outer.group_size,
            node_id=self.session.node_id,
        )
        self.claims.publish(self._claim)
        # peers that download state prefer later rounds, then states more peers averaged into
        self.averager.state_sharing_priority = float(
            self.outer.round * 10_000 + self.outer.group_size
        )

    def _reconcile_if_due(self) -> None:
        """Adopt a peer's θ_global when it has a better claim to this round than ours."""
        if self._claim is None or time.monotonic() < self._next_reconcile:
            return
        self._next_reconcile = time.monotonic() + RECONCILE_EVERY_S
        better = better_claim(self._claim, self.claims.fetch())
        if better is None:
            return
        log.warning(
            "round %d: node %s holds a different global model averaged by %d peer(s) (ours: %d); "
            "adopting it",
            better.round,
            better.node_id,
            better.group_size,
            self._claim.group_size,
        )
        self.averager.allow_state_sharing = False  # nobody should download the losing state
        try:
            adopted = self._load_state_from_peers()
        finally:
            self.averager.allow_state_sharing = True
        if adopted:
            self._start_round()
        else:
            self._next_reconcile = time.monotonic() + 5 * RECONCILE_EVERY_S

    def _catch_up(self, force: bool = False) -> None:
        """The swarm finished a round without us: our local progress is stale, take its state."""
        if not force and time.monotonic() < self._next_catch_up:
            return
        self._next_catch_up = time.monotonic() + 10.0
        log.info(
            "the swarm is at round %d, this node at %d: downloading its state",
            self.tracker.global_epoch,
            self.outer.round,
        )
        if self._load_state_from_peers():
            self._start_round()

    # -- shutdown -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop background work and leave the swarm; safe to call more than once."""
        self.stop.set()
        for name, stop in (
            ("tracker", lambda: self.tracker.shutdown(timeout=5)),
            ("averager", self.averager.shutdown),
            ("dht", self.dht.shutdown),
        ):
            try:
                stop()
            except Exception as e:  # shutting down: report, keep going
                log.debug("stopping %s: %s", name, e)
