"""The keeper: the run's one trusted replica of θ_global, outliving every volunteer.

It is a hivemind peer of the run that takes part in every outer round's averaging as a member
that contributes nothing (a zero pseudo-gradient with zero tokens: it moves neither the
token-weighted mean nor the group's checksum) and receives the same averaged result as every
member, so it applies the same outer step to its own θ_global and outer momentum. After each
round it reports (round, swarm tokens, sha256 of θ_global), signed with the run's keeper key,
and the coordinator records that as the round's certified digest. It writes a checkpoint every
`checkpoint_every` rounds and serves its state to nodes that re-sync. On start it loads the
newest intact checkpoint (or builds the run's seeded initial model, exactly as nodes do) and
catches up with the swarm from peers, checked against the certificate.

It shares the node's averaging code (SwarmPeer, GroupAverage, StateSync). Started by
`gpt5os-coordinator serve` as a child process (it dies with its parent) or on another machine
with `gpt5os-coordinator keeper --dir RUN_DIR --coordinator HOST:PORT`.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpt5os.common.channels import PLAINTEXT, ChannelError, Security, open_channel
from gpt5os.proto import pb, pb_grpc

from .claims import KEEPER_NODE_ID, RoundClaim
from .diloco import OuterState
from .group_average import Settled, zero_deltas
from .state_sync import Adopted, StateSync, Target, sync_unshared
from .swarm import CHUNK_TIMEOUT_S, SwarmPeer, swarm_prefix
from .swarm_access import SwarmAccess

if TYPE_CHECKING:
    from gpt5os.coordinator.checkpoints import CheckpointDir, LoadedCheckpoint
    from gpt5os.model import ModelConfig

log = logging.getLogger("gpt5os.keeper")

KEEPER_KEY_FILE = "keeper_key.pem"  # made by `gpt5os-coordinator init`/`serve` (keeper_auth.py)
REPORT_DOMAIN = b"gpt5os-keeper-report-v1\n"  # the same bytes as coordinator/keeper_auth.py
REPORT_EVERY_S = 10.0  # liveness: the coordinator calls a keeper live for 60 s after a report
POLL_S = 0.2
CALL_TIMEOUT_S = 30.0
SYNC_RETRY_S = 5.0
BEHIND_REPORT_EVERY_S = 2.0  # how often a keeper behind the swarm asks for the certificate
# hivemind's ProgressTracker publishes a peer's progress only once it has reported samples
# (`last_report_epoch`, optim/progress_tracker.py): with 0 the keeper would be invisible and a
# lone node would never average with it. One token is far below a node's round (rounds.py), so it
# never makes a round due; the average itself counts the keeper's 0 tokens.
PRESENCE_SAMPLES = 1


class KeeperError(RuntimeError):
    """The keeper cannot run (no key, coordinator unreachable, checkpoint of another model)."""


def default_checkpoint_every(preset: str) -> int:
    """Every round for the tiny test preset, every 10 rounds for real models."""
    return 1 if preset == "tiny" else 10


@dataclass(frozen=True, kw_only=True)
class KeeperConfig:
    run_dir: Path
    coordinator: str
    checkpoint_every: int | None = None  # None: default_checkpoint_every(preset)
    keep_checkpoints: int = 3
    dht_listen: str = "/ip4/127.0.0.1/tcp/0"
    security: Security = PLAINTEXT  # TLS to the coordinator (common/channels.py)


def load_keeper_key(run_dir: Path) -> Ed25519PrivateKey:
    path = Path(run_dir) / KEEPER_KEY_FILE
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise KeeperError(
            f"{path} does not exist: the keeper needs the run's keeper key (made by "
            "`gpt5os-coordinator init` or `serve`; copy it from the run directory)"
        ) from None
    except (ValueError, TypeError) as e:
        raise KeeperError(f"{path} is not a valid keeper key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeeperError(f"{path} is not an Ed25519 key")
    return key


class KeeperReporter:
    """Signed KeeperReport calls to the coordinator."""

    def __init__(
        self, address: str, key: Ed25519PrivateKey, security: Security = PLAINTEXT
    ) -> None:
        self.key = key
        try:
            self._channel = open_channel(address, security)
        except ChannelError as e:
            raise KeeperError(str(e)) from None
        self._stub = pb_grpc.CoordinatorStub(self._channel)

    def report(self, request: pb.KeeperReportRequest) -> pb.KeeperReportResponse:
        request.unix = time.time()
        request.nonce = secrets.token_bytes(16)
        request.ClearField("signature")
        payload = REPORT_DOMAIN + request.SerializeToString(deterministic=True)
        request.signature = self.key.sign(payload)
        try:
            return self._stub.KeeperReport(request, timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as e:
            raise KeeperError(f"keeper report refused: {e.code().name}: {e.details()}") from None

    def close(self) -> None:
        self._channel.close()


def import_checkpoint(outer: OuterState, names: list[str], loaded: LoadedCheckpoint) -> None:
    """Load a LoadedCheckpoint (coordinator/checkpoints.py) into `outer`."""
    tensors = [loaded.params[n] for n in names] + [loaded.momentum[n] for n in names]
    outer.import_state({"round": loaded.round, "swarm_tokens": loaded.tokens}, tensors)


class Keeper:
    """The keeper's loop (see module doc). Collaborators are passed in; `run_keeper` wires them."""

    def __init__(
        self,
        *,
        outer: OuterState,
        names: list[str],
        peer: SwarmPeer,
        reporter: KeeperReporter,
        checkpoints: CheckpointDir,
        checkpoint_every: int,
        spec_json: str,
        model_config: ModelConfig,
        stop: threading.Event,
    ) -> None:
        self.outer = outer
        self.names = names
        self.peer = peer
        self.reporter = reporter
        self.checkpoints = checkpoints
        self.checkpoint_every = max(1, checkpoint_every)
        self.spec_json = spec_json
        self.model_config = model_config
        self.stop = stop
        self.sync = StateSync(
            sources=peer.averager.state_sources,
            claims=peer.claims.fetch,
            download=lambda source: peer.averager.download_state(source, CHUNK_TIMEOUT_S),
            adopt=outer.import_state,
            n_params=len(outer.global_params),
        )
        self.certified: Target | None = None
        self.checkpoint_error = ""
        latest = checkpoints.latest()
        self.checkpoint_round = latest.round if latest is not None else 0
        self._digest = outer.digest()
        self._next_report = 0.0
        self._next_sync = 0.0

    # -- reports ------------------------------------------------------------------------------

    def report(self) -> None:
        """Certify the state we hold (also our liveness signal)."""
        request = pb.KeeperReportRequest(
            round=self.outer.round,
            tokens=self.outer.swarm_tokens,
            params_sha256=self._digest,
            dht_maddrs=self.peer.maddrs(),
            checkpoint_error=self.checkpoint_error,
            checkpoint_round=self.checkpoint_round,
        )
        access = getattr(self.peer, "access", None)
        if access is not None:
            request.swarm_public_key = access.wanted(2 * REPORT_EVERY_S)
        response = self.reporter.report(request)
        if access is not None and response.HasField("swarm_token"):
            access.renewed(response.swarm_token)
        if response.HasField("certified"):
            self.certified = Target.from_pb(response.certified)
        self._next_report = time.monotonic() + REPORT_EVERY_S

    def _report_quietly(self) -> None:
        try:
            self.report()
        except KeeperError as e:
            log.warning("%s", e)
            self._next_report = time.monotonic() + REPORT_EVERY_S

    def publish_claim(self) -> None:
        self.peer.claims.publish(
            RoundClaim(self.outer.round, self._digest, self.outer.group_size, KEEPER_NODE_ID)
        )
        self.peer.averager.state_sharing_priority = float(self.outer.round)

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        self.report()
        self.publish_claim()
        self.peer.averager.allow_state_sharing = True
        log.info(
            "keeper holds round %d (%s), %d swarm tokens; checkpoints every %d round(s)",
            self.outer.round,
            self._digest[:12],
            self.outer.swarm_tokens,
            self.checkpoint_every,
        )
        while not self.stop.is_set():
            self.step()
            self.stop.wait(POLL_S)

    def step(self) -> None:
        """One pass of the loop: report when due, catch up, or take part in a round."""
        tracker = self.peer.tracker
        tracker.report_local_progress(self.outer.round, PRESENCE_SAMPLES)
        if time.monotonic() >= self._next_report:
            self._report_quietly()
        target = self.certified
        if target is not None and target.round > self.outer.round:
            self.catch_up(target)
        elif tracker.global_epoch > self.outer.round:
            # the swarm is past us but we hold no certificate of it yet: ask sooner than usual
            self._next_report = min(self._next_report, time.monotonic() + BEHIND_REPORT_EVERY_S)
        elif tracker.ready_to_update_epoch and tracker.global_progress.num_peers > 1:
            self.average_round()

    def catch_up(self, target: Target) -> bool:
        if time.monotonic() < self._next_sync:
            return False
        self._next_sync = time.monotonic() + SYNC_RETRY_S
        log.info(
            "swarm certified at round %d, keeper at %d: catching up", target.round, self.outer.round
        )
        outcome = sync_unshared(self.sync, self.peer.averager, target)
        if not isinstance(outcome, Adopted):
            log.warning(
                "catch-up to round %d failed: %s",
                target.round,
                "; ".join(outcome.reasons) or "no peer shares its state",
            )
            return False
        with self.outer.lock:
            self.outer.swarm_tokens = target.tokens
        self._digest = target.params_sha256
        self.peer.tracker.report_local_progress(self.outer.round, PRESENCE_SAMPLES)
        self.publish_claim()
        log.info("keeper caught up: round %d from %s", target.round, outcome.source[:12])
        self.after_round()
        return True

    def average_round(self) -> bool:
        """Join this round's averaging with a zero contribution; apply the group's result."""
        round_number = self.outer.round
        zeros = zero_deltas([p.numel() for p in self.outer.global_params])
        result = self.peer.group_average.run(
            round_number,
            zeros,
            0,
            cancel=lambda: self.stop.is_set() or self.peer.tracker.global_epoch > round_number,
        )
        if not isinstance(result, Settled):
            self.peer.averager.release_wire()
            log.warning(
                "round %d: keeper got no settled average (%s); it will catch up from the "
                "round's certificate",
                round_number + 1,
                type(result).__name__,
            )
            return False
        with self.peer.tracker.pause_updates():
            self.outer.apply_outer_step(
                result.averaged, tokens=result.group_tokens, group_size=len(result.node_ids)
            )
            self.peer.tracker.update_epoch(self.outer.round)
        self.peer.averager.release_wire()  # the average (in the wire buffers) is applied
        self._digest = self.outer.digest()
        log.info(
            "round %d: keeper applied the average of %d node(s), %d tokens; sha256 %s",
            self.outer.round,
            len(result.node_ids),
            result.group_tokens,
            self._digest[:12],
        )
        self.publish_claim()
        self.after_round()
        return True

    def after_round(self) -> None:
        """Certify the new state at once (nodes wait for it), then checkpoint when due."""
        self._report_quietly()
        if self.outer.round % self.checkpoint_every == 0:
            self.write_checkpoint()
            self._report_quietly()  # the coordinator learns the checkpoint round, or the error

    def write_checkpoint(self) -> bool:
        """One checkpoint of the state we hold; a failed write keeps the older ones and is
        reported to the coordinator (its event log says why)."""
        with self.outer.lock:
            params = {
                n: p.clone() for n, p in zip(self.names, self.outer.global_params, strict=True)
            }
            momentum = {
                n: m.clone() for n, m in zip(self.names, self.outer.momentum_buffers(), strict=True)
            }
            round_number, tokens = self.outer.round, self.outer.swarm_tokens
        try:
            info = self.checkpoints.write(
                params=params,
                momentum=momentum,
                round=round_number,
                tokens=tokens,
                run_spec_json=self.spec_json,
                model_config=self.model_config,
            )
        except OSError as e:
            self.checkpoint_error = f"checkpoint of round {round_number} failed: {e}"
            log.error("%s; the previous checkpoint stays", self.checkpoint_error)
            return False
        self.checkpoint_error = ""
        self.checkpoint_round = info.round
        return True


def run_keeper(config: KeeperConfig, stop: threading.Event) -> None:
    """Wire a Keeper from the run directory and the coordinator, run it until `stop`."""
    from gpt5os.common.swarm_auth import SwarmKey
    from gpt5os.coordinator.checkpoints import CheckpointDir
    from gpt5os.coordinator.run_spec import RunSpec

    from .trainer import initial_model, model_config

    key = load_keeper_key(config.run_dir)
    reporter = KeeperReporter(config.coordinator, key, config.security)
    swarm_key = SwarmKey()  # our hivemind identity; the coordinator's swarm token names it
    peer = None
    try:
        try:
            hello = reporter.report(
                pb.KeeperReportRequest(hello=True, swarm_public_key=swarm_key.public_key)
            )
        except KeeperError as e:
            raise KeeperError(f"coordinator at {config.coordinator}: {e}") from None
        spec = RunSpec.from_pb(hello.spec)
        torch.set_flush_denormal(True)  # the same CPU outer-step bits as every node
        model = initial_model(spec)
        outer = OuterState(model, spec.outer)
        names = [n for n, _ in model.named_parameters()]
        checkpoints = CheckpointDir(config.run_dir, keep=config.keep_checkpoints)
        info = checkpoints.latest()
        if info is not None:
            try:
                import_checkpoint(outer, names, checkpoints.load(info))
            except (KeyError, ValueError) as e:
                raise KeeperError(f"checkpoint {info.path} does not fit this run: {e}") from None
            log.info("loaded checkpoint %s: round %d", info.path, info.round)
        else:
            log.info("no checkpoint yet: starting from the run's seeded initial model")
        every = config.checkpoint_every or default_checkpoint_every(spec.model.preset)
        peer = SwarmPeer.start(
            outer,
            spec,
            initial_peers=list(hello.initial_peers),
            listen=config.dht_listen,
            prefix=swarm_prefix(hello.dht_prefix, spec.run_id),
            node_id=KEEPER_NODE_ID,
            keeper=True,
            access=SwarmAccess.from_response(swarm_key, hello),
        )
        keeper = Keeper(
            outer=outer,
            names=names,
            peer=peer,
            reporter=reporter,
            checkpoints=checkpoints,
            checkpoint_every=every,
            spec_json=spec.to_json(),
            model_config=model_config(spec.model),
            stop=stop,
        )
        if info is None:
            keeper.write_checkpoint()  # round 0: a run with no history still has its model
        keeper.run()
    finally:
        if peer is not None:
            peer.close()
        swarm_key.close()
        reporter.close()
