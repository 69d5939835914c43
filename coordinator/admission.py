"""Who may join a run: open runs admit every key; invite-only runs admit a key the maintainer
allowed (`gpt5os-coordinator allow`) or one that brings a valid invite (`gpt5os-coordinator
invite`). A key once admitted stays admitted: its re-joins need no invite. Bans (swarm.py) come
before all of this: a banned key is refused whatever it brings.

The run's mode is `RunConfig.admission` (run.json, set by `init --admission`). Invites and
admitted keys live in the run's database (tables `invites` and `admitted`): the CLI writes them
while the server runs, and the server reads them on each Join, so nothing needs a restart. An
invite is stored as the sha256 of its token, never the token; its uses are counted in the same
transaction that records the Join, so two nodes racing for the last use cannot both get it.

The judgement itself (`check_invite`, `parse_duration`, `node_id_from`) is pure and takes the
time as an argument; `Admission` is the thin SQL around it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
import sqlite3
import time
from dataclasses import dataclass

import grpc
from gpt5os.common.request_signing import node_id_of
from gpt5os.coordinator.records import ApiError

OPEN = "open"
INVITE_ONLY = "invite-only"
MODES = (OPEN, INVITE_ONLY)
DEFAULT_MODE = OPEN
DEFAULT_INVITE_USES = 1
DEFAULT_INVITE_EXPIRY = "7d"
TOKEN_PREFIX = "gpt5os-invite-"
ALLOWED = "allowed by the maintainer"

NOT_INVITED = (
    "this run is invite-only: ask the maintainer for an invite (gpt5os-coordinator invite) and "
    "join with --invite TOKEN, or send them your node id (first line of `gpt5os-node identity`) "
    "to be allowed"
)
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_NODE_ID_RE = re.compile(r"^[0-9a-f]{20}$")
_KEY_HEX_RE = re.compile(r"^[0-9a-fA-F]{64}$")


def denied(message: str) -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, message)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"admission must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def parse_duration(text: str) -> float | None:
    """Seconds in "90s", "30m", "12h", "7d", "2w" or "1h30m"; None for "never"."""
    text = text.strip().lower()
    if text in ("never", "none"):
        return None
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(
            f"invalid duration {text!r}: use a number with a unit, e.g. 90s, 30m, 12h, 7d, 2w "
            "or 1h30m (or never)"
        )
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be more than 0, e.g. 90s, 30m or 7d")
    return seconds


def node_id_from(text: str) -> str:
    """A node id from what a maintainer pastes: the id (`gpt5os-node identity`, 20 hex digits)
    or the raw Ed25519 public key as 64 hex digits or base64."""
    text = text.strip()
    if _NODE_ID_RE.match(text):
        return text
    if _KEY_HEX_RE.match(text):
        return node_id_of(bytes.fromhex(text))
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) == 32:
        return node_id_of(raw)
    raise ValueError(
        f"{text[:70]!r} is neither a node id (20 hex digits, the first line of "
        "`gpt5os-node identity`) nor a 32-byte public key (64 hex digits or base64)"
    )


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(unix))


@dataclass(frozen=True)
class Invite:
    token_hash: str
    created_unix: float
    expires_unix: float | None
    max_uses: int
    uses: int


def check_invite(invite: Invite | None, now: float) -> ApiError | None:
    """Why `invite` (None: no invite has this token) cannot admit a key at `now`, or None."""
    again = "ask the maintainer for a new one (gpt5os-coordinator invite)"
    if invite is None:
        return denied(
            f"this invite is not valid for this run (mistyped, or made for another run): {again}"
        )
    if invite.expires_unix is not None and now >= invite.expires_unix:
        return denied(f"this invite expired at {_when(invite.expires_unix)}: {again}")
    if invite.uses >= invite.max_uses:
        times = "once" if invite.max_uses == 1 else f"{invite.max_uses} times"
        return denied(f"this invite was already used {times}, all it allows: {again}")
    return None


class Admission:
    """Admission for one run's database (`store`, a coordinator Store) in `mode`.

    `admit` runs inside the caller's transaction (Swarm.join's), so an invite's use and the Join
    it admits are committed together, or neither.
    """

    def __init__(self, store, mode: str) -> None:
        self.store = store
        self.mode = check_mode(mode)

    @property
    def db(self) -> sqlite3.Connection:
        return self.store.db

    # -- the server's side -------------------------------------------------------------------

    def admit(self, node_id: str, invite: str, now: float) -> str:
        """Admit `node_id` or raise PERMISSION_DENIED; an invite it brings is used only when the
        key is not admitted yet. Returns how a newly admitted key got in ("" otherwise)."""
        if self.mode == OPEN or self.is_admitted(node_id):
            return ""
        if not invite:
            raise denied(f"node {node_id} is not admitted: {NOT_INVITED}")
        digest = token_hash(invite)
        error = check_invite(self.invite(digest), now)
        if error is not None:
            raise error
        used = self.db.execute(
            "UPDATE invites SET uses = uses + 1 WHERE token_hash=? AND uses < max_uses",
            (digest,),
        )
        if used.rowcount != 1:  # cannot happen inside one IMMEDIATE transaction; be safe anyway
            raise check_invite(self.invite(digest), now) or denied("this invite is used up")
        self.db.execute(
            "INSERT OR REPLACE INTO admitted VALUES (?, ?, ?)",
            (node_id, now, f"invite {digest[:12]}"),
        )
        return f"admitted with invite {digest[:12]}"

    def is_admitted(self, node_id: str) -> bool:
        row = self.db.execute("SELECT 1 FROM admitted WHERE node_id=?", (node_id,)).fetchone()
        return row is not None

    def invite(self, digest: str) -> Invite | None:
        row = self.db.execute(
            "SELECT token_hash, created_unix, expires_unix, max_uses, uses FROM invites "
            "WHERE token_hash=?",
            (digest,),
        ).fetchone()
        return Invite(*row) if row is not None else None

    # -- the maintainer's side (CLI) ---------------------------------------------------------

    def create_invite(self, now: float, *, uses: int, expires_s: float | None) -> str:
        """A new invite token (returned once, stored only as its hash)."""
        if uses < 1:
            raise ValueError("an invite must allow at least 1 use")
        token = new_token()
        expires = None if expires_s is None else now + expires_s
        with self.store.tx():
            self.db.execute(
                "INSERT INTO invites VALUES (?, ?, ?, ?, 0)",
                (token_hash(token), now, expires, uses),
            )
        return token

    def allow(self, node_id: str, now: float) -> bool:
        """Pre-register `node_id`; False when it was admitted already."""
        with self.store.tx():
            if self.is_admitted(node_id):
                return False
            self.db.execute("INSERT INTO admitted VALUES (?, ?, ?)", (node_id, now, ALLOWED))
        return True
