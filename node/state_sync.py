"""Re-sync: adopt the swarm's θ_global only when it is the certified one.

The coordinator certifies each round's digest (the keeper's report, or the nodes' majority when
the keeper was down). A node that holds a different state, missed a round or joins late
downloads a state and adopts it only when the round and the sha256 of its parameters equal the
certificate; otherwise it tries the next source. Sources: peers whose DHT claim names the
certified state first, in random order (so a crowd of late joiners does not all pull from one
peer, hivemind issue 169), then the keeper, then everyone else that shares state. Claims only
order the sources: a forged claim costs one download and changes nothing.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from gpt5os.proto import pb

from .claims import RoundClaim
from .diloco import tensors_sha256

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


def rejection(meta: object, tensors: Sequence[torch.Tensor], n_params: int, target: Target) -> str:
    """Why a downloaded state is not the certified one ("" when it is)."""
    if not isinstance(meta, dict) or "round" not in meta:
        return "no metadata"
    if int(meta["round"]) != target.round:
        return f"round {meta['round']}, certified {target.round}"
    if len(tensors) < n_params:
        return f"{len(tensors)} tensors, expected at least {n_params}"
    digest = tensors_sha256(list(tensors[:n_params]))
    if digest != target.params_sha256:
        return f"sha256 {digest[:12]} is not the certified {target.params_sha256[:12]}"
    return ""


class StateSync:
    """Tries sources until one serves the certified state, and adopts that.

    :param sources: peer ids that share state now (the averager's `state_sources`)
    :param claims: the claim board's current {peer id: claim}
    :param download: (meta, tensors) from one peer, or None
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
    ) -> None:
        self.sources = sources
        self.claims = claims
        self.download = download
        self.adopt = adopt
        self.n_params = n_params
        self.rng = rng or random.Random()
        self.max_sources = max_sources

    def sync(self, target: Target) -> SyncOutcome:
        order = order_sources(list(self.sources()), self.claims(), target, self.rng)
        reasons = []
        for tried, peer in enumerate(order[: self.max_sources], start=1):
            loaded = self.download(peer)
            if loaded is None:
                reasons.append(f"{_label(peer)}: no state")
                continue
            meta, tensors = loaded
            why = rejection(meta, tensors, self.n_params, target)
            if why:
                log.warning("state from peer %s rejected: %s", _label(peer), why)
                reasons.append(f"{_label(peer)}: {why}")
                continue
            self.adopt(meta, tensors)
            return Adopted(source=_label(peer), round=target.round, tried=tried)
        return NotAdopted(tried=min(len(order), self.max_sources), reasons=reasons)


def sync_unshared(sync: StateSync, averager: Any, target: Target) -> SyncOutcome:
    """`sync.sync(target)` while `averager` shares no state: nobody should download the state
    this process is about to replace (used by the node's re-sync and the keeper's catch-up)."""
    averager.allow_state_sharing = False
    try:
        return sync.sync(target)
    finally:
        averager.allow_state_sharing = True
