"""The node's Ed25519 identity: made on first run, kept in the node's home, mode 0600.

The coordinator derives the node id from the public key, so a volunteer who restarts keeps their
id and their credit on the leaderboard. The key proves the node at Join and signs every request
(common/request_signing.py): whoever can read the file can act as this node, so a key file that
other users can read is refused on every load.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpt5os.common.request_signing import node_id_of, raw_public_key

KEY_FILE = "node_key.pem"
CHECK_MODES = os.name == "posix"  # Windows has no group/other mode bits to check


class IdentityError(ValueError):
    """The node key cannot be used (unreadable, not Ed25519, readable by others)."""


@dataclass(frozen=True)
class NodeIdentity:
    private_key: Ed25519PrivateKey
    path: Path | None = None  # the key file (absolute) it was loaded from

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key, as the coordinator expects it in JoinRequest."""
        return raw_public_key(self.private_key)

    @property
    def node_id(self) -> str:
        """The id the coordinator will assign: the first 20 hex digits of sha256(public key)."""
        return node_id_of(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)


def check_key_mode(path: Path) -> None:
    """Refuse a key file that anyone but its owner can read or write."""
    if not CHECK_MODES:
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise IdentityError(
            f"{path} is readable by other users (mode {mode:04o}): anyone who reads it can act "
            f"as this node; run `chmod 600 {path}` (or move it away to make a new key)"
        )


def load_or_create_identity(home: Path) -> NodeIdentity:
    """Load HOME/node_key.pem, or create it (mode 0600) when it does not exist yet."""
    path = (Path(home) / KEY_FILE).absolute()
    if path.exists():
        check_key_mode(path)
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as e:
            raise IdentityError(
                f"{path} is not a valid node key ({e}); move it away to make a new one"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"{path} is not an Ed25519 key; move it away to make a new one")
        return NodeIdentity(key, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return NodeIdentity(key, path)
