"""Admission rules as pure logic, and over a real SQLite store with an explicit clock: who may
join an open or invite-only run, what an invite admits, and that a refusal changes nothing."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import grpc
import pytest
from gpt5os.coordinator import admission as adm
from gpt5os.coordinator.admission import Invite, check_invite
from gpt5os.coordinator.records import ApiError
from gpt5os.coordinator.runs import load_run
from gpt5os.coordinator.store import DB_NAME
from gpt5os.coordinator.swarm import Swarm, node_id_of, open_swarm
from gpt5os.coordinator.testkit import make_run

T0 = 1_000_000.0
INFO = {"software_version": "0.1.0", "device": "cpu", "hostname": "h", "display_name": "n"}


# -- pure --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("2w", 1209600),
     ("1h30m", 5400), ("1.5h", 5400), (" 7D ", 604800), ("never", None)],
)  # fmt: skip
def test_durations(text: str, seconds: float | None) -> None:
    assert adm.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "5x", "h", "1h 30m", "-1h", "0s", "1h30"])
def test_bad_durations_say_what_is_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="e.g. 90s, 30m"):
        adm.parse_duration(text)


def test_a_node_is_named_by_its_id_or_its_public_key() -> None:
    key = os.urandom(32)
    node_id = node_id_of(key)
    assert adm.node_id_from(node_id) == node_id
    assert adm.node_id_from(key.hex()) == node_id
    assert adm.node_id_from(key.hex().upper()) == node_id
    assert adm.node_id_from(base64.b64encode(key).decode()) == node_id
    for bad in ("", node_id[:-1], node_id.upper(), "zz", base64.b64encode(key[:31]).decode()):
        with pytest.raises(ValueError, match="gpt5os-node identity"):
            adm.node_id_from(bad)


def _invite(expires: float | None = T0 + 60, max_uses: int = 2, uses: int = 0) -> Invite:
    return Invite("h", T0, expires, max_uses, uses)


def test_check_invite() -> None:
    assert check_invite(_invite(), T0) is None
    assert check_invite(_invite(expires=None), T0 + 1e9) is None
    assert check_invite(_invite(uses=1), T0 + 59.9) is None
    for invite, now, words in [
        (None, T0, "not valid for this run"),
        (_invite(), T0 + 60, "expired at"),  # the expiry itself is too late
        (_invite(uses=2), T0, "already used 2 times"),
        (_invite(max_uses=1, uses=1), T0, "already used once"),
    ]:
        error = check_invite(invite, now)
        assert error is not None and error.code is grpc.StatusCode.PERMISSION_DENIED
        assert words in error.message and "gpt5os-coordinator invite" in error.message


def test_tokens_are_fresh_and_hashed() -> None:
    a, b = adm.new_token(), adm.new_token()
    assert a != b and a.startswith(adm.TOKEN_PREFIX) and len(a) < 128
    assert adm.token_hash(a) == adm.token_hash(f" {a}\n") != adm.token_hash(b)


def test_unknown_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="open, invite-only"):
        adm.check_mode("closed")


# -- over the run's store ----------------------------------------------------------------------


@pytest.fixture
def sw(tmp_path: Path):
    make_run(tmp_path / "run", n_train=2, shard_tokens=64, admission="invite-only")
    swarm = open_swarm(tmp_path / "run", load_run(tmp_path / "run"), now=T0)
    yield swarm
    swarm.store.close()


def state(sw: Swarm) -> tuple:
    """Everything a Join could change, as stored."""
    db = sw.store.db
    return (
        sw.store.nodes(),
        [tuple(r) for r in db.execute("SELECT * FROM invites ORDER BY token_hash")],
        [tuple(r) for r in db.execute("SELECT * FROM admitted ORDER BY node_id")],
        [tuple(r) for r in sw.store.events(1000)],
        sorted(sw.nodes),
        len(sw.events),
    )


def refused(sw: Swarm, key: bytes, invite: str = "", now: float = T0) -> str:
    before = state(sw)
    with pytest.raises(ApiError) as info:
        sw.join(key, INFO, now, invite=invite)
    assert info.value.code is grpc.StatusCode.PERMISSION_DENIED
    assert state(sw) == before, "a refused Join changed the run"
    return info.value.message


def test_open_run_admits_anyone(tmp_path: Path) -> None:
    make_run(tmp_path / "run", n_train=2, shard_tokens=64)
    sw = open_swarm(tmp_path / "run", load_run(tmp_path / "run"), now=T0)
    try:
        assert sw.admission.mode == adm.OPEN
        node, _ = sw.join(os.urandom(32), INFO, T0)
        assert node.state == "active"
        assert not sw.admission.is_admitted(node.node_id)  # open runs keep no list
    finally:
        sw.store.close()


def test_invite_only_refuses_a_stranger_with_a_message_to_act_on(sw: Swarm) -> None:
    message = refused(sw, os.urandom(32))
    assert "invite-only" in message and "gpt5os-coordinator invite" in message
    assert "--invite TOKEN" in message and "gpt5os-node identity" in message


def test_an_invite_admits_its_keys_for_good_and_only_as_often_as_it_allows(sw: Swarm) -> None:
    token = sw.admission.create_invite(T0, uses=2, expires_s=3600)
    a, b, c = os.urandom(32), os.urandom(32), os.urandom(32)
    assert "not valid" in refused(sw, a, invite=token + "x")
    node, _ = sw.join(a, INFO, T0 + 1, invite=token)
    assert node.state == "active" and sw.admission.is_admitted(node.node_id)
    digest = adm.token_hash(token)[:12]
    assert sw.events[-1][2:] == (
        "joined",
        node.node_id,
        f"n on cpu (admitted with invite {digest})",
    )
    sw.join(a, INFO, T0 + 2, invite=token)  # an admitted key's invite is not used again
    sw.join(a, INFO, T0 + 3)  # nor needed
    assert sw.admission.invite(adm.token_hash(token)).uses == 1
    sw.join(b, INFO, T0 + 4, invite=token)
    assert "already used 2 times" in refused(sw, c, invite=token)
    sw.join(a, INFO, T0 + 5, invite=token)  # a used-up invite does not lock out its own keys


def test_an_expired_invite_admits_nobody(sw: Swarm) -> None:
    token = sw.admission.create_invite(T0, uses=1, expires_s=60)
    assert "expired" in refused(sw, os.urandom(32), invite=token, now=T0 + 60)
    sw.join(os.urandom(32), INFO, T0 + 59, invite=token)


def test_an_invite_does_not_get_a_banned_key_in_nor_is_used_by_it(sw: Swarm) -> None:
    token = sw.admission.create_invite(T0, uses=1, expires_s=None)
    key = os.urandom(32)
    sw.apply_ban(node_id_of(key), "spam", T0)
    assert "banned" in refused(sw, key, invite=token)
    assert sw.admission.invite(adm.token_hash(token)).uses == 0


def test_an_allowed_key_joins_without_an_invite(sw: Swarm) -> None:
    key = os.urandom(32)
    assert sw.admission.allow(node_id_of(key), T0) is True
    assert sw.admission.allow(node_id_of(key), T0) is False
    assert sw.join(key, INFO, T0)[0].state == "active"


def test_admission_survives_a_restart_and_the_token_is_never_stored(sw: Swarm) -> None:
    token = sw.admission.create_invite(T0, uses=1, expires_s=None)
    key = os.urandom(32)
    sw.join(key, INFO, T0, invite=token)
    run_dir = sw.store.path.parent
    sw.store.close()
    again = open_swarm(run_dir, load_run(run_dir), now=T0 + 10)
    try:
        again.join(key, INFO, T0 + 10)  # no invite needed after the restart either
        assert "already used once" in refused(again, os.urandom(32), invite=token, now=T0 + 10)
    finally:
        again.store.close()
    secret = token.removeprefix(adm.TOKEN_PREFIX).encode()
    for name in (DB_NAME, DB_NAME + "-wal"):
        path = run_dir / name
        assert not path.exists() or secret not in path.read_bytes()


def test_a_use_counted_through_one_connection_is_seen_by_another(sw: Swarm) -> None:
    """The server reads invites from the database on each Join, never from a copy in memory:
    a second connection (the CLI's, a restarted server's) sees the use at once."""
    token = sw.admission.create_invite(T0, uses=1, expires_s=None)
    run_dir = sw.store.path.parent
    other = open_swarm(run_dir, load_run(run_dir), now=T0)
    try:
        sw.join(os.urandom(32), INFO, T0, invite=token)
        with pytest.raises(ApiError, match="already used once"):
            other.join(os.urandom(32), INFO, T0, invite=token)
    finally:
        other.store.close()


def test_unban_lifts_the_ban_through_the_store(sw: Swarm) -> None:
    key = os.urandom(32)
    sw.admission.allow(node_id_of(key), T0)
    node, _ = sw.join(key, INFO, T0)
    with sw.store.tx():
        sw.store.add_ban(node.node_id, T0, "spam")
    sw.poll_control(T0 + 1)
    assert node.state == "banned"
    assert "banned" in refused(sw, key)
    with sw.store.tx():
        sw.store.remove_ban(node.node_id)
    sw.poll_control(T0 + 2)
    assert node.state == "left" and node.node_id not in sw.bans
    assert sw.events[-1][2:4] == ("unbanned", node.node_id)
    sw.poll_control(T0 + 3)  # lifted once
    assert [e[2] for e in sw.events].count("unbanned") == 1
    assert sw.join(key, INFO, T0 + 4)[0].state == "active"  # still admitted: no invite needed
