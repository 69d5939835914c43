"""Faults an operator meets, with real processes on 127.0.0.1: a volunteer leaving with SIGTERM or
Ctrl-C, the coordinator killed -9 and restarted under a training node, a node killed -9 while
it holds a lease, a node killed -9 inside a round (the others go on without it), a node cut off (its network namespace's link down; SIGSTOP without root) for
longer than a round.

Every test reads the coordinator's own database (read-only, beside the running server) for what
it promises: leases back, nothing counted twice, reports reaching the restarted coordinator.
The figures in docs/RELIABILITY.md come from these runs (`-s` prints them).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import e2e_support
import netns
import pytest
from e2e_support import Proc, join_node, process_env, start_coordinator, tool, wait_for
from gpt5os.coordinator.store import DB_NAME, Store
from gpt5os.coordinator.testkit import make_data_dir
from process_tree import tree

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ERRORS = ("Traceback", "ERROR", "Task was destroyed", "Exception ignored")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Random-token shards: no tokenizer, prepared in a second."""
    out = tmp_path_factory.mktemp("faults") / "data"
    make_data_dir(out, n_train=40, n_val=1, shard_tokens=1024)
    return out


def init_run(run_dir: Path, data: Path, *extra: str) -> None:
    e2e_support.init_run(run_dir, data, "--inner-steps", "2", *extra)


def node(address: str, tmp_path: Path, name: str, *extra: str) -> Proc:
    home = tmp_path / f"node-{name}"
    return join_node(address, home, tmp_path / f"node-{name}.log", "--name", name, *extra)


class Db:
    """The coordinator's database, read-only, opened afresh for every look."""

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / DB_NAME

    def _read(self, fn):
        store = Store(self.path, readonly=True)
        try:
            return fn(store)
        finally:
            store.close()

    def node_id(self, name: str) -> str | None:
        ids = [n["node_id"] for n in self._read(Store.nodes) if n["display_name"] == name]
        return ids[0] if ids else None

    def node(self, node_id: str) -> dict:
        return next(n for n in self._read(Store.nodes) if n["node_id"] == node_id)

    def leased_by(self, node_id: str) -> list[str]:
        return [
            s.shard_id
            for s in self._read(Store.shard_states)
            if s.status == "leased" and s.node_id == node_id
        ]

    def completions(self) -> list[dict]:
        return [dict(r) for r in self._read(Store.completions)]

    def events(self, kind: str, node_id: str | None = None) -> list[dict]:
        rows = self._read(lambda s: s.events(10_000))
        return [
            dict(r)
            for r in rows
            if r["kind"] == kind and (node_id is None or r["node_id"] == node_id)
        ]

    def reports(self, node_id: str) -> list[dict]:
        return [r for r in self._read(Store.reports) if r["node_id"] == node_id]


def assert_counted_once(db: Db) -> None:
    seen = [(c["epoch"], c["shard_id"]) for c in db.completions()]
    assert len(seen) == len(set(seen)), f"a shard was counted twice: {sorted(seen)}"


def assert_clean_exit(proc: Proc, rc: int) -> None:
    out = proc.output()
    assert rc == 0, f"exit {rc}:\n{proc.tail()}"
    for word in ERRORS:
        assert word not in out, f"{word!r} in a clean exit's output:\n{proc.tail()}"
    assert out.count("gpt5os-node: left after") == 1, proc.tail()


def holding_a_lease(db: Db, name: str):
    def check():
        node_id = db.node_id(name)
        return node_id if node_id and db.leased_by(node_id) else None

    return check


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "Ctrl-C"])
def test_leaving_by_signal_is_clean_and_returns_leases_at_once(
    tmp_path: Path, data_dir: Path, how: str
) -> None:
    run_dir = tmp_path / "run"
    init_run(run_dir, data_dir)
    db = Db(run_dir)
    coordinator, address = start_coordinator(
        run_dir, tmp_path / "coord-home", tmp_path / "coordinator.log", "--no-dht"
    )
    proc = node(address, tmp_path, "leaver")
    try:
        node_id = wait_for(holding_a_lease(db, "leaver"), 600, "a lease held by the node", 0.5)
        if how != "SIGTERM":  # later: after a round, with the averager and its tracker running
            wait_for(lambda: db.reports(node_id), 600, "the node's first round report", 0.5)
            wait_for(holding_a_lease(db, "leaver"), 600, "a lease in the next round", 0.5)
        t0 = time.monotonic()
        if how in ("SIGTERM", "SIGINT"):  # `kill -INT`: hivemind once set SIGINT to SIG_IGN here
            proc.popen.send_signal(getattr(signal, how))
        else:  # a terminal's Ctrl-C: SIGINT to the whole foreground process group
            # hivemind's DHT process and p2p daemon are out of that group (their own session):
            # the node shuts them down in order instead of them dying under its averager
            p2pd = [p for p in tree(proc.pid) if p.name == "p2pd"]
            assert p2pd and all(os.getpgid(p.pid) != proc.pid for p in p2pd), p2pd
            os.killpg(proc.pid, signal.SIGINT)
        rc = proc.wait(120)
        seconds = time.monotonic() - t0
        assert_clean_exit(proc, rc)
        assert db.leased_by(node_id) == []  # no waiting: back when the node says goodbye
        assert db.node(node_id)["state"] == "left"
        assert db.events("left", node_id), "no `left` event"
        print(f"\nFIGURE leave-{how}: exit 0 after {seconds:.1f} s, leases back at exit")
    finally:
        proc.stop()
        coordinator.stop()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill9_group(proc: Proc) -> None:
    """kill -9 the process and everything it started (hivemind's helpers would linger)."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.popen.wait(30)


def test_node_rides_out_a_coordinator_kill9_and_restart(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    init_run(run_dir, data_dir, "--heartbeat-seconds", "1", "--lease-seconds", "30")
    db = Db(run_dir)
    port = str(free_port())  # the restarted coordinator must answer at the same address
    home, log = tmp_path / "coord-home", tmp_path / "coordinator.log"
    coordinator, address = start_coordinator(run_dir, home, log, "--no-dht", "--port", port)
    proc = node(address, tmp_path, "steady", "--max-rounds", "3")
    try:
        node_id = wait_for(lambda: db.node_id("steady"), 600, "the node's join", 0.5)
        wait_for(lambda: db.reports(node_id), 600, "the node's first round report", 0.5)
        before = {r["round"] for r in db.reports(node_id)}
        done_before = len(db.completions())
        kill9_group(coordinator)
        down_at = time.time()
        wait_for(lambda: "heartbeat failed" in proc.output(), 120, "the node noticing", 0.5)
        assert proc.alive(), proc.tail()
        coordinator, _ = start_coordinator(
            run_dir, home, tmp_path / "coordinator-2.log", "--no-dht", "--port", port
        )
        up_at = time.time()

        def reported_again():
            return [r for r in db.reports(node_id) if r["round"] not in before]

        new = wait_for(reported_again, 600, "a round report at the restarted coordinator", 0.5)
        # heartbeats reach it too (after the node's backoff, which may outlast a short round)
        wait_for(
            lambda: db.node(node_id)["last_seen_unix"] >= up_at,
            120,
            "a heartbeat at the restarted coordinator",
            0.5,
        )
        rc = proc.wait(600)
        assert_clean_exit(proc, rc)
        assert_counted_once(db)
        credited = sum(n["shards_done"] for n in db._read(Store.nodes))
        assert credited == len(db.completions()) >= done_before
        print(
            f"\nFIGURE coordinator-kill9: down {up_at - down_at:.1f} s, node kept running, "
            f"rounds after restart {sorted(r['round'] for r in new)}, "
            f"{len(db.completions())} shards counted once each"
        )
    finally:
        proc.stop()
        coordinator.stop()


def test_shard_of_a_node_killed9_is_retrained_once(tmp_path: Path, data_dir: Path) -> None:
    run_dir = tmp_path / "run"
    init_run(run_dir, data_dir, "--heartbeat-seconds", "2", "--lease-seconds", "20")
    db = Db(run_dir)
    coordinator, address = start_coordinator(
        run_dir, tmp_path / "coord-home", tmp_path / "coordinator.log", "--no-dht"
    )
    victim = node(address, tmp_path, "victim")
    other = None
    try:
        victim_id = wait_for(holding_a_lease(db, "victim"), 600, "a lease held by the victim", 0.5)
        held = db.leased_by(victim_id)
        kill9_group(victim)
        killed_at = time.time()
        other = node(address, tmp_path, "other")

        def retrained():
            done = {c["shard_id"] for c in db.completions()}
            return set(held) <= done

        wait_for(retrained, 600, f"shards {held} retrained", 0.5)
        took = time.time() - killed_at
        rows = [c for c in db.completions() if c["shard_id"] in held]
        assert len(rows) == len(held)  # once each
        assert {c["node_id"] for c in rows} != {victim_id}
        assert db.node(victim_id)["state"] == "lost"
        assert_counted_once(db)
        print(f"\nFIGURE node-kill9: {len(held)} leased shard(s) retrained once, {took:.0f} s")
    finally:
        victim.stop()
        if other is not None:
            other.stop()
        coordinator.stop()


@pytest.mark.slow
def test_a_node_killed_mid_round_does_not_stop_the_next_round(
    tmp_path: Path, data_dir: Path
) -> None:
    """Three nodes (8-bit wire, H = 2: a node is averaging most of a round); c is killed -9
    right after its first round, inside the second. a and b (and the keeper) finish the rounds
    after it without c, with the same θ_global."""
    run_dir = tmp_path / "run"
    init_run(run_dir, data_dir, "--heartbeat-seconds", "2", "--compression", "blockwise8")
    db = Db(run_dir)
    coordinator, address = start_coordinator(
        run_dir, tmp_path / "coord-home", tmp_path / "coordinator.log"
    )
    procs = {name: node(address, tmp_path, name, "--min-peers", "3") for name in "abc"}
    try:
        ids = {n: wait_for(lambda n=n: db.node_id(n), 600, f"{n}'s join", 0.5) for n in "abc"}
        wait_for(lambda: db.reports(ids["c"]), 600, "c's first round", 0.5)
        kill9_group(procs["c"])
        killed_at = time.time()
        killed_in = max(r["round"] for r in db.reports(ids["c"])) + 1  # the round c was in

        def after_c() -> int | None:
            """The first round past the one c died in that a and b both reported, one digest."""
            a = {r["round"]: r for r in db.reports(ids["a"])}
            for r in sorted(db.reports(ids["b"]), key=lambda r: r["round"]):
                same = a.get(r["round"], {}).get("params_sha256") == r["params_sha256"]
                if r["round"] > killed_in and same:
                    return r["round"]
            return None

        next_round = wait_for(after_c, 600, "a round after c's death that a and b agree on", 0.5)
        took = time.time() - killed_at
        for name in "ab":
            report = next(r for r in db.reports(ids[name]) if r["round"] == next_round)
            assert set(report["peer_node_ids"]) == {ids["a"], ids["b"]}, report
            assert procs[name].alive(), procs[name].tail()
        retries = procs["a"].output().count("averaging failed")
        print(
            f"\nFIGURE node-kill9-mid-round: killed in round {killed_in}; a and b agreed on "
            f"round {next_round} {took:.0f} s later (a's failed averaging attempts: {retries})"
        )
    finally:
        for proc in (*procs.values(), coordinator):
            proc.stop()


class CutOff:
    """Cuts node `i` off the swarm and the coordinator, then lets it back: its network
    namespace's link goes down while its processes keep running (training, trying to average,
    failing to heartbeat) where root can make namespaces; SIGSTOP, which freezes it, otherwise."""

    def __init__(self) -> None:
        self.why_not = netns.available()
        self.net = netns.Net.create(2) if self.why_not is None else None
        self.host = self.net.host_ip if self.net else "127.0.0.1"
        self.how = "netns link down" if self.net else f"SIGSTOP ({self.why_not})"

    def node(self, address: str, tmp_path: Path, i: int, name: str, *extra: str) -> Proc:
        if self.net is None:
            return node(address, tmp_path, name, *extra)
        home = tmp_path / f"node-{name}"
        args = [tool("gpt5os-node"), "join", "--coordinator", address, "--device", "cpu",
                "--threads", "1", "--home", str(home), "--name", name,
                "--dht-listen", f"/ip4/{self.net.ips[i]}/tcp/0", *extra]  # fmt: skip
        return Proc(self.net.wrap(i, args), tmp_path / f"node-{name}.log", process_env(home))

    def cut(self, i: int, proc: Proc) -> None:
        if self.net:
            self.net.cut(i)
        else:
            proc.popen.send_signal(signal.SIGSTOP)

    def restore(self, i: int, proc: Proc) -> None:
        if self.net:
            self.net.restore(i)
        else:
            proc.popen.send_signal(signal.SIGCONT)

    def close(self) -> None:
        if self.net:
            self.net.close()


def test_node_cut_off_longer_than_a_round_comes_back_and_catches_up(
    tmp_path: Path, data_dir: Path
) -> None:
    """A partition: b loses the coordinator and its peer for longer than a round (it may train
    and step alone meanwhile); once back, it is active again and reports a round past the
    swarm's with the same θ_global digest as a (it re-synced to the certified state), and no
    shard is counted twice."""
    run_dir = tmp_path / "run"
    init_run(run_dir, data_dir, "--heartbeat-seconds", "2", "--lease-seconds", "20")
    db = Db(run_dir)
    off = CutOff()
    coordinator = a = b = None
    try:
        coordinator, address = start_coordinator(  # with its DHT: the nodes must find each other
            run_dir, tmp_path / "coord-home", tmp_path / "coordinator.log", host=off.host
        )
        a = off.node(address, tmp_path, 0, "a", "--min-peers", "2")
        b = off.node(address, tmp_path, 1, "b", "--min-peers", "2")
        a_id = wait_for(lambda: db.node_id("a"), 600, "a's join", 0.5)
        b_id = wait_for(lambda: db.node_id("b"), 600, "b's join", 0.5)
        wait_for(lambda: db.reports(b_id), 600, "b's first round", 0.5)
        off.cut(1, b)
        cut_at = time.time()
        cut_round = max(r["round"] for r in db.reports(b_id))

        def a_moved_on():
            return max((r["round"] for r in db.reports(a_id)), default=0) >= cut_round + 1

        wait_for(a_moved_on, 600, "a round without b", 0.5)
        wait_for(lambda: db.node(b_id)["state"] == "lost", 120, "b marked lost", 0.5)
        off.restore(1, b)
        cut_s = time.time() - cut_at
        swarm_round = max(r["round"] for r in db.reports(a_id))

        def back_in_step() -> int | None:
            """A round past the swarm's at the restore that a and b both reported with the same
            θ_global: b re-synced. (Before that b may report a round it stepped alone while cut
            off, which the certificate then contradicts.)"""
            a_digests = {r["round"]: r["params_sha256"] for r in db.reports(a_id)}
            common = [
                r["round"]
                for r in db.reports(b_id)
                if r["round"] > swarm_round and a_digests.get(r["round"]) == r["params_sha256"]
            ]
            return max(common, default=None)

        common_round = wait_for(back_in_step, 600, "b back in step with a past the cut", 0.5)
        wait_for(lambda: db.node(b_id)["state"] == "active", 60, "b active again", 0.5)
        assert_counted_once(db)
        print(
            f"\nFIGURE cut-off ({off.how}): {cut_s:.0f} s (swarm at round {swarm_round}), "
            f"back in step with a at round {common_round}"
        )
    finally:
        if b is not None:
            off.restore(1, b)
        for proc in (a, b, coordinator):
            if proc is not None:
                proc.stop()
        off.close()


def test_leaving_mid_averaging_is_clean(tmp_path: Path, data_dir: Path) -> None:
    """SIGTERM while the node is inside hivemind's averaging step (its partner frozen, so the
    step cannot finish): exit 0, one line, no traceback, leases back."""
    run_dir = tmp_path / "run"
    init_run(run_dir, data_dir, "--heartbeat-seconds", "2")
    db = Db(run_dir)
    coordinator, address = start_coordinator(
        run_dir, tmp_path / "coord-home", tmp_path / "coordinator.log", "--no-keeper"
    )
    a = node(address, tmp_path, "a", "--min-peers", "2")
    b = node(address, tmp_path, "b", "--min-peers", "2")
    try:
        a_id = wait_for(lambda: db.node_id("a"), 600, "a's join", 0.5)
        b_id = wait_for(lambda: db.node_id("b"), 600, "b's join", 0.5)
        wait_for(lambda: db.reports(b_id) and db.reports(a_id), 600, "the first round", 0.5)
        b.popen.send_signal(signal.SIGSTOP)  # a's next averaging finds its partner silent
        seen = a.output().count("no group yet; looking again")
        wait_for(
            lambda: a.output().count("no group yet; looking again") > seen,
            600,
            "a inside its next averaging",
            0.2,
        )
        t0 = time.monotonic()
        a.popen.send_signal(signal.SIGTERM)
        rc = a.wait(120)
        seconds = time.monotonic() - t0
        assert_clean_exit(a, rc)
        assert db.leased_by(a_id) == [] and db.events("left", a_id)
        print(f"\nFIGURE leave-mid-averaging: exit 0 after {seconds:.1f} s")
    finally:
        b.popen.send_signal(signal.SIGCONT)
        a.stop()
        b.stop()
        coordinator.stop()
