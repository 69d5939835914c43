"""One outer round's all-reduce, checked by every peer and redone by the whole group until each
member holds the same complete average.

hivemind's all-reduce can finish "successfully" with part of the data missing (see checksum.py):
under load a stream breaks and one peer keeps its own values for a slice of the tensors. A
swarm that applied such a round would hold two different θ_global. So in exact mode a round is
an agreement, not a single call:

1. every peer encodes its pseudo-gradient (fixed_point.py) and puts the checksum of what it sends
   into hivemind's gather data, so the group learns every member's checksum with the group;
2. after the all-reduce each peer checks its result against the group's checksums and publishes
   a verdict (group, ok, digest of the result) in the DHT, where `group` names this particular
   all-reduce (a hash of the random nonces its members put into the gather data);
3. it waits for every member's verdict on that group: when all are ok with one digest, the
   round's average is settled; when any member failed, every member sees it and averages again
   from the same pseudo-gradients, with whoever is still matching under the round's key.

With a lossy codec (codec.py, allreduce.py) the same rounds and verdicts apply, but the check in
step 2 is the runner's own: every result part came from its reducer with every sender in it
(each member decodes the same quantized bytes, so complete results are bitwise equal, and the
verdicts compare their digests). This peer's pseudo-gradient travels with error feedback.

Before any of it, a pseudo-gradient with NaN/Inf or a norm (per unit of inner learning rate) far
above the swarm's recent median is not sent (robust.py): this peer then joins the round
contributing nothing, like the keeper, and still receives the group's average.

Each member declares the smallest group it will average with (its floor, swarm.py
min_group_size) and every member drops a group below the largest declared floor: a fast node
and the keeper must not finish a round without a slower node the others have seen.

Attempts are not part of the group key: a peer that never really joined a group (a matchmaking
race lost under load) and is still at its first try must be able to match the others' retry.

A member that vanishes (its verdict never comes) does not block the others: a peer whose own
check passed holds the correct average of the group and keeps it; a peer whose check failed
averages again with whoever is still there. When no group forms at all although the swarm has
other peers (a matchmaking race lost under load), a peer keeps looking for a while before it
steps alone; it stops looking as soon as the swarm finishes the round without it.
"""

from __future__ import annotations

import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import hivemind
import torch
from gpt5os.coordinator.run_spec import RobustSpec
from hivemind.averaging.control import AveragingStage
from hivemind.utils import get_dht_time

from . import checksum, fixed_point
from .codec import ErrorFeedback
from .dht_records import dht_records
from .diloco import tensors_sha256
from .robust import SendGuard, claim_bound, claimed_tokens
from .settle import (
    Verdict,
    contributors,
    declared_norms,
    group_name,
    required_size,
    settled,
)

log = logging.getLogger(__name__)

CANCELLABLE_STAGES = (AveragingStage.IDLE, AveragingStage.LOOKING_FOR_GROUP)
ROUND_BITS = 16
WIRE_REPORT = "__wire__"  # swarm.PseudoGradientAverager puts its WireReport under this key


def zero_deltas(numels: Sequence[int]) -> list[torch.Tensor]:
    """A contribution of nothing (the keeper's, a refused one): flat fp32 zeros that take no
    memory (one value, broadcast: a view with stride 0; they are only read)."""
    zero = torch.zeros((), dtype=torch.float32)
    return [zero.expand(n) for n in numels]


def group_bits(round_number: int) -> str:
    """hivemind group-key bits: peers match only within the same outer round."""
    return format(round_number % 2**ROUND_BITS, f"0{ROUND_BITS}b")


@dataclass(frozen=True)
class GroupAverageConfig:
    node_id: str
    tokens_per_round: int
    matchmaking_time_s: float = 3.0
    max_attempts: int = 3
    verdict_timeout_s: float = 30.0
    group_patience_s: float = 60.0  # how long to keep looking for a group before going alone
    poll_s: float = 0.2
    keeper: bool = False  # a member that contributes nothing and only receives the result
    # the run spec's `robust`: the claim bound and the sender's guard
    robust: RobustSpec = field(default_factory=RobustSpec)

    @property
    def claim_bound(self) -> int:
        """The most tokens a member's round counts for (robust.py "Claimed weight")."""
        return claim_bound(self.tokens_per_round, self.robust.max_claim_rounds)


# -- how a round's averaging ended for this peer ------------------------------------------------


@dataclass(frozen=True)
class Settled:
    """Every member holds the same checked average: apply it."""

    # the group's token-weighted mean Δ: the averager's wire buffers themselves (flat), valid
    # until this peer's next all-reduce
    averaged: list[torch.Tensor]
    node_ids: list[str]  # the contributing members (keepers are members but not contributors)
    group_tokens: int
    attempts: int = 1
    wire: dict | None = None  # this peer's WireReport of the settling all-reduce (codec modes)


@dataclass(frozen=True)
class Alone:
    """No group formed although we looked for `group_patience_s`: step with our own Δ."""


@dataclass(frozen=True)
class Cancelled:
    """`cancel()` turned true while we were still looking for a group (the swarm finished the
    round without us, or the node is stopping)."""


@dataclass(frozen=True)
class Incomplete:
    """Groups formed but this peer never got a checked average (certified rounds repair it)."""

    attempts: int


GroupOutcome = Settled | Alone | Cancelled | Incomplete


# -- one attempt's outcome (internal to run()) ---------------------------------------------------


@dataclass(frozen=True)
class _Redo:
    """The all-reduce ran but a member's (or our) check failed: the group averages again."""


@dataclass(frozen=True)
class _NoGroup:
    """No group formed this time."""


@dataclass(frozen=True)
class _RoundInput:
    norm: float | None  # this peer's pseudo-gradient norm (None: not checked, a keeper)
    refused: bool  # SendGuard refused it: this peer contributes nothing this round


def robust_summary(wire: dict) -> str:
    """What this peer's reducers did to the senders' parts (robust.py), for the round's wire
    line: "" when nothing was dropped, clipped, capped or bounded."""
    counts = [(wire.get(k) or 0, k) for k in ("dropped", "clipped", "capped", "bounded")]
    done = [f"{k} {n}" for n, k in counts if n]
    return f"; as reducer: {', '.join(done)} sender part(s)" if done else ""


class VerdictBoard:
    """Per-round DHT record of each member's verdict on its latest all-reduce."""

    TTL_S = 300.0

    def __init__(self, dht: hivemind.DHT, prefix: str) -> None:
        self.dht = dht
        self.prefix = prefix

    def key(self, round_number: int) -> str:
        return f"{self.prefix}_verdicts_{round_number}"

    def publish(self, round_number: int, verdict: Verdict) -> None:
        self.dht.store(
            self.key(round_number),
            subkey=verdict.node_id,
            value={"group": verdict.group, "ok": verdict.ok, "digest": verdict.digest},
            expiration_time=get_dht_time() + self.TTL_S,
        )

    def fetch(self, round_number: int, group: str) -> dict[str, Verdict]:
        verdicts = {}
        for subkey, value in dht_records(self.dht, self.key(round_number)).items():
            try:
                verdict = Verdict(
                    node_id=str(subkey),
                    group=str(value["group"]),
                    ok=bool(value["ok"]),
                    digest=str(value["digest"]),
                )
            except (TypeError, KeyError, ValueError):
                continue  # malformed: a buggy or hostile peer; its absence reads as a timeout
            if verdict.group == group:
                verdicts[verdict.node_id] = verdict
        return verdicts


class GroupAverage:
    """Runs the all-reduce of one outer round for a PseudoGradientAverager (see module doc)."""

    def __init__(
        self,
        averager: hivemind.DecentralizedAverager,
        dht: hivemind.DHT,
        *,
        prefix: str,
        config: GroupAverageConfig,
        exact: bool,
        min_group_size: Callable[[], int] | None = None,
    ) -> None:
        self.averager = averager
        self.config = config
        self.exact = exact
        self.min_group_size = min_group_size  # re-read before every attempt (swarm.py)
        self.verdicts = VerdictBoard(dht, prefix)
        self._contribution: checksum.Contribution | None = None  # this round's, once encoded
        self.codec = None if exact else getattr(averager, "codec", None)
        # this node's quantization error (node state, not θ_global): codec.py
        self.feedback = ErrorFeedback(self.codec) if self.codec is not None else None
        self.guard = SendGuard(factor=config.robust.send_factor)
        self.last_wire: dict | None = None  # the WireReport of this peer's latest all-reduce
        self._round = _RoundInput(norm=None, refused=False)
        self._relax_at = math.inf  # when this round's group floor drops to 2 (_floor)

    def run(
        self,
        round_number: int,
        deltas: Sequence[torch.Tensor],
        tokens: int,
        *,
        cancel: Callable[[], bool],
        lr_sum: float | None = None,
    ) -> GroupOutcome:
        """Average `deltas` (this peer's Δ over `tokens` tokens, trained at inner learning rates
        summing to `lr_sum`) with the round's group."""
        self._contribution = None
        tokens = self._claim(round_number, tokens)
        norm, refusal = (None, None) if self.config.keeper else self.guard.check(deltas, lr_sum)
        if refusal is not None:
            log.warning(
                "round %d: this node's pseudo-gradient is not sent: %s; it contributes nothing "
                "this round and receives the group's average",
                round_number + 1,
                refusal,
            )
            deltas = zero_deltas([d.numel() for d in deltas])
            tokens = 0
        self._round = _RoundInput(norm=norm, refused=refusal is not None)
        attempts = self.config.max_attempts
        patience_ends = time.monotonic() + self.config.group_patience_s
        self._relax_at = time.monotonic() + self.config.group_patience_s / 2
        attempt = 0
        while attempt < attempts:
            outcome = self._attempt(round_number, attempt, deltas, tokens, cancel)
            if isinstance(outcome, Settled):
                if self.feedback is not None and not self._round.refused and tokens > 0:
                    self.feedback.commit(deltas)  # the average we apply has our contribution
                return outcome
            if isinstance(outcome, Cancelled):
                return outcome
            if isinstance(outcome, _NoGroup):
                if cancel():
                    return Cancelled()
                if time.monotonic() < patience_ends:
                    # Peers are in the swarm (the trainer checked), so look again rather than
                    # step alone: a lost matchmaking race must not split the round in two.
                    log.info("round %d: no group yet; looking again", round_number + 1)
                    continue
                return Alone() if attempt == 0 else Incomplete(attempt + 1)
            attempt += 1
            log.warning(
                "round %d: the group's all-reduce was incomplete (attempt %d); averaging again",
                round_number + 1,
                attempt,
            )
        return Incomplete(attempts)

    def _claim(self, round_number: int, tokens: int) -> int:
        """What this peer claims: its tokens, at most the run's claim_bound (what every member
        counts it for, robust.py "Claimed weight"); a node whose round ran long says so."""
        bound = self.config.claim_bound
        if tokens > bound:
            log.warning(
                "round %d: this node trained %d tokens; it claims the most a member may, %d",
                round_number + 1,
                tokens,
                bound,
            )
            return bound
        return tokens

    @property
    def refused(self) -> bool:
        """Whether this round's pseudo-gradient was refused by the sender's guard: with no
        group, the node then steps with nothing rather than with what it refused to send."""
        return self._round.refused

    # -- one attempt --------------------------------------------------------------------------

    def _attempt(
        self,
        round_number: int,
        attempt: int,
        deltas: Sequence[torch.Tensor],
        tokens: int,
        cancel: Callable[[], bool],
    ) -> Settled | _Redo | _NoGroup | Cancelled:
        seed = round_number  # the same probe for every retry: peers may be at different tries
        weight = tokens / max(1, self.config.tokens_per_round)
        with self.averager.get_tensors() as buffers:
            if self.feedback is not None and tokens > 0:
                self.feedback.write_contribution(deltas, buffers)  # roundtrip(Δ + e)
            else:
                for buf, delta in zip(buffers, deltas, strict=True):
                    if self.exact:
                        fixed_point.encode(delta, weight, buf)
                    else:
                        buf.copy_(delta.reshape(-1))
            if self.exact and self._contribution is None:  # the same on every try this round
                self._contribution = checksum.project(buffers, seed)
            mine = self._contribution
        gather = {
            "node_id": self.config.node_id,
            "tokens": tokens,
            "round": round_number,
            "nonce": secrets.token_hex(8),
        }
        floor = self._floor()
        if floor is not None:
            gather["floor"] = floor
        if self.config.keeper:
            gather["keeper"] = True
        if self._round.refused:
            gather["refused"] = True
        if self._round.norm is not None:
            gather["norm"] = self._round.norm
        if mine is not None:
            gather.update(probe=mine.probe, norm2=mine.norm2)

        gathered = self._step(round_number, gather, tokens, cancel, floor)
        if gathered is None:
            return Cancelled()
        wire = gathered.pop(WIRE_REPORT, None)
        if not gathered:
            return _NoGroup()
        group = list(gathered.values())
        need = required_size(group)
        if len(group) < need:
            log.info(
                "round %d: a group of %d, below the %d a member expects; looking again",
                round_number + 1,
                len(group),
                need,
            )
            return _NoGroup()
        members = [str(g["node_id"]) for g in group]
        node_ids = contributors(group)
        group_tokens = self._group_tokens(round_number, group)
        rounds = {int(g["round"]) for g in group}
        if len(rounds) > 1:  # cannot happen with round group keys; never apply a mixed average
            log.error("averaged with peers in different rounds %s: discarded", sorted(rounds))
            return _NoGroup()
        if not node_ids or group_tokens <= 0:  # only keepers: nothing was averaged
            return _NoGroup()
        name = group_name([str(g.get("nonce", "")) for g in group])
        self.last_wire = wire
        with self.averager.get_tensors() as buffers:
            if self.exact:
                total, ok = self._check(buffers, group, seed)
            else:
                # the wire buffers themselves, not a copy (4 bytes a parameter): nothing writes
                # them again before the next attempt's encode, after the outer step read them
                total = list(buffers)
                ok = bool(wire and wire.get("parts") and not wire.get("incomplete_parts"))
                if not ok:
                    log.warning(
                        "round %d: all-reduce result incomplete (%s)", round_number + 1, wire
                    )

        digest = tensors_sha256(total) if ok else ""
        self.verdicts.publish(round_number, Verdict(self.config.node_id, name, ok, digest))
        verdicts = self._collect_verdicts(round_number, name, members)
        if settled(ok, digest, verdicts, members):
            if len(verdicts) < len(members):
                missing = sorted(set(members) - set(verdicts))
                log.warning(
                    "round %d: no verdict from %s; keeping our checked average",
                    round_number + 1,
                    ", ".join(missing),
                )
            self.guard.observe(declared_norms(group))
            if not self.exact:  # the group's quantized mean, the same bits on every member
                if wire:
                    log.info(
                        "round %d: %s wire: sent %d bytes for %d values (%.4f B/value), "
                        "received %d bytes for %d values%s",
                        round_number + 1,
                        self.codec.name,
                        wire["sent_bytes"],
                        wire["sent_values"],
                        wire["sent_bytes"] / max(1, wire["sent_values"]),
                        wire["received_bytes"],
                        wire["received_values"],
                        robust_summary(wire),
                    )
                return Settled(total, node_ids, group_tokens, attempt + 1, wire)
            total_weight = group_tokens / max(1, self.config.tokens_per_round)
            averaged = [t.div_(total_weight) for t in total]
            return Settled(averaged, node_ids, group_tokens, attempt + 1)
        # Our result is wrong, or a member's is: redo it. A member whose verdict never came either
        # left (the redo then runs without it) or was never really in the group (a matchmaking
        # race under load), and is looking for a group under the old key.
        return _Redo()

    def _group_tokens(self, round_number: int, group: list[dict]) -> int:
        """The group's tokens, each member's claim bounded by the run's claim_bound (robust.py
        "Claimed weight"); one line per member whose claim was above it."""
        bound = self.config.claim_bound
        total = 0
        for g in group:
            counted = claimed_tokens(g.get("tokens"), bound)
            if counted == bound and g.get("tokens") != bound:
                log.warning(
                    "round %d: member %s claims %.40r tokens, more than a member may (%d): "
                    "counted as %d",
                    round_number + 1,
                    str(g.get("node_id"))[:40],
                    g.get("tokens"),
                    bound,
                    bound,
                )
            total += counted
        return total

    def _floor(self) -> int | None:
        """The smallest group this peer will average with now (swarm.py min_group_size); after
        half its patience, 2: one node with the keeper rather than a round stepped alone."""
        if self.min_group_size is None:
            return None
        if time.monotonic() >= self._relax_at:
            return 2
        try:
            return self.min_group_size()
        except Exception as e:  # a DHT hiccup: no floor this attempt
            log.warning("could not read the minimum group size: %r", e)
            return None

    def _step(self, round_number, gather, tokens, cancel, floor: int | None) -> dict | None:
        """hivemind's all-reduce; {} when no group formed, None when cancelled while matching."""
        self.averager.set_group_bits(group_bits(round_number))
        if floor is not None:
            try:
                self.averager.set_min_group_size(floor)
            except Exception as e:  # a DHT hiccup: keep the previous floor
                log.warning("could not update the minimum group size: %r", e)
        timeout = self.config.matchmaking_time_s + 15.0
        try:
            control = self.averager.step(
                gather=gather,
                weight=1.0 if self.exact else float(max(0, tokens)),
                timeout=timeout,
                wait=False,
            )
            while True:
                try:
                    return control.result(timeout=0.25) or {}
                except TimeoutError:
                    if cancel() and control.stage in CANCELLABLE_STAGES:
                        control.cancel()
                        return None
        except Exception as e:  # hivemind raises many kinds when no group forms in time
            log.warning("averaging failed (%s)", e)
            return {}

    def _check(
        self, buffers: Sequence[torch.Tensor], group: list[dict], seed: int
    ) -> tuple[list[torch.Tensor], bool]:
        """The group's exact sum decoded from hivemind's mean, and whether it passes the checksum."""
        # Decoded in the wire buffers themselves (8 bytes a parameter not allocated again): they
        # are only written again by the next encode, after the outer step has read them.
        total = [fixed_point.decode_sum(b, len(group), in_place=True) for b in buffers]
        try:
            contributions = [
                checksum.Contribution(float(g["probe"]), float(g["norm2"])) for g in group
            ]
        except (KeyError, TypeError, ValueError):
            log.warning("a group member sent no checksum: result taken unchecked")
            return total, True
        ok, ratio = checksum.matches(total, contributions, seed)
        if not ok:
            log.warning("all-reduce result fails the group's checksum (%.3g x tolerance)", ratio)
        return total, ok

    def _collect_verdicts(
        self, round_number: int, group: str, node_ids: list[str]
    ) -> dict[str, Verdict]:
        """Every member's verdict on this all-reduce, or those that came before the timeout."""
        deadline = time.monotonic() + self.config.verdict_timeout_s
        verdicts: dict[str, Verdict] = {}
        wanted = set(node_ids)
        while True:
            verdicts = {
                n: v for n, v in self.verdicts.fetch(round_number, group).items() if n in wanted
            }
            if len(verdicts) == len(wanted) or time.monotonic() >= deadline:
                return verdicts
            time.sleep(self.config.poll_s)
