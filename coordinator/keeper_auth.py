"""The keeper's key: only the holder of the run's keeper key can certify a round's digest.

`init` (or the first `serve` of an older run) makes an Ed25519 key in the run directory:
`keeper_key.pem` (private, 0600) for the keeper process and `keeper.pub` (raw public key) for the
coordinator. A KeeperReport is signed over its own fields (signature cleared, deterministic
protobuf bytes, a domain prefix), carries a timestamp within ±60 s and a random nonce that the
coordinator refuses to see twice, so a captured report cannot be replayed and a node's key,
however valid for Join, can never certify anything.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from pathlib import Path

import grpc
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from gpt5os.coordinator.records import ApiError
from gpt5os.proto import pb

KEEPER_KEY_FILE = "keeper_key.pem"
KEEPER_PUB_FILE = "keeper.pub"
DOMAIN = b"gpt5os-keeper-report-v1\n"
CLOCK_WINDOW_S = 60.0
NONCES_KEPT = 4096


def report_payload(request: pb.KeeperReportRequest) -> bytes:
    """The bytes a keeper signs: every field but the signature, deterministic, domain-prefixed.
    (node/keeper.py builds the same bytes; the proto module holds no logic.)"""
    unsigned = pb.KeeperReportRequest()
    unsigned.CopyFrom(request)
    unsigned.ClearField("signature")
    return DOMAIN + unsigned.SerializeToString(deterministic=True)


def ensure_keeper_key(run_dir: Path) -> bytes:
    """The run's keeper public key (raw 32 bytes), making the key pair when the run has none."""
    run_dir = Path(run_dir)
    pub_path = run_dir / KEEPER_PUB_FILE
    key_path = run_dir / KEEPER_KEY_FILE
    if pub_path.exists():
        return pub_path.read_bytes()
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    tmp = pub_path.with_name(pub_path.name + ".tmp")
    tmp.write_bytes(public)
    os.replace(tmp, pub_path)
    return public


def load_keeper_public_key(run_dir: Path) -> bytes | None:
    path = Path(run_dir) / KEEPER_PUB_FILE
    return path.read_bytes() if path.exists() else None


class KeeperVerifier:
    """Checks KeeperReports against the run's keeper public key, clock window and seen nonces."""

    def __init__(self, public_key: bytes | None) -> None:
        self.public_key = Ed25519PublicKey.from_public_bytes(public_key) if public_key else None
        self._nonces: OrderedDict[bytes, None] = OrderedDict()

    def verify(self, request: pb.KeeperReportRequest, now: float | None = None) -> None:
        """Raise ApiError (nothing recorded) unless the report is fresh and signed by the keeper."""
        if self.public_key is None:
            raise ApiError(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this run has no keeper key (keeper.pub): run `gpt5os-coordinator serve` once",
            )
        now = time.time() if now is None else now
        if abs(request.unix - now) > CLOCK_WINDOW_S:
            raise ApiError(
                grpc.StatusCode.UNAUTHENTICATED,
                f"keeper report timestamp is {request.unix - now:+.0f} s off the coordinator's "
                "clock: fix the keeper machine's clock",
            )
        if len(request.nonce) != 16:
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "keeper report nonce must be 16 bytes")
        try:
            self.public_key.verify(request.signature, report_payload(request))
        except InvalidSignature:
            raise ApiError(
                grpc.StatusCode.PERMISSION_DENIED,
                "keeper report is not signed by this run's keeper key",
            ) from None
        if request.nonce in self._nonces:
            raise ApiError(grpc.StatusCode.UNAUTHENTICATED, "keeper report replayed (nonce seen)")
        self._nonces[request.nonce] = None
        while len(self._nonces) > NONCES_KEPT:
            self._nonces.popitem(last=False)
