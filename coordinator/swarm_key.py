"""The coordinator's own key: it signs every swarm token (common/swarm_token.py).

`init` (or the first `serve` of an older run) makes an Ed25519 key in the run directory,
`coordinator_key.pem` (0600). Only its public half ever leaves the coordinator: in every
JoinResponse and KeeperReportResponse, so each peer can check every other peer's token.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

COORDINATOR_KEY_FILE = "coordinator_key.pem"


def ensure_coordinator_key(run_dir: Path) -> Ed25519PrivateKey:
    """The run's coordinator key, made (0600) when the run has none. A key file that others can
    read is refused with a message: whoever reads it can admit anyone to the swarm."""
    path = Path(run_dir) / COORDINATOR_KEY_FILE
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return key
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ValueError(f"{path} is readable by others (mode {mode:o}): run `chmod 600 {path}`")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} is not an Ed25519 key")
    return key
