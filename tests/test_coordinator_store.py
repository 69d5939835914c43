"""Run spec values, run creation and the SQLite store's schema versions (no server)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from gpt5os.coordinator import store as store_mod
from gpt5os.coordinator.run_spec import PRESETS, RunSpec, preset_spec, running_version
from gpt5os.coordinator.runs import load_run
from gpt5os.coordinator.store import DB_NAME, SCHEMA_VERSION, Store, StoreError
from gpt5os.coordinator.swarm import open_swarm
from gpt5os.coordinator.testkit import make_run


def test_tiny_preset_defaults() -> None:
    s = preset_spec("tiny", run_id="r")
    assert (s.model.n_layer, s.model.n_embd, s.model.head_size, s.model.vocab_size) == (
        2,
        128,
        64,
        65536,
    )
    assert (s.seq_len, s.batch_size, s.inner_steps, s.compression, s.seed) == (
        128,
        4,
        16,
        "blockwise8",  # 8-bit blockwise with error feedback; "float16", "none" (exact): options
        0,
    )
    i = s.inner
    assert (i.lr, i.min_lr, i.weight_decay, i.beta1, i.beta2, i.eps) == (
        2e-3,
        2e-4,
        0.01,
        0.9,
        0.95,
        1e-8,
    )
    assert (i.warmup_tokens, i.decay_tokens, i.grad_clip) == (8192, 10_000_000, 1.0)
    assert (s.outer.lr, s.outer.momentum, s.outer.nesterov) == (0.7, 0.9, True)
    assert s.min_node_version == running_version() and s.tokenizer == "rwkv-world-v20230424"
    assert (s.matchmaking_time_s, s.averaging_timeout_s, s.spec_version, s.revision) == (
        3.0,
        60.0,
        1,
        1,
    )


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_is_valid_and_round_trips(preset: str) -> None:
    s = preset_spec(preset, run_id="r")
    s.validate()
    assert RunSpec.from_pb(s.to_pb()) == s
    assert RunSpec.from_json(s.to_json()) == s


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="0.1b"):
        preset_spec("huge", run_id="r")


def test_create_run_overrides_and_unknown_setting(tmp_path: Path) -> None:
    spec = make_run(
        tmp_path / "a", n_train=2, seq_len=64, inner_lr=1e-3, outer_momentum=0.8, lease_seconds=99.0
    )
    assert spec.seq_len == 64 and spec.inner.lr == 1e-3 and spec.outer.momentum == 0.8
    cfg = load_run(tmp_path / "a")
    assert cfg.lease_seconds == 99.0 and cfg.spec == spec
    assert cfg.data_path(tmp_path / "a") == (tmp_path / "a" / "data").resolve()
    with pytest.raises(ValueError, match="unknown run setting"):
        make_run(tmp_path / "b", n_train=1, warp_speed=9)


def test_fresh_database_is_at_the_current_schema_version(tmp_path: Path) -> None:
    make_run(tmp_path / "run", n_train=2)
    s = Store(tmp_path / "run" / DB_NAME, readonly=True)
    assert s.schema_version() == SCHEMA_VERSION
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    s.close()


def test_migrations_upgrade_an_older_database_in_place(tmp_path: Path, monkeypatch) -> None:
    make_run(tmp_path / "run", n_train=2)
    path = tmp_path / "run" / DB_NAME
    # a future gpt5os adds a table: the existing run keeps its data and gains the table
    monkeypatch.setattr(
        store_mod, "MIGRATIONS", [*store_mod.MIGRATIONS, "CREATE TABLE extra (x INTEGER)"]
    )
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="needs a migration"):
        Store(path, readonly=True)
    s = Store(path)
    assert s.schema_version() == SCHEMA_VERSION + 1
    assert s.db.execute("SELECT COUNT(*) FROM extra").fetchone()[0] == 0
    assert len(s.shard_states()) == 2
    s.close()


def test_newer_database_is_refused_with_upgrade_advice(tmp_path: Path) -> None:
    make_run(tmp_path / "run", n_train=1)
    path = tmp_path / "run" / DB_NAME
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 5,))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="pip install -U gpt5os"):
        Store(path)


def test_heartbeat_stats_survive_a_flush_and_reopen(tmp_path: Path) -> None:
    run = tmp_path / "run"
    make_run(run, n_train=3)
    sw = open_swarm(run, load_run(run), now=time.time())
    node, _ = sw.join(
        b"k" * 32,
        {"software_version": "0.1.0", "device": "cpu", "hostname": "", "display_name": ""},
        time.time(),
    )
    stats = {
        "tokens_per_second": 12.5,
        "tokens_trained": 640,
        "last_loss": 4.25,
        "outer_round": 3,
        "dht_maddrs": ["/ip4/1.2.3.4/tcp/5"],
    }
    sw.heartbeat(node, stats, time.time())
    sw.flush(time.time())
    sw.store.close()
    again = open_swarm(run, load_run(run), now=time.time(), readonly=True)
    n = again.nodes[node.node_id]
    assert (n.tokens_per_second, n.session_tokens, n.last_loss, n.outer_round) == (
        12.5,
        640,
        4.25,
        3,
    )
    assert n.tokens_trained == 0  # a heartbeat's count is no credit (completed leases are)
    assert n.dht_maddrs == ["/ip4/1.2.3.4/tcp/5"]
    again.store.close()


def test_the_server_checkpointer_moves_the_wal_into_the_database(tmp_path: Path) -> None:
    make_run(tmp_path / "run", n_train=1)
    store = Store(tmp_path / "run" / DB_NAME)
    try:
        store.start_checkpointer(interval_s=0.05)
        size = (tmp_path / "run" / DB_NAME).stat().st_size
        with store.tx():
            store.put_events((i, 0.0, "x", "", "y" * 200) for i in range(1, 2000))
        deadline = time.monotonic() + 30
        while (tmp_path / "run" / DB_NAME).stat().st_size <= size:
            assert time.monotonic() < deadline, "the WAL was never checkpointed"
            time.sleep(0.05)
    finally:
        store.close()
