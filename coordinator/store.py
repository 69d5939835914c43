"""The coordinator's durable state: one SQLite file in WAL mode inside the run directory.

Durability contract (what a `kill -9` of the coordinator can and cannot lose):
- Joins, leases, completions, leaves, bans, round reports and state changes are committed
  before the RPC that caused them answers. WAL with `synchronous=NORMAL` makes a committed
  transaction survive a crash of the process (only a power loss can drop the last few, which a
  restarted swarm repairs: leases expire, nodes re-report).
- Heartbeat stats (tokens/s, tokens trained, last loss, last seen) and lease deadline extensions
  are kept in memory and written in one transaction every `flush_interval_s` (~1 s): one fsync-free
  commit per second instead of one per heartbeat, which is what lets one small machine hold
  10,000 nodes. A crash loses at most that second of stats; on restart every lease gets a fresh
  term (`ShardScheduler.extend_all`), so no lease is lost because its extension was not written.

Readers (`gpt5os-coordinator status --dir`) open the same file while the server runs: WAL lets
them read a consistent view without blocking the writer. No torch here.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gpt5os.coordinator.scheduler import ShardState, ShardStatus

DB_NAME = "coordinator.sqlite"
SCHEMA_VERSION = 3

# MIGRATIONS[i] takes a database from schema version i to i+1. Never edit a released entry:
# append a new one (and bump SCHEMA_VERSION) so existing run directories upgrade in place.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE shards (
        shard_id TEXT PRIMARY KEY, split TEXT NOT NULL, tokens INTEGER NOT NULL,
        size_bytes INTEGER NOT NULL, sha256 TEXT NOT NULL, path TEXT NOT NULL, ord INTEGER NOT NULL);
    CREATE TABLE shard_state (
        shard_id TEXT PRIMARY KEY, epoch INTEGER NOT NULL, status TEXT NOT NULL,
        node_id TEXT NOT NULL, deadline REAL NOT NULL, queue_pos INTEGER NOT NULL);
    CREATE TABLE completions (
        epoch INTEGER NOT NULL, shard_id TEXT NOT NULL, node_id TEXT NOT NULL,
        tokens_trained INTEGER NOT NULL, mean_loss REAL, unix REAL NOT NULL,
        PRIMARY KEY (epoch, shard_id));
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY, public_key BLOB NOT NULL, token_hash TEXT NOT NULL,
        state TEXT NOT NULL, display_name TEXT NOT NULL, device TEXT NOT NULL,
        hostname TEXT NOT NULL, software_version TEXT NOT NULL, joined_unix REAL NOT NULL,
        last_seen_unix REAL NOT NULL, tokens_per_second REAL NOT NULL,
        tokens_trained INTEGER NOT NULL, session_tokens INTEGER NOT NULL, last_loss REAL,
        outer_round INTEGER NOT NULL, shards_done INTEGER NOT NULL, rounds INTEGER NOT NULL,
        dht_maddrs TEXT NOT NULL);
    CREATE TABLE bans (node_id TEXT PRIMARY KEY, unix REAL NOT NULL, reason TEXT NOT NULL);
    CREATE TABLE round_reports (
        round INTEGER NOT NULL, node_id TEXT NOT NULL, peer_node_ids TEXT NOT NULL,
        tokens INTEGER NOT NULL, mean_loss REAL NOT NULL, duration_s REAL NOT NULL,
        averaging_s REAL NOT NULL, params_sha256 TEXT NOT NULL, val_loss REAL,
        group_tokens INTEGER NOT NULL, unix REAL NOT NULL, PRIMARY KEY (round, node_id));
    CREATE TABLE rounds (
        round INTEGER PRIMARY KEY, first_unix REAL NOT NULL, finished_unix REAL,
        loss_tokens INTEGER, loss REAL, val_loss REAL);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY, unix REAL NOT NULL, kind TEXT NOT NULL, node_id TEXT NOT NULL,
        message TEXT NOT NULL);
    CREATE TABLE throughput (unix REAL PRIMARY KEY, tokens_per_second REAL NOT NULL);
    """,
    # 1 -> 2: certified round digests (the keeper's reports, or the nodes' majority)
    """
    CREATE TABLE certified (
        round INTEGER PRIMARY KEY, tokens INTEGER NOT NULL, params_sha256 TEXT NOT NULL,
        source TEXT NOT NULL, unix REAL NOT NULL);
    """,
    # 2 -> 3: admission (coordinator/admission.py): invites (hashed) and admitted keys
    """
    CREATE TABLE invites (
        token_hash TEXT PRIMARY KEY, created_unix REAL NOT NULL, expires_unix REAL,
        max_uses INTEGER NOT NULL, uses INTEGER NOT NULL);
    CREATE TABLE admitted (node_id TEXT PRIMARY KEY, unix REAL NOT NULL, how TEXT NOT NULL);
    """,
]

NODE_COLUMNS = (
    "node_id public_key token_hash state display_name device hostname software_version "
    "joined_unix last_seen_unix tokens_per_second tokens_trained session_tokens last_loss "
    "outer_round shards_done rounds dht_maddrs"
).split()
STATS_COLUMNS = (
    "state last_seen_unix tokens_per_second tokens_trained session_tokens last_loss outer_round "
    "dht_maddrs"
).split()
REPORT_COLUMNS = (
    "round node_id peer_node_ids tokens mean_loss duration_s averaging_s params_sha256 val_loss "
    "group_tokens unix"
).split()


class StoreError(RuntimeError):
    """The run directory's database is missing, unreadable or from a newer gpt5os."""


class Checkpointer:
    """Moves the WAL into the database from a background thread with its own connection.

    With autocheckpoint on, the commit that crosses the WAL threshold also checkpoints, which
    fsyncs: a stall of the event loop (hundreds of ms on a busy disk) every few thousand
    heartbeats. A PASSIVE checkpoint here never blocks the writer, and sqlite3 releases the GIL.
    """

    def __init__(self, path: Path, interval_s: float) -> None:
        self.path, self.interval_s = path, interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, timeout=10.0)
        try:
            while not self._stop.wait(self.interval_s):
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Store:
    """Thin SQL over the run database: every method is one statement or one transaction."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise StoreError(f"{self.path} not found: is this a run directory?")
        if not readonly:  # the database holds node keys and sessions: owner only (0600)
            with contextlib.suppress(OSError):
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
                os.chmod(self.path, 0o600)
        try:
            uri = f"file:{self.path}?mode=ro" if readonly else f"file:{self.path}"
            self.db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=10.0)
            self.db.row_factory = sqlite3.Row
            if not readonly:
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA busy_timeout=10000")
            self._migrate(readonly)
        except sqlite3.Error as e:
            raise StoreError(f"cannot open {self.path}: {e}") from e

    def start_checkpointer(self, interval_s: float = 2.0) -> None:
        """The server's store: checkpoint in the background, never inside a commit."""
        self.db.execute("PRAGMA wal_autocheckpoint=0")
        self._checkpointer = Checkpointer(self.path, interval_s)

    def close(self) -> None:
        checkpointer = getattr(self, "_checkpointer", None)
        if checkpointer is not None:
            checkpointer.stop()
            self._checkpointer = None
        self.db.close()

    # -- schema ----------------------------------------------------------------------------

    def schema_version(self) -> int:
        has = self.db.execute(
            "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
        ).fetchone()
        if not has:
            return 0
        row = self.db.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self, readonly: bool) -> None:
        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this gpt5os "
                f"({SCHEMA_VERSION}): upgrade with `pip install -U gpt5os`"
            )
        if version == SCHEMA_VERSION:
            return
        if readonly:
            raise StoreError(f"{self.path} needs a migration: run `gpt5os-coordinator serve` once")
        with self.tx():
            self.db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            for script in MIGRATIONS[version:]:
                for stmt in script.split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
            self.db.execute("DELETE FROM schema_version")
            self.db.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction: committed on exit, rolled back on any exception.

        SQLite may have rolled back already (SQLITE_FULL does): the original error is re-raised,
        not a "no transaction is active" from our own ROLLBACK.
        """
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise

    # -- meta ------------------------------------------------------------------------------

    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: Any) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    # -- shards ----------------------------------------------------------------------------

    def put_shard_defs(self, rows: Iterable[dict[str, Any]]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO shards VALUES "
            "(:shard_id, :split, :tokens, :size_bytes, :sha256, :path, :ord)",
            list(rows),
        )

    def shard_defs(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM shards ORDER BY ord").fetchall()

    def put_shard_states(self, states: Iterable[ShardState]) -> None:
        self.db.executemany(
            "INSERT OR REPLACE INTO shard_state VALUES (?, ?, ?, ?, ?, ?)",
            [
                (s.shard_id, s.epoch, s.status.value, s.node_id, s.deadline, s.queue_pos)
                for s in states
            ],
        )

    def shard_states(self) -> list[ShardState]:
        return [
            ShardState(
                shard_id=r["shard_id"],
                epoch=r["epoch"],
                status=ShardStatus(r["status"]),
                node_id=r["node_id"],
                deadline=r["deadline"],
                queue_pos=r["queue_pos"],
            )
            for r in self.db.execute("SELECT * FROM shard_state")
        ]

    def add_completion(self, **row: Any) -> None:
        self.db.execute(
            "INSERT INTO completions VALUES "
            "(:epoch, :shard_id, :node_id, :tokens_trained, :mean_loss, :unix)",
            row,
        )

    def completions(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM completions ORDER BY unix").fetchall()

    # -- nodes -----------------------------------------------------------------------------

    def put_node(self, row: dict[str, Any]) -> None:
        row = dict(row, dht_maddrs=json.dumps(row["dht_maddrs"]))
        cols = ", ".join(f":{c}" for c in NODE_COLUMNS)
        self.db.execute(f"INSERT OR REPLACE INTO nodes VALUES ({cols})", row)

    def put_node_stats(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows are STATS_COLUMNS in order (dht_maddrs as JSON text), then node_id."""
        sets = ", ".join(f"{c}=?" for c in STATS_COLUMNS)
        self.db.executemany(f"UPDATE nodes SET {sets} WHERE node_id=?", rows)

    def nodes(self) -> list[dict[str, Any]]:
        out = []
        for r in self.db.execute("SELECT * FROM nodes ORDER BY joined_unix"):
            d = dict(r)
            d["dht_maddrs"] = json.loads(d["dht_maddrs"])
            out.append(d)
        return out

    def add_ban(self, node_id: str, unix: float, reason: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO bans VALUES (?, ?, ?)", (node_id, unix, reason))

    def remove_ban(self, node_id: str) -> None:
        self.db.execute("DELETE FROM bans WHERE node_id=?", (node_id,))

    def bans(self) -> dict[str, str]:
        return {r[0]: r[2] for r in self.db.execute("SELECT * FROM bans")}

    # -- rounds ----------------------------------------------------------------------------

    def put_report(self, row: dict[str, Any]) -> None:
        row = dict(row, peer_node_ids=json.dumps(row["peer_node_ids"]))
        cols = ", ".join(f":{c}" for c in REPORT_COLUMNS)
        self.db.execute(f"INSERT OR REPLACE INTO round_reports VALUES ({cols})", row)

    def reports(self) -> list[dict[str, Any]]:
        out = []
        for r in self.db.execute("SELECT * FROM round_reports ORDER BY round, unix"):
            d = dict(r)
            d["peer_node_ids"] = json.loads(d["peer_node_ids"])
            out.append(d)
        return out

    def put_round(self, row: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO rounds VALUES "
            "(:round, :first_unix, :finished_unix, :loss_tokens, :loss, :val_loss)",
            row,
        )

    def rounds(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM rounds ORDER BY round")]

    # -- events and history ----------------------------------------------------------------

    def put_events(self, rows: Iterable[tuple[int, float, str, str, str]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO events VALUES (?, ?, ?, ?, ?)", list(rows))

    def events(self, limit: int) -> list[sqlite3.Row]:
        rows = self.db.execute("SELECT * FROM events ORDER BY id DESC LIMIT ?", (limit,))
        return list(reversed(rows.fetchall()))

    def max_event_id(self) -> int:
        return int(self.db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])

    def put_throughput(self, unix: float, tps: float) -> None:
        self.db.execute("INSERT OR REPLACE INTO throughput VALUES (?, ?)", (unix, tps))

    def throughput(self) -> list[tuple[float, float]]:
        return [(r[0], r[1]) for r in self.db.execute("SELECT * FROM throughput ORDER BY unix")]

    # -- certified rounds ------------------------------------------------------------------

    def put_certified(self, row: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO certified VALUES (:round, :tokens, :params_sha256, :source, "
            ":unix)",
            row,
        )

    def drop_rounds_after(self, round_number: int) -> None:
        """Forget every round after `round_number`: its record, reports and certificate (a stuck
        run continuing from an older state, swarm.py)."""
        for table in ("rounds", "round_reports", "certified"):
            self.db.execute(f"DELETE FROM {table} WHERE round > ?", (round_number,))

    def certified(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.db.execute("SELECT * FROM certified ORDER BY round")]
