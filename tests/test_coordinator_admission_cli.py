"""`gpt5os-coordinator init --admission / invite / allow / unban` and `gpt5os-node join --invite`
as a person runs them (real processes): the token alone on stdout, one error line on bad input."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from gpt5os.common.request_signing import node_id_of
from gpt5os.coordinator.store import DB_NAME, Store
from gpt5os.coordinator.testkit import make_data_dir

pytestmark = pytest.mark.timeout(300)


def tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("gpt5os-coordinator"), *args], capture_output=True, text=True, timeout=120
    )


def one_error_line(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert lines[0].startswith("Error: ") and r.stdout == ""
    for word in words:
        assert word in lines[0], lines[0]


def rows(run_dir: Path, sql: str) -> list[tuple]:
    store = Store(run_dir / DB_NAME, readonly=True)
    try:
        return [tuple(r) for r in store.db.execute(sql)]
    finally:
        store.close()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """An invite-only run and an open one (the default), made by `init`."""
    base = tmp_path_factory.mktemp("admission")
    make_data_dir(base / "data", n_train=2, shard_tokens=256)
    r = cli("init", "--dir", str(base / "closed"), "--data", str(base / "data"),
            "--admission", "invite-only")  # fmt: skip
    assert r.returncode == 0 and "invite-only" in r.stdout, r.stderr
    assert cli("init", "--dir", str(base / "open"), "--data", str(base / "data")).returncode == 0
    return base / "closed", base / "open"


def test_init_stores_the_mode_in_the_run(runs) -> None:
    closed, open_ = runs
    assert json.loads((closed / "run.json").read_text())["admission"] == "invite-only"
    assert json.loads((open_ / "run.json").read_text())["admission"] == "open"
    r = cli("init", "--dir", str(closed.parent / "x"), "--data", str(closed.parent / "data"),
            "--admission", "closed")  # fmt: skip
    assert r.returncode == 2 and "invite-only" in r.stderr and "Traceback" not in r.stderr


def test_invite_prints_the_token_alone_and_stores_only_its_hash(runs) -> None:
    closed, _ = runs
    r = cli("invite", "--dir", str(closed), "--uses", "3", "--expires", "never")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert re.fullmatch(r"gpt5os-invite-[A-Za-z0-9_-]{32}\n", r.stdout), r.stdout
    token = r.stdout.strip()
    digest = hashlib.sha256(token.encode()).hexdigest()
    sql = f"SELECT max_uses, uses, expires_unix FROM invites WHERE token_hash='{digest}'"
    assert rows(closed, sql) == [(3, 0, None)]
    r = cli("invite", "--dir", str(closed), "--expires", "2h")
    (created, expires), *_ = rows(
        closed,
        "SELECT created_unix, expires_unix FROM invites WHERE token_hash="
        f"'{hashlib.sha256(r.stdout.strip().encode()).hexdigest()}'",
    )
    assert expires - created == 7200


def test_invite_errors_are_one_line(runs, tmp_path: Path) -> None:
    closed, open_ = runs
    one_error_line(cli("invite", "--dir", str(open_)), "is open", "--admission invite-only")
    one_error_line(cli("invite", "--dir", str(closed), "--expires", "7 days"), "--expires", "7d")
    one_error_line(cli("invite", "--dir", str(tmp_path / "none")), "holds no run")


def test_allow_by_node_id_or_public_key(runs) -> None:
    closed, open_ = runs
    key = os.urandom(32)
    r = cli("allow", "--dir", str(closed), key.hex())
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"gpt5os-coordinator: allowed node {node_id_of(key)}\n"
    r = cli("allow", "--dir", str(closed), node_id_of(key))
    assert r.returncode == 0 and "admitted already" in r.stdout
    assert rows(closed, f"SELECT how FROM admitted WHERE node_id='{node_id_of(key)}'") == [
        ("allowed by the maintainer",)
    ]
    r = cli("allow", "--dir", str(open_), node_id_of(key))
    assert r.returncode == 0 and "every node is admitted anyway" in r.stdout
    one_error_line(cli("allow", "--dir", str(closed), "abc"), "gpt5os-node identity")


def test_unban_by_unique_prefix_and_refusals(runs) -> None:
    closed, _ = runs
    a, b, c = "ab" + "1" * 18, "ab" + "2" * 18, "cd" + "3" * 18
    store = Store(closed / DB_NAME)
    try:
        with store.tx():
            for node_id in (a, b, c):
                store.add_ban(node_id, 0.0, "spam")
    finally:
        store.close()
    one_error_line(cli("allow", "--dir", str(closed), c), f"node {c} is banned", "unban")
    one_error_line(cli("unban", "--dir", str(closed), "ab"), "matches 2 banned nodes")
    one_error_line(cli("unban", "--dir", str(closed), "ef"), "no banned node 'ef'")
    r = cli("unban", "--dir", str(closed), "ab2")
    assert (
        r.returncode == 0
        and r.stdout == f"gpt5os-coordinator: unbanned node {b}: it may join again\n"
    )
    assert sorted(rows(closed, "SELECT node_id FROM bans")) == [(a,), (c,)]
    one_error_line(cli("unban", "--dir", str(closed), "ab2"), "no banned node")


def test_node_join_offers_invite() -> None:
    r = subprocess.run(
        [tool("gpt5os-node"), "join", "--help"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and "--invite TOKEN" in r.stdout
