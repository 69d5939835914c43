"""Swarm tokens (common/swarm_token.py, swarm_auth.py): made, checked and expired with an
injected clock; bound to one peer id; hivemind's authorizer built on them. Pure logic."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpt5os.common.swarm_auth import (
    MAX_RECORD_TTL_S,
    MemberCheck,
    OwnedRecords,
    SwarmAuthorizer,
    SwarmKey,
    to_access_token,
)
from gpt5os.common.swarm_token import (
    MAX_TOKEN_BYTES,
    TokenChecker,
    TokenIssuer,
    needs_renewal,
    public_bytes,
)
from gpt5os.proto import pb
from hivemind.dht.validation import DHTRecord
from hivemind.utils.serializer import MSGPackSerializer

LIFETIME = 600.0


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def keys() -> tuple[SwarmKey, SwarmKey]:
    return SwarmKey(), SwarmKey()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def issuer(clock: Clock) -> TokenIssuer:
    return TokenIssuer(Ed25519PrivateKey.generate(), LIFETIME, clock)


def test_a_fresh_token_admits_until_it_expires(issuer, clock, keys) -> None:
    token = issuer.issue("node-a", keys[0].public_key)
    checker = TokenChecker(issuer.public_key, clock)
    assert checker.problem(token) == ""
    clock.now += LIFETIME - 0.01
    assert checker.problem(token) == ""
    clock.now += 0.02
    assert "expired" in checker.problem(token)


@pytest.mark.parametrize(
    "field, value",
    [("username", "node-b"), ("public_key", b"ssh-rsa AAAA"), ("expiration_time", "9e12")],
)
def test_a_tampered_token_is_refused(issuer, clock, keys, field, value) -> None:
    token = issuer.issue("node-a", keys[0].public_key)
    setattr(token, field, value)
    assert "not signed by this run's coordinator" in TokenChecker(issuer.public_key, clock).problem(
        token
    )


def test_another_coordinators_token_is_refused(issuer, clock, keys) -> None:
    other = TokenIssuer(Ed25519PrivateKey.generate(), LIFETIME, clock)
    token = other.issue("node-a", keys[0].public_key)
    assert "not signed" in TokenChecker(issuer.public_key, clock).problem(token)


def test_missing_garbage_and_oversized_tokens_are_refused(issuer, clock) -> None:
    checker = TokenChecker(issuer.public_key, clock)
    assert checker.problem(None) == "no swarm token"
    assert checker.problem(pb.SwarmToken()) == "no swarm token"
    assert checker.problem_bytes(None) == "no swarm token"
    assert checker.problem_bytes("text") == "no swarm token"
    assert checker.problem_bytes(b"\xff\xff\xff") == "unreadable swarm token"
    assert checker.problem_bytes(b"x" * (MAX_TOKEN_BYTES + 1)) == "swarm token too large"
    bad_expiry = pb.SwarmToken(username="a", expiration_time="soon", signature=b"s")
    assert "no readable expiry" in checker.problem(bad_expiry)
    nan_expiry = pb.SwarmToken(username="a", expiration_time="nan", signature=b"s")
    assert "no readable expiry" in checker.problem(nan_expiry)


def test_renewal_is_due_after_half_the_life(issuer, clock, keys) -> None:
    token = issuer.issue("node-a", keys[0].public_key)
    received = clock.now
    assert not needs_renewal(token, received, clock.now + LIFETIME * 0.49)
    assert needs_renewal(token, received, clock.now + LIFETIME * 0.5)
    assert needs_renewal(None, received, clock.now)


def test_a_short_lived_token_is_renewed_two_intervals_before_it_ends(issuer, clock, keys) -> None:
    """A holder that asks every 10 s (margin 20 s) asks at the latest 20 s before the end,
    however short the token's life; with no margin, at half."""
    token = issuer.issue("node-a", keys[0].public_key)
    received = clock.now
    assert not needs_renewal(token, received, received + 100.0, margin_s=20.0)
    short = dataclasses.replace(issuer, lifetime_s=30.0).issue("node-a", keys[0].public_key)
    assert not needs_renewal(short, received, received + 9.9, margin_s=20.0)
    assert needs_renewal(short, received, received + 10.0, margin_s=20.0)
    assert not needs_renewal(short, received, received + 10.0)  # half: 15 s


def test_a_token_admits_only_the_peer_whose_key_it_names(issuer, clock, keys) -> None:
    mine, theirs = keys
    token = issuer.issue("node-a", mine.public_key).SerializeToString()
    members = MemberCheck(issuer.public_key, clock)
    assert members.problem(token, mine.peer_id) == ""
    assert members.problem(token, mine.peer_id, "node-a") == ""
    # copied by another peer (tokens travel in the clear): useless to it
    assert "belongs to another peer" in members.problem(token, theirs.peer_id)
    assert "names 'node-a'" in members.problem(token, mine.peer_id, "node-b")
    assert members.problem(None, theirs.peer_id) == "no swarm token"
    clock.now += LIFETIME + 1
    assert "expired" in members.problem(token, mine.peer_id)


def test_the_authorizer_trusts_only_valid_tokens_and_uses_the_newest(issuer, clock, keys) -> None:
    first = issuer.issue("node-a", keys[0].public_key)
    authorizer = SwarmAuthorizer(keys[0], issuer.public_key, token=first)
    authorizer.checker.clock = clock
    assert authorizer.is_token_valid(to_access_token(first))
    forged = TokenIssuer(Ed25519PrivateKey.generate(), LIFETIME, clock).issue("x", b"k")
    assert not authorizer.is_token_valid(to_access_token(forged))
    current = asyncio.run(authorizer.get_token())
    assert current.username == "node-a"
    renewed = issuer.issue("node-a", keys[0].public_key)
    authorizer.install(renewed)
    assert authorizer.does_token_need_refreshing(current)  # an older token than installed
    assert asyncio.run(authorizer.get_token()).expiration_time == renewed.expiration_time


def test_an_unadmitted_authorizer_has_no_token(issuer, keys) -> None:
    authorizer = SwarmAuthorizer(keys[0], issuer.public_key)
    with pytest.raises(PermissionError, match="not admitted"):
        asyncio.run(authorizer.get_token())


def test_the_coordinators_own_dht_makes_its_tokens(clock, keys) -> None:
    issuer = TokenIssuer(Ed25519PrivateKey.generate(), LIFETIME, clock)
    authorizer = SwarmAuthorizer(keys[1], public_bytes(issuer.key), issuer=issuer)
    token = asyncio.run(authorizer.get_token())
    assert token.username == "coordinator" and token.public_key == keys[1].public_key
    authorizer.checker.clock = clock
    assert authorizer.is_token_valid(token)


# -- owner-signed DHT records (swarm_auth.OwnedRecords) ----------------------------------------


def _validator(key: SwarmKey, issuer: TokenIssuer, name: str) -> OwnedRecords:
    authorizer = SwarmAuthorizer(key, issuer.public_key, token=issuer.issue(name, key.public_key))
    return OwnedRecords(authorizer)


def _record(subkey: object, value: object = "v", expires: float = 1_000_100.0) -> DHTRecord:
    return DHTRecord(
        b"key-id", MSGPackSerializer.dumps(subkey), MSGPackSerializer.dumps(value), expires
    )


def test_a_record_is_valid_only_from_its_owner(issuer, keys) -> None:
    mine, theirs = keys
    writer = _validator(mine, issuer, "node-a")
    reader = _validator(theirs, issuer, "node-b")
    for subkey in (mine.peer_id.to_bytes(), "node-a", b"[owner:" + mine.public_key + b"]"):
        record = _record(subkey)
        signed = dataclasses.replace(record, value=writer.sign_value(record))
        assert reader.validate(signed), subkey
        assert reader.strip_value(signed) == record.value
    # another's subkey (peer id, node id), a plain value: not ours to write
    for subkey in (theirs.peer_id.to_bytes(), "node-b", None):
        record = _record(subkey)
        assert not reader.validate(dataclasses.replace(record, value=writer.sign_value(record)))


def test_a_tampered_unsigned_or_outliving_record_is_refused(issuer, clock, keys) -> None:
    mine, theirs = keys
    writer = _validator(mine, issuer, "node-a")
    reader = _validator(theirs, issuer, "node-b")
    record = _record("node-a")
    signed = dataclasses.replace(record, value=writer.sign_value(record))
    value, token, signature = MSGPackSerializer.loads(signed.value)
    tampered = MSGPackSerializer.dumps([MSGPackSerializer.dumps("w"), token, signature])
    assert not reader.validate(dataclasses.replace(signed, value=tampered))
    assert not reader.validate(dataclasses.replace(signed, expiration_time=1e12))
    assert not reader.validate(record)  # unsigned
    # a token of another coordinator
    stranger = _validator(mine, TokenIssuer(Ed25519PrivateKey.generate(), LIFETIME, clock), "x")
    forged = _record("x")
    assert not reader.validate(dataclasses.replace(forged, value=stranger.sign_value(forged)))
    # a record may expire at most MAX_RECORD_TTL_S after its writer's token
    token_expiry = clock.now + LIFETIME
    late = _record("node-a", expires=token_expiry + MAX_RECORD_TTL_S + 1)
    assert not reader.validate(dataclasses.replace(late, value=writer.sign_value(late)))
    ok = _record("node-a", expires=token_expiry + MAX_RECORD_TTL_S - 1)
    assert reader.validate(dataclasses.replace(ok, value=writer.sign_value(ok)))


# -- the node's side: renewal through heartbeats (node/swarm_access.py, node/heartbeat.py) ------


def test_heartbeats_ask_for_a_new_token_after_half_its_life(issuer, clock, keys) -> None:
    import threading  # noqa: PLC0415

    from gpt5os.node.heartbeat import Heartbeat  # noqa: PLC0415
    from gpt5os.node.progress import NodeProgress  # noqa: PLC0415
    from gpt5os.node.swarm_access import SwarmAccess  # noqa: PLC0415

    class Client:
        def __init__(self) -> None:
            self.asked: list[bytes] = []

        def heartbeat(self, stats, swarm_public_key: bytes = b""):
            self.asked.append(swarm_public_key)
            token = issuer.issue("node-a", swarm_public_key) if swarm_public_key else None
            return pb.HeartbeatResponse(swarm_token=token)

    access = SwarmAccess(
        keys[0], issuer.public_key, issuer.issue("node-a", keys[0].public_key), clock
    )
    handed_on = []
    access.on_renewal(handed_on.append)
    client = Client()
    beat = Heartbeat(
        client, NodeProgress(), interval_s=1.0, maddrs=list, stop=threading.Event(),
        swarm_access=access,
    )  # fmt: skip
    first = access.token
    beat.beat()
    clock.now += LIFETIME * 0.4
    beat.beat()
    assert client.asked == [b"", b""] and access.token is first and not handed_on
    clock.now += LIFETIME * 0.1
    beat.beat()
    assert client.asked[-1] == keys[0].public_key
    assert handed_on == [access.token] and access.token is not first
    beat.beat()  # renewed: not asked again until half the new token's life
    assert client.asked[-1] == b""
