"""hivemind's side of swarm tokens (common/swarm_token.py): a peer's key, its DHT authorizer, and
the check every averaging member and state source must pass.

- `SwarmKey`: the RSA key a peer makes at start. It is at once its libp2p identity (so its peer
  id derives from it), the key hivemind's authorizer signs DHT requests with, and the key its
  swarm token names: a token names exactly one peer id, and nobody else can use it.
- `SwarmAuthorizer`: hivemind's `TokenAuthorizerBase` (hivemind/utils/auth.py) whose tokens are
  the coordinator's; a DHT built with it answers no request, and trusts no response, from a peer
  without a valid token. The node's main process hands renewed tokens to the DHT's process
  (`install_token`); the coordinator's own DHT makes its tokens itself.
- `MemberCheck`: "does this token admit this peer id now?", used by the averager (node/swarm.py).
- `OwnedRecords`: a DHT record validator. Every record carries its writer's token and the
  writer's signature; its subkey must be the writer's own (its peer id, its node id or its
  hivemind owner marker), and its expiry may not pass the token's by more than
  `MAX_RECORD_TTL_S`: no peer can write, overwrite or outlast another's record.

Imports hivemind: import this module only where a DHT is started.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable
from functools import partial

import hivemind
from cryptography.hazmat.primitives import serialization
from gpt5os.proto import pb
from hivemind.dht.validation import DHTRecord, RecordValidatorBase
from hivemind.p2p import PeerID
from hivemind.p2p.p2p_daemon_bindings.datastructures import crypto_pb2
from hivemind.proto.auth_pb2 import AccessToken
from hivemind.utils.auth import TokenAuthorizerBase
from hivemind.utils.crypto import RSAPrivateKey, RSAPublicKey
from hivemind.utils.serializer import MSGPackSerializer

from .swarm_token import TokenChecker, TokenIssuer, expires_at

log = logging.getLogger(__name__)

SHA256_MULTIHASH = b"\x12\x20"  # multihash code and length of a sha2-256 digest
EXPIRY_MARGIN_S = 1.0
MAX_RECORD_TTL_S = 600.0  # a record may expire at most this long after its writer's token  # a token this close to its expiry is not used for a new request


class SwarmKey:
    """A peer's RSA key: its libp2p identity, its DHT request signatures, its swarm token's key."""

    def __init__(self, private_key: RSAPrivateKey | None = None) -> None:
        self.private_key = private_key or RSAPrivateKey()
        self.public_key = self.private_key.get_public_key().to_bytes()  # OpenSSH, as in tokens
        self.peer_id = peer_id_of(self.public_key)
        self._dir: str | None = None

    def identity_path(self) -> str:
        """A 0600 file holding the key the way p2pd reads its identity (`-id`); removed by
        `close()`. hivemind's P2P.generate_identity writes the same protobuf."""
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="gpt5os-swarm-key-")
        path = os.path.join(self._dir, "identity.key")
        if not os.path.exists(path):
            message = crypto_pb2.PrivateKey(
                key_type=crypto_pb2.KeyType.RSA, data=self.private_key.to_bytes()
            )
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(message.SerializeToString())
        return path

    def dht_kwargs(self) -> dict:
        """hivemind.DHT keyword arguments that make this key the peer's identity."""
        return dict(identity_path=self.identity_path(), check_if_identity_free=False)

    def close(self) -> None:
        if self._dir is not None:
            for name in os.listdir(self._dir):
                os.unlink(os.path.join(self._dir, name))
            os.rmdir(self._dir)
            self._dir = None


def peer_id_of(public_key: bytes) -> PeerID:
    """The libp2p peer id of an RSA key given in OpenSSH form (libp2p's peer id spec: the
    sha256 multihash of the protobuf-wrapped DER public key)."""
    key = serialization.load_ssh_public_key(public_key)
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    wrapped = crypto_pb2.PublicKey(key_type=crypto_pb2.RSA, data=der).SerializeToString()
    return PeerID(SHA256_MULTIHASH + hashlib.sha256(wrapped).digest())


def to_access_token(token: pb.SwarmToken) -> AccessToken:
    return AccessToken.FromString(token.SerializeToString())


def to_swarm_token(token: AccessToken) -> pb.SwarmToken:
    return pb.SwarmToken.FromString(token.SerializeToString())


class MemberCheck:
    """Whether a serialized token admits a given peer now (coordinator's signature, expiry, and
    the token's key being that peer's identity)."""

    def __init__(self, coordinator_public_key: bytes, clock: Callable[[], float] | None = None):
        self.checker = TokenChecker(coordinator_public_key, clock)
        self._peer_ids: dict[bytes, bytes] = {}

    def problem(self, token_bytes: object, peer_id: PeerID, name: object = None) -> str:
        """Why the token does not admit `peer_id` ("" when it does); with `name`, the node id
        the peer gives itself must be the one its token names."""
        why = self.checker.problem_bytes(token_bytes)
        if why:
            return why
        token = pb.SwarmToken.FromString(token_bytes)  # type: ignore[arg-type]
        if name is not None and name != token.username:
            return f"calls itself {str(name)[:40]!r} but its swarm token names {token.username!r}"
        owner = self._peer_ids.get(token.public_key)
        if owner is None:
            try:
                owner = peer_id_of(token.public_key).to_bytes()
            except (ValueError, TypeError, IndexError):
                owner = b""
            if len(self._peer_ids) > 4096:
                self._peer_ids.clear()
            self._peer_ids[token.public_key] = owner
        if owner != peer_id.to_bytes():
            return f"swarm token of {token.username!r} belongs to another peer"
        return ""


class SwarmAuthorizer(TokenAuthorizerBase):
    """hivemind's token authorizer with coordinator-signed tokens.

    :param key: this peer's SwarmKey (requests and responses are signed with it)
    :param coordinator_public_key: raw Ed25519 key that signs every valid token
    :param token: this peer's current token (renewed with `install_token`)
    :param issuer: the coordinator's own DHT makes its tokens itself instead
    """

    def __init__(
        self,
        key: SwarmKey,
        coordinator_public_key: bytes,
        *,
        token: pb.SwarmToken | None = None,
        issuer: TokenIssuer | None = None,
    ) -> None:
        super().__init__(key.private_key)
        self.checker = TokenChecker(coordinator_public_key)
        self.public_key_bytes = key.public_key
        self.issuer = issuer
        self.current = to_access_token(token) if token is not None else None

    async def get_token(self) -> AccessToken:
        if self.issuer is not None:
            return to_access_token(self.issuer.issue("coordinator", self.public_key_bytes))
        if self.current is None:
            raise PermissionError("no swarm token: the coordinator has not admitted this peer")
        return self.current

    def is_token_valid(self, access_token: AccessToken) -> bool:
        why = self.checker.problem(to_swarm_token(access_token))
        if why:
            log.debug("DHT peer refused: %s", why)
        return not why

    def does_token_need_refreshing(self, access_token: AccessToken) -> bool:
        if self.issuer is not None:
            return expires_at(to_swarm_token(access_token)) - time.time() < (
                self.issuer.lifetime_s / 2
            )
        return access_token is not self.current or (
            expires_at(to_swarm_token(access_token)) - time.time() < EXPIRY_MARGIN_S
        )

    def install(self, token: pb.SwarmToken) -> None:
        self.current = to_access_token(token)


class OwnedRecords(RecordValidatorBase):
    """Signs our records with our token and key; accepts a record only from its owner (see the
    module doc). Validity does not depend on the time of reading: hivemind drops a whole
    dictionary when one entry fails, so an entry must not turn invalid before it expires."""

    def __init__(self, authorizer: SwarmAuthorizer) -> None:
        self.authorizer = authorizer
        self.checker = authorizer.checker
        self._owners: dict[bytes, tuple[bytes, bytes]] = {}  # public key -> (peer id, marker)

    @property
    def priority(self) -> int:
        return 100  # signs last, over what hivemind's own validators appended; checks first

    @staticmethod
    def _payload(record: DHTRecord, value: bytes, token: bytes) -> bytes:
        return MSGPackSerializer.dumps(
            [record.key, record.subkey, value, record.expiration_time, token]
        )

    def sign_value(self, record: DHTRecord) -> bytes:
        token = self.authorizer.current
        token_bytes = token.SerializeToString() if token is not None else b""
        signature = self.authorizer._local_private_key.sign(
            self._payload(record, record.value, token_bytes)
        )
        return MSGPackSerializer.dumps([record.value, token_bytes, signature])

    def strip_value(self, record: DHTRecord) -> bytes:
        return MSGPackSerializer.loads(record.value)[0]

    def validate(self, record: DHTRecord) -> bool:
        try:
            value, token_bytes, signature = MSGPackSerializer.loads(record.value)
            token = pb.SwarmToken.FromString(token_bytes)
            subkey = MSGPackSerializer.loads(record.subkey)
        except Exception:  # not ours, or garbage
            return False
        if not token_bytes or not self.checker._signed(token):
            return False
        if record.expiration_time > expires_at(token) + MAX_RECORD_TTL_S:
            return False
        if not self._owns(token, subkey):
            return False
        try:
            key = RSAPublicKey.from_bytes(token.public_key)
        except (ValueError, TypeError, IndexError):
            return False
        return key.verify(self._payload(record, value, token_bytes), signature)

    def _owns(self, token: pb.SwarmToken, subkey: object) -> bool:
        """The subkey names the token's holder: its node id, peer id or hivemind owner marker."""
        if isinstance(subkey, str):
            return subkey == token.username
        if not isinstance(subkey, bytes):
            return False
        owner = self._owners.get(token.public_key)
        if owner is None:
            try:
                peer = peer_id_of(token.public_key).to_bytes()
            except (ValueError, TypeError, IndexError):
                peer = b""
            owner = (peer, b"[owner:" + token.public_key + b"]")
            if len(self._owners) > 4096:
                self._owners.clear()
            self._owners[token.public_key] = owner
        return subkey in owner


def install_token(dht: hivemind.DHT, token: pb.SwarmToken) -> None:
    """Hand a renewed token to `dht`'s authorizer, in the DHT's own process."""
    dht.run_coroutine(partial(_install, token.SerializeToString()))


async def _install(token_bytes: bytes, _dht: hivemind.DHT, node) -> None:
    authorizer = node.protocol.authorizer
    if isinstance(authorizer, SwarmAuthorizer):
        authorizer.install(pb.SwarmToken.FromString(token_bytes))
