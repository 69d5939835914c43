"""The pure rules of a round's settlement, read by every member from the same gathered data.

After an all-reduce each member decides alone whether its result stands, who contributed, and
whether the group was big enough; the rules are deterministic functions of what every member
saw (the group's gathered data, the members' verdicts), so members that saw the same thing
decide the same. group_average.py applies them around hivemind; they live here, free of
hivemind and torch, so unit tests (and `make mutation`) check them in milliseconds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass


def group_name(nonces: Sequence[str]) -> str:
    """The same name on every member of one all-reduce, different for every all-reduce."""
    return hashlib.sha256("|".join(sorted(nonces)).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Verdict:
    node_id: str
    group: str
    ok: bool
    digest: str


def settled(ok: bool, digest: str, verdicts: dict[str, Verdict], members: list[str]) -> bool:
    """The settle rule: our checked result stands when every member agrees with it, or when some
    member never spoke (it left, or never really joined: it must not block us; a member whose
    own check failed averages again without us, and certified rounds repair it)."""
    spoken = [verdicts[m] for m in members if m in verdicts]  # a non-member's verdict counts not
    everyone_spoke = len(spoken) == len(members)
    agreed = all(v.ok and v.digest == digest for v in spoken)
    return ok and (agreed or not everyone_spoke)


def contributors(group: list[dict]) -> list[str]:
    """The node ids of the members that contributed work (keepers, and members whose
    pseudo-gradient was refused, receive the result only)."""
    return [str(g["node_id"]) for g in group if not g.get("keeper") and not g.get("refused")]


def required_size(group: list[dict]) -> int:
    """The largest group floor any member declared (0 when none did). hivemind enforces only the
    leader's min_group_size, and a leader that had not yet seen a slow node (a fast node, the
    keeper) would let a group of two finish the round without it, whose work the re-sync then
    throws away. Every member reads the same gathered data, so all of them keep or drop the
    group alike."""
    need = 0
    for g in group:
        try:
            need = max(need, int(g.get("floor", 0)))
        except (TypeError, ValueError):
            continue
    return need


def declared_norms(group: list[dict]) -> list[float]:
    """The pseudo-gradient norms the group's contributors declared (for SendGuard)."""
    norms = []
    for g in group:
        try:
            if not g.get("keeper") and not g.get("refused"):
                norms.append(float(g["norm"]))
        except (KeyError, TypeError, ValueError):
            continue
    return norms
