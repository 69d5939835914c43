"""Re-sync: adopt the swarm's θ_global only when it is the certified one.

The coordinator certifies each round's digest (the keeper's report, or the nodes' majority when
the keeper was down). A node that holds a different state, missed a round or joins late
downloads a state and adopts it only when the round and the sha256 of its parameters equal the
certificate; otherwise it tries the next source. Sources: peers whose DHT claim names the
certified state first, in random order (so a crowd of late joiners does not all pull from one
peer, hivemind issue 169), then the keeper, then everyone else that shares state. Claims only
order the sources: a forged claim costs one download and changes nothing. A source that serves
too many downloads already answers "busy" (state_wire.py): it is skipped, and tried again after
a randomised back-off when no other source served the certified state.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from gpt5os.proto import pb

from .claims import RoundClaim
from .diloco import tensors_sha256
from .state_wire import Busy, Downloaded

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """The certified state a node must hold: θ_global after `round` rounds."""

    round: int
    tokens: int
    params_sha256: str

    @classmethod
    def from_pb(cls, msg: pb.CertifiedRound | None) -> Target | None:
        if msg is None or not msg.params_sha256:
            return None
        return cls(int(msg.round), int(msg.tokens), msg.params_sha256)


@dataclass(frozen=True)
class Adopted:
    source: str  # the peer id we adopted from
    round: int
    tried: int  # sources tried, this one included


@dataclass(frozen=True)
class NotAdopted:
    tried: int
    reasons: list[str] = field(default_factory=list)


SyncOutcome = Adopted | NotAdopted


def order_sources(
    declared: Sequence[bytes],
    claims: dict[bytes, RoundClaim],
    target: Target,
    rng: random.Random,
) -> list[bytes]:
    """Peers claiming the certified state (shuffled), then keepers, then the rest (shuffled)."""

    def claim(peer: bytes) -> RoundClaim | None:
        return claims.get(peer)

    keepers = [p for p in declared if (c := claim(p)) is not None and c.is_keeper]
    matching = [
        p
        for p in declared
        if (c := claim(p)) is not None
        and not c.is_keeper
        and c.round == target.round
        and c.digest == target.params_sha256
    ]
    rest = [p for p in declared if p not in keepers and p not in matching]
    rng.shuffle(matching)
    rng.shuffle(rest)
    return matching + keepers + rest


def _label(peer: bytes) -> str:
    """A short, distinct label for logs (peer ids share their multihash prefix)."""
    return "…" + peer.hex()[-10:]


def rejection(
    meta: object,
    tensors: Sequence[torch.Tensor],
    n_params: int,
    target: Target,
    digest: str | None = None,
) -> str:
    """Why a downloaded state is not the certified one ("" when it is). `digest`: the sha256 of
    tensors[:n_params] that this process computed while receiving them (None: hash them here)."""
    if not isinstance(meta, dict) or "round" not in meta:
        return "no metadata"
    if int(meta["round"]) != target.round:
        return f"round {meta['round']}, certified {target.round}"
    if len(tensors) < n_params:
        return f"{len(tensors)} tensors, expected at least {n_params}"
    if digest is None:
        digest = tensors_sha256(list(tensors[:n_params]))
    if digest != target.params_sha256:
        return f"sha256 {digest[:12]} is not the certified {target.params_sha256[:12]}"
    return ""


class StateSync:
    """Tries sources until one serves the certified state, and adopts that.

    :param sources: peer ids that share state now (the averager's `state_sources`)
    :param claims: the claim board's current {peer id: claim}
    :param download: one peer's state (Downloaded, or a (meta, tensors) pair), Busy, or None
    :param adopt: takes (meta, tensors) into the OuterState (import_state)
    :param n_params: how many of the tensors are θ_global (the rest is outer momentum)
    """

    def __init__(
        self,
        *,
        sources: Callable[[], Sequence[bytes]],
        claims: Callable[[], dict[bytes, RoundClaim]],
        download: Callable[[bytes], tuple[dict, list[torch.Tensor]] | None],
        adopt: Callable[[dict, list[torch.Tensor]], None],
        n_params: int,
        rng: random.Random | None = None,
        max_sources: int = 8,
        busy_retries: int = 3,
        busy_wait_s: float = 2.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.sources = sources
        self.claims = claims
        self.download = download
        self.adopt = adopt
        self.n_params = n_params
        self.rng = rng or random.Random()
        self.max_sources = max_sources
        self.busy_retries = busy_retries
        self.busy_wait_s = busy_wait_s
        self.sleep = sleep

    def sync(self, target: Target) -> SyncOutcome:
        order = order_sources(list(self.sources()), self.claims(), target, self.rng)
        order = order[: self.max_sources]
        reasons: list[str] = []
        tried = 0
        for attempt in range(self.busy_retries + 1):
            busy = []
            for peer in order:
                tried += 1
                loaded = self.download(peer)
                if isinstance(loaded, Busy):
                    busy.append(peer)
                    reasons.append(f"{_label(peer)}: busy")
                    continue
                if loaded is None:
                    reasons.append(f"{_label(peer)}: no state")
                    continue
                loaded = Downloaded(*loaded)
                why = rejection(loaded.meta, loaded.tensors, self.n_params, target, loaded.digest)
                if why:
                    log.warning("state from peer %s rejected: %s", _label(peer), why)
                    reasons.append(f"{_label(peer)}: {why}")
                    continue
                self.adopt(loaded.meta, loaded.tensors)
                return Adopted(source=_label(peer), round=target.round, tried=tried)
            if not busy or attempt == self.busy_retries:
                break
            # every free source failed; the busy ones may be free once their downloads end
            wait = self.busy_wait_s * 2**attempt * (0.5 + self.rng.random())
            log.info("%d state source(s) busy: trying them again in %.1f s", len(busy), wait)
            self.sleep(wait)
            order = busy
        return NotAdopted(tried=tried, reasons=reasons)


def sync_unshared(sync: StateSync, averager: Any, target: Target) -> SyncOutcome:
    """`sync.sync(target)` while `averager` shares no state: nobody should download the state
    this process is about to replace (used by the node's re-sync and the keeper's catch-up)."""
    averager.allow_state_sharing = False
    try:
        return sync.sync(target)
    finally:
        averager.allow_state_sharing = True
