"""The DiLoCo trainer: inner AdamW steps on leased shards, outer rounds averaged over hivemind.

The loop is short on purpose; every side job (data, heartbeats, averaging, reports) is a call to
the object that owns it.
"""

from __future__ import annotations

import copy
import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from gpt5os.coordinator.run_spec import InnerOptimizerSpec, ModelSpec, RunSpec
from gpt5os.model import RWKV7, ModelConfig
from gpt5os.proto import pb

from .claims import RoundClaim
from .config import NodeConfig
from .coordinator_client import CoordinatorClient, CoordinatorError, Session
from .diloco import OuterState
from .group_average import Alone, Cancelled, Incomplete, Settled, zero_deltas
from .heartbeat import Heartbeat
from .inner_step import accumulate_gradients
from .loop_stats import LoopStats
from .progress import NodeProgress
from .schedule import inner_lr
from .shard_feed import Batch, ShardFeed
from .state_sync import Adopted, StateSync, Target, sync_unshared
from .swarm import CHUNK_TIMEOUT_S, SwarmPeer
from .validation import Validator

log = logging.getLogger("gpt5os.node")

CERTIFICATE_CHECK_EVERY_S = 3.0  # how often a node that may be behind asks for the certificate
JOIN_SYNC_TIMEOUT_S = 600.0  # a joiner that finds no source of the certified state gives up
HANDOVER_TIMEOUT_S = 60.0  # a node done with its rounds waits this long for the keeper's copy


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


def model_config(spec: ModelSpec) -> ModelConfig:
    return ModelConfig(
        vocab_size=spec.vocab_size,
        n_layer=spec.n_layer,
        n_embd=spec.n_embd,
        head_size=spec.head_size,
    )


def build_inner_optimizer(
    model: torch.nn.Module, spec: InnerOptimizerSpec
) -> torch.optim.Optimizer:
    kwargs = dict(
        lr=spec.lr,
        betas=(spec.beta1, spec.beta2),
        eps=spec.eps,
        weight_decay=spec.weight_decay,
    )
    if spec.name == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(model.parameters(), **kwargs)
    if spec.name != "adamw":
        raise ValueError(f"unknown inner optimizer {spec.name!r} in the run spec")
    return torch.optim.AdamW(model.parameters(), **kwargs)


def initial_model(spec: RunSpec) -> RWKV7:
    """The run's initial θ, bitwise the same on every node: built on the CPU from the spec's seed
    with one thread (multi-threaded LAPACK in the orthogonal init gives thread-dependent bits)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(spec.seed)
        return RWKV7(model_config(spec.model))
    finally:
        torch.set_num_threads(threads)


def parameter_numels(spec: RunSpec) -> list[int]:
    """The sizes of the model's parameters in order, without allocating them (meta device)."""
    with torch.device("meta"):
        return [p.numel() for p in RWKV7(model_config(spec.model)).parameters()]


@dataclass
class RoundRecord:
    """What this node reports about one outer round it applied."""

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


@dataclass(frozen=True)
class RoundApplied:
    """This node took the round's outer step (with its group, or alone)."""

    record: RoundRecord


@dataclass(frozen=True)
class Averaged:
    """What a round's all-reduce gave this node: the Δ to apply and who contributed."""

    deltas: Sequence[torch.Tensor]
    peers: list[str]
    group_tokens: int
    attempts: int


@dataclass
class PendingRound:
    """An overlapped round whose all-reduce runs in the background (join --overlap)."""

    started: float
    tokens: int
    loss_sum: float
    round_started: float
    thread: threading.Thread | None = None
    result: Averaged | RoundMissed | None = None

    def landed(self) -> bool:
        return self.thread is not None and not self.thread.is_alive()


@dataclass(frozen=True)
class RoundMissed:
    """The swarm finished the round without this node: its work is stale, it re-syncs."""

    reason: str


OuterRoundOutcome = RoundApplied | RoundMissed


def build_training_state(spec: RunSpec, device: torch.device) -> tuple[RWKV7, OuterState]:
    """The run's initial model on `device` and its DiLoCo outer state (θ_global on the CPU)."""
    model = initial_model(spec).to(device)
    return model, OuterState(model, spec.outer)


class Trainer:
    """One volunteer's training: owns the model, its DiLoCo state and its place in the swarm.

    :param peer: the node's swarm peer (DHT, averager, tracker, group averaging, boards), made
        by `SwarmPeer.start` over `outer`; unit tests hand in a fake with the same attributes
    """

    def __init__(
        self,
        config: NodeConfig,
        client: CoordinatorClient,
        session: Session,
        stop: threading.Event,
        *,
        model: torch.nn.Module,
        outer: OuterState,
        peer: SwarmPeer,
        feed: ShardFeed | None = None,
        validator: Validator | None = None,
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

        self.model = model
        self.outer = outer
        self.inner_opt = build_inner_optimizer(self.model, self.spec.inner)
        self.peer = peer
        self.tracker = peer.tracker
        self.sync = StateSync(
            sources=peer.averager.state_sources,
            claims=peer.claims.fetch,
            download=lambda source: peer.averager.download_state(source, CHUNK_TIMEOUT_S),
            adopt=self.outer.import_state,
            n_params=len(self.outer.global_params),
        )
        self._digest = self.outer.digest()  # of θ_global, recomputed when it changes
        self._checked: Target | None = None  # the last certificate compared with our state

        self.progress = NodeProgress()
        self.stats = LoopStats()
        self.feed = feed or ShardFeed(
            client,
            config.cache_dir,
            seq_len=self.spec.seq_len,
            batch_size=self.spec.batch_size,
            stop=stop,
            seed=self.spec.seed,
        )
        self.validator = validator or Validator(
            client,
            list(session.join.validation_shards),
            config.cache_dir,
            seq_len=self.spec.seq_len,
            batch_size=self.spec.batch_size,
            val_batches=self.spec.val_batches,
        )
        self.heartbeat = Heartbeat(
            client,
            self.progress,
            interval_s=session.join.heartbeat_interval_s or 10.0,
            maddrs=peer.maddrs,
            stop=stop,
            swarm_access=getattr(peer, "access", None),
        )
        if session.join.HasField("certified"):
            self.heartbeat.certified = session.join.certified
        self.rounds: list[RoundRecord] = []
        self._round_tokens = 0
        self._round_loss_sum = 0.0
        self._round_lr_sum = 0.0  # the inner learning rates of this round's steps (SendGuard)
        self._round_started = time.monotonic()
        self._next_check = 0.0
        self._pending: PendingRound | None = None  # join --overlap: the round in the background
        self._reporter: threading.Thread | None = None
        self._eval_model: torch.nn.Module | None = None

    # -- the loop -----------------------------------------------------------------------------

    def train(self) -> list[RoundRecord]:
        """Train until --max-rounds outer rounds are done or the node is asked to stop."""
        if self.stop.is_set():  # stopped while starting up (e.g. SIGTERM during model build)
            return self.rounds
        self.heartbeat.beat()
        self.heartbeat.start()
        if not self._start_from_certified_state():
            return self.rounds
        log.info("starting at round %d from global model sha256 %s", self.outer.round, self._digest)
        self._publish_claim()
        self.peer.averager.allow_state_sharing = True
        if self.config.min_peers > 1:
            log.info("waiting for %d peers before training", self.config.min_peers)
            if not self.peer.membership.wait_for(self.config.min_peers, self.stop.is_set):
                return self.rounds
        else:
            self.peer.membership.announce()
        self._start_round()
        try:
            self._loop()
        finally:
            if self._pending is not None and self._pending.thread is not None:
                self._pending.thread.join()  # stopping: its cancel() sees the stop
            if self._reporter is not None:
                self._reporter.join()
            self._write_stats()
        if self.rounds and not self.stop.is_set():
            self._hand_over()
        return self.rounds

    def _loop(self) -> None:
        for batch in self.feed.batches():
            self.stats.step_begins()
            started = time.monotonic()
            self.train_step(batch)
            stepped = time.monotonic()
            self.stats.step_s += stepped - started
            self._after_step()
            self.stats.comm_s += time.monotonic() - stepped
            if self._done():
                break

    def _after_step(self) -> None:
        """Report progress; average when the round is due, re-sync when behind: all of it is time
        the loop waits on the swarm (LoopStats.comm_s)."""
        if self._pending is not None:  # an overlapped round: this node is done with it
            self.tracker.report_local_progress(self.outer.round, self.spec.round_tokens)
            if self._pending.landed():
                self._land()
            return
        self.tracker.report_local_progress(self.outer.round, self._round_tokens)
        if self.tracker.global_epoch > self.outer.round:
            self.check_certificate(behind=True)
        elif (
            self.tracker.ready_to_update_epoch
            and self.config.overlap
            and self.tracker.global_progress.num_peers > 1
        ):
            self._start_overlapped_round()
        elif self.tracker.ready_to_update_epoch:
            outcome = self.outer_round()
            if isinstance(outcome, RoundApplied):
                self.rounds.append(outcome.record)
                self._start_round()
            else:
                log.info("round %d: %s", self.outer.round + 1, outcome.reason)
                self.check_certificate(behind=True, force=True)
        else:
            self.check_certificate()

    def _write_stats(self) -> None:
        if self.config.stats_file is None:
            return
        self.stats.rounds = len(self.rounds)
        self.stats.round = self.outer.round
        self.stats.round_digest = self._digest
        try:
            self.stats.write(self.config.stats_file)
        except OSError as e:
            log.warning("could not write --stats-file %s: %s", self.config.stats_file, e)

    def _hand_over(self) -> None:
        """Before leaving after --max-rounds: stay (sharing our state) until the keeper has
        certified our last round, so a keeper that missed it can still catch up from us; the
        last volunteer to leave must not take the model with it."""
        deadline = time.monotonic() + HANDOVER_TIMEOUT_S
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                self.heartbeat.beat()
            except CoordinatorError as e:
                log.debug("certificate refresh failed: %s", e)
            cert = self.heartbeat.certified
            if cert is not None and cert.round >= self.outer.round and cert.source == "keeper":
                return
            self.stop.wait(1.0)
        log.info("leaving before the keeper certified round %d", self.outer.round)

    def _done(self) -> bool:
        max_rounds = self.config.max_rounds
        return self.stop.is_set() or (max_rounds is not None and len(self.rounds) >= max_rounds)

    def _start_round(self) -> None:
        self._round_tokens = 0
        self._round_loss_sum = 0.0
        self._round_lr_sum = 0.0
        self._round_started = time.monotonic()

    # -- inner steps --------------------------------------------------------------------------

    def train_step(self, batch: Batch) -> float:
        swarm_tokens = self.outer.swarm_tokens + self.tracker.global_progress.samples_accumulated
        lr = inner_lr(self.spec.inner, swarm_tokens)
        for group in self.inner_opt.param_groups:
            group["lr"] = lr
        inputs = batch.inputs.to(self.device, non_blocking=True)
        targets = batch.targets.to(self.device, non_blocking=True)
        cuda = self.device.type == "cuda"
        value = accumulate_gradients(
            self.model.loss,
            inputs,
            targets,
            self.config.micro_batch,
            autocast=lambda: torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda),
        )
        if not math.isfinite(value):
            log.warning("non-finite loss on shard %s: step skipped", batch.shard_id)
            self.inner_opt.zero_grad(set_to_none=True)
            return value
        if self.spec.inner.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.spec.inner.grad_clip)
        self.inner_opt.step()
        self.inner_opt.zero_grad(set_to_none=True)
        tokens = batch.num_tokens
        self._round_tokens += tokens
        self._round_loss_sum += value * tokens
        self._round_lr_sum += lr
        self.stats.steps += 1
        self.stats.tokens += tokens
        self.progress.add_step(tokens, value)
        self.feed.record_loss(value, tokens)
        return value

    # -- outer rounds -------------------------------------------------------------------------

    def outer_round(self) -> OuterRoundOutcome:
        """Average pseudo-gradients with whoever is in the swarm now, then take the outer step."""
        started = time.monotonic()
        try:
            # Δ computed per tensor when read: training waits here, so neither θ moves (diloco.py)
            averaged = self._average(
                self.outer.live_pseudo_gradients(), max(1, self._round_tokens), self._round_lr_sum
            )
            if isinstance(averaged, RoundMissed):
                return averaged
            record = self._apply(
                averaged,
                started=started,
                tokens=self._round_tokens,
                loss_sum=self._round_loss_sum,
                round_started=self._round_started,
            )
        finally:
            self.peer.averager.release_wire()  # the average (in the wire buffers) is applied
        return RoundApplied(record)

    def _average(
        self, deltas: Sequence[torch.Tensor], tokens: int, lr_sum: float | None = None
    ) -> Averaged | RoundMissed:
        """This round's all-reduce (or this node's own Δ when there is no group)."""
        averaged, peers, group_tokens = None, [self.session.node_id], tokens
        attempts = 1
        round_number = self.outer.round
        if not all(torch.isfinite(d).all() for d in deltas):
            log.error("pseudo-gradient has NaN/Inf: this round's local work is discarded")
            deltas = zero_deltas([g.numel() for g in self.outer.global_params])
        elif self._others_in_swarm():
            result = self.peer.group_average.run(
                round_number,
                deltas,
                tokens,
                cancel=lambda: self.stop.is_set() or self.tracker.global_epoch > round_number,
                lr_sum=lr_sum,
            )
            if isinstance(result, Cancelled):
                return RoundMissed("the swarm finished this round without this node")
            if isinstance(result, Settled):
                averaged, peers, group_tokens = (
                    result.averaged,
                    result.node_ids,
                    result.group_tokens,
                )
                attempts = result.attempts
            elif isinstance(result, Incomplete):
                attempts = result.attempts
                log.error(
                    "round %d: no checked average after %d attempt(s): applying this node's own "
                    "pseudo-gradient (the round's certificate will repair it)",
                    round_number + 1,
                    result.attempts,
                )
            else:
                assert isinstance(result, Alone)
                log.warning("round %d: no group formed; stepping alone", round_number + 1)
            if averaged is None and self.peer.group_average.refused:
                # what the guard refused to send must not move θ_global here either
                deltas = zero_deltas([g.numel() for g in self.outer.global_params])
                group_tokens = 0
        if averaged is None and self.tracker.global_epoch > round_number:
            return RoundMissed("a peer already finished this round")
        return Averaged(averaged if averaged is not None else deltas, peers, group_tokens, attempts)

    def _others_in_swarm(self) -> bool:
        """Whether anyone else reports progress in the swarm, from a fresh fetch: the scheduled
        one may be up to max_refresh_period old, and may predate a starting peer's first record.
        The round's group floor (swarm.py min_group_size) reads the same count: a peer missing
        from it would be stepped alone or left out of the round, and its work thrown away."""
        if not self.tracker.fetch_now():
            log.debug("the swarm's progress could not be fetched in time: the last fetch decides")
        return self.tracker.global_progress.num_peers > 1

    def _apply(
        self,
        averaged: Averaged,
        *,
        started: float,
        tokens: int,
        loss_sum: float,
        round_started: float,
        delayed: bool = False,
    ) -> RoundRecord:
        """Take the outer step, then validate and report the round (in the background when
        `delayed`: an overlapped round must not stop the training loop)."""
        with self.tracker.pause_updates():
            self.outer.apply_outer_step(
                averaged.deltas,
                tokens=averaged.group_tokens,
                group_size=len(averaged.peers),
                delayed=delayed,
            )
            self.tracker.update_epoch(self.outer.round)
        self._digest = self.outer.digest()
        record = RoundRecord(
            round=self.outer.round,
            peer_node_ids=sorted(averaged.peers),
            tokens=tokens,
            group_tokens=averaged.group_tokens,
            mean_loss=loss_sum / max(1, tokens),
            duration_s=time.monotonic() - round_started,
            averaging_s=time.monotonic() - started,
            params_sha256=self._digest,
            averaging_attempts=averaged.attempts,
        )
        self.progress.outer_round = record.round
        self._publish_claim()
        if delayed:
            self._finish_in_background(record)
        else:
            record.val_loss = self.validator.loss(self.model, self.device)
            self._finish(record)
        return record

    def _finish(self, record: RoundRecord) -> None:
        self._report(record)
        log.info(
            "round %d: %d peer%s, %d tokens here (%d in group), loss %.4f, val %s, %.0f tok/s, "
            "averaging %.1f s%s",
            record.round,
            len(record.peer_node_ids),
            "" if len(record.peer_node_ids) == 1 else "s",
            record.tokens,
            record.group_tokens,
            record.mean_loss,
            "-" if record.val_loss is None else f"{record.val_loss:.4f}",
            self.progress.tokens_per_second,
            record.averaging_s,
            "" if record.averaging_attempts == 1 else f" ({record.averaging_attempts} attempts)",
        )

    def _finish_in_background(self, record: RoundRecord) -> None:
        """Validate θ_global (a copy: θ_local has moved on) and report, off the training loop."""
        if self._reporter is not None:
            self._reporter.join()
        if self._eval_model is None:
            self._eval_model = copy.deepcopy(self.model)
        with torch.no_grad(), self.outer.lock:
            for p, g in zip(self._eval_model.parameters(), self.outer.global_params, strict=True):
                p.copy_(g.to(p.device, p.dtype))

        def finish() -> None:
            record.val_loss = self.validator.loss(self._eval_model, self.device)
            self._finish(record)

        self._reporter = threading.Thread(target=finish, name="round-report", daemon=True)
        self._reporter.start()

    # -- overlapped rounds (join --overlap) ------------------------------------------------------

    def _start_overlapped_round(self) -> None:
        """Average this round in the background and train on: see OuterState.begin_overlapped_round."""
        started = time.monotonic()
        tokens, loss_sum, round_started, lr_sum = (
            self._round_tokens,
            self._round_loss_sum,
            self._round_started,
            self._round_lr_sum,
        )
        deltas = self.outer.begin_overlapped_round()
        pending = PendingRound(started, tokens, loss_sum, round_started)

        def average() -> None:
            try:
                pending.result = self._average(deltas, max(1, tokens), lr_sum)
            except Exception as e:  # noqa: BLE001 - reported where the round lands
                pending.result = RoundMissed(f"averaging failed: {e!r}")

        pending.thread = threading.Thread(target=average, name="overlapped-round", daemon=True)
        pending.thread.start()
        self._pending = pending
        self._start_round()

    def _land(self) -> None:
        """The background average is in: take the delayed outer step."""
        pending, self._pending = self._pending, None
        assert pending is not None and pending.result is not None
        if isinstance(pending.result, RoundMissed):
            log.info("round %d: %s", self.outer.round + 1, pending.result.reason)
            self.check_certificate(behind=True, force=True)
            return
        try:
            record = self._apply(
                pending.result,
                started=pending.started,
                tokens=pending.tokens,
                loss_sum=pending.loss_sum,
                round_started=pending.round_started,
                delayed=True,
            )
        finally:
            self.peer.averager.release_wire()
        self.rounds.append(record)

    def _report(self, record: RoundRecord) -> None:
        request = pb.ReportRoundRequest(
            round=record.round,
            peer_node_ids=record.peer_node_ids,
            tokens=record.tokens,
            mean_loss=record.mean_loss,
            duration_s=record.duration_s,
            averaging_s=record.averaging_s,
            params_sha256=record.params_sha256,
            group_tokens=record.group_tokens,
        )
        if record.val_loss is not None:
            request.val_loss = record.val_loss
        try:
            self.client.report_round(request)
        except CoordinatorError as e:
            log.warning("could not report round %d: %s", record.round, e)
            self._next_check = 0.0  # e.g. refused as contradicting the certificate: check now

    # -- one certified θ_global for the whole swarm --------------------------------------------

    def certified(self) -> Target | None:
        """The latest certificate the coordinator handed us (Join, then every heartbeat)."""
        return Target.from_pb(self.heartbeat.certified)

    def check_certificate(self, *, behind: bool = False, force: bool = False) -> bool:
        """Re-sync when the certificate says our θ_global is wrong or stale; True if we adopted.

        `behind`: the tracker says the swarm is past our round, so ask for a fresh certificate
        instead of waiting for the next heartbeat.
        """
        now = time.monotonic()
        if not force and now < self._next_check:
            return False
        self._next_check = now + CERTIFICATE_CHECK_EVERY_S
        if behind:
            try:
                self.heartbeat.beat()
            except CoordinatorError as e:
                log.debug("certificate refresh failed: %s", e)
        target = self.certified()
        if target is None or target.round < self.outer.round:
            return False
        if target.round == self.outer.round:
            if target == self._checked:
                return False
            self._digest = self.outer.digest()  # once per new certificate: catches tampering
            self._checked = target
            if self._digest == target.params_sha256:
                return False
            log.warning(
                "round %d: this node's global model %s differs from the certified %s: re-syncing",
                target.round,
                self._digest[:12],
                target.params_sha256[:12],
            )
        else:
            log.info(
                "the swarm is certified at round %d, this node at %d: re-syncing",
                target.round,
                self.outer.round,
            )
        return self.resync(target)

    def resync(self, target: Target) -> bool:
        """Adopt the certified state from a peer (or the keeper); True when done."""
        outcome = sync_unshared(self.sync, self.peer.averager, target)
        if not isinstance(outcome, Adopted):
            log.warning(
                "no source served the certified state of round %d (%d tried): %s",
                target.round,
                outcome.tried,
                "; ".join(outcome.reasons) or "no peer shares state",
            )
            return False
        with self.outer.lock:
            self.outer.swarm_tokens = target.tokens  # the certificate's count, not the peer's
        self._digest = target.params_sha256
        self._checked = target
        self.progress.outer_round = self.outer.round
        self.tracker.report_local_progress(self.outer.round, 0)
        self._publish_claim()
        self._start_round()
        log.info(
            "adopted the certified state of round %d from %s (%d source%s tried)",
            target.round,
            outcome.source[:12],
            outcome.tried,
            "" if outcome.tried == 1 else "s",
        )
        return True

    def _start_from_certified_state(self) -> bool:
        """A node joining a run with history starts from its certified state (False: stopped or
        no source served it in time)."""
        deadline = time.monotonic() + JOIN_SYNC_TIMEOUT_S
        while not self.stop.is_set():
            target = self.certified()
            if target is None or (target.round == 0 and target.params_sha256 == self._digest):
                return True  # a fresh run: every node starts from the same seeded model
            if target.round == self.outer.round and target.params_sha256 == self._digest:
                return True
            if self.resync(target):
                return True
            if time.monotonic() >= deadline:
                log.error(
                    "no peer or keeper served the certified state of round %d within %.0f s: "
                    "is the keeper running?",
                    target.round,
                    JOIN_SYNC_TIMEOUT_S,
                )
                return False
            self.stop.wait(2.0)
            try:
                self.heartbeat.beat()
            except CoordinatorError as e:
                log.debug("certificate refresh failed: %s", e)
        return False

    def _publish_claim(self) -> None:
        self.peer.claims.publish(
            RoundClaim(
                round=self.outer.round,
                digest=self._digest,
                group_size=self.outer.group_size,
                node_id=self.session.node_id,
            )
        )
        # hivemind's own state-download order (we pick sources ourselves, state_sync.py)
        self.peer.averager.state_sharing_priority = float(self.outer.round)

    # -- shutdown -----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop background work and leave the swarm; safe to call more than once."""
        self.stop.set()
        self.peer.close()
