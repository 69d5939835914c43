"""The node's Ed25519 identity: made on first run, kept in the node's home, mode 0600.

The coordinator derives the node id from the public key, so a volunteer who restarts keeps their
id and their credit on the leaderboard.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KEY_FILE = "node_key.pem"


@dataclass(frozen=True)
class NodeIdentity:
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key, as the coordinator expects it in JoinRequest."""
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    @property
    def node_id(self) -> str:
        """The id the coordinator will assign: the first 20 hex digits of sha256(public key)."""
        return hashlib.sha256(self.public_key).hexdigest()[:20]

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)


def load_or_create_identity(home: Path) -> NodeIdentity:
    """Load HOME/node_key.pem, or create it (mode 0600) when it does not exist yet."""
    path = Path(home) / KEY_FILE
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"{path} is not a valid node key ({e}); move it away to make a new one"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{path} is not an Ed25519 key; move it away to make a new one")
        return NodeIdentity(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return NodeIdentity(key)
