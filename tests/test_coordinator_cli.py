"""`gpt5os-coordinator` as a person runs it: real processes, one clear error line on bad input."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gpt5os.common.swarm_auth import SwarmKey
from gpt5os.coordinator.testkit import make_data_dir, make_run, node_key, sync_channel
from gpt5os.proto import pb, pb_grpc

pytestmark = pytest.mark.timeout(480)  # generous: a loaded 2-core CI box is slow


def tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [tool("gpt5os-coordinator"), *args], capture_output=True, text=True, timeout=timeout
    )


def assert_one_error_line(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]


def start_serve(run_dir: Path, *extra: str) -> tuple[subprocess.Popen, Path]:
    port_file = run_dir.parent / f"{run_dir.name}.port"
    proc = subprocess.Popen(
        [tool("gpt5os-coordinator"), "serve", "--dir", str(run_dir), "--port", "0",
         "--port-file", str(port_file), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    return proc, port_file


def wait_line(proc: subprocess.Popen, timeout: float) -> str:
    """The readiness line on stdout (read with a deadline enforced by the test timeout)."""
    line = proc.stdout.readline()
    assert line, f"serve exited early: {proc.wait(timeout)} {proc.stderr.read()}"
    return line


def stop(proc: subprocess.Popen) -> tuple[int, str]:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    return proc.returncode, err


DHT_PROBE = """
import pickle
import sys
import hivemind
from gpt5os.common.swarm_auth import SwarmKey
from gpt5os.node.swarm import start_dht
from gpt5os.node.swarm_access import SwarmAccess
from gpt5os.proto import pb
from hivemind.utils import get_dht_time

def admitted(key_file, reply_file):  # a DHT peer holding the coordinator's token for its key
    key = SwarmKey(pickle.loads(open(key_file, "rb").read()))
    reply = pb.JoinResponse.FromString(open(reply_file, "rb").read())
    return start_dht(list(reply.initial_peers), "/ip4/127.0.0.1/tcp/0",
                     SwarmAccess.from_response(key, reply))

peers = sys.argv[6:]
writer = admitted(sys.argv[2], sys.argv[3])
mine = writer.peer_id.to_bytes()  # a record's subkey names its writer (swarm_auth.OwnedRecords)
assert writer.store("probe", subkey=mine, value="hello", expiration_time=get_dht_time() + 60)
reader = admitted(sys.argv[4], sys.argv[5])
found = reader.get("probe", latest=True)
stranger = hivemind.DHT(initial_peers=peers, start=True, ensure_bootstrap_success=False)
seen = stranger.get("probe", latest=True)
print(found.value[mine].value if found is not None else "nothing",
      "nothing" if seen is None else seen.value)
for dht in (writer, reader, stranger):
    dht.shutdown()
"""


def test_serve_empty_dir_makes_default_run_with_dht_bootstrap(tmp_path: Path) -> None:
    """An empty RUN_DIR gets the stdlib/tiny run; nodes get the DHT's addresses from Join, and
    only peers holding the coordinator's swarm token find each other's records."""
    run_dir = tmp_path / "run"
    # no keeper: this is about the DHT bootstrap, and a keeper stopped within a second of its
    # start can print a traceback from its DHT process (a known race, see docs/RELIABILITY.md)
    proc, port_file = start_serve(run_dir, "--metrics-port", "0", "--no-keeper")
    try:
        line = wait_line(proc, 120)
        assert line.startswith("gpt5os-coordinator: serving run tiny-") and "127.0.0.1:" in line
        port = int(port_file.read_text())
        assert f"127.0.0.1:{port}" in line
        with sync_channel(f"127.0.0.1:{port}") as ch:
            reply = pb_grpc.CoordinatorStub(ch).Join(
                pb.JoinRequest(public_key=node_key(), info=pb.NodeInfo(software_version="0.1.0")),
                timeout=10,
            )
        assert reply.spec.model.preset == "tiny" and reply.spec.model.n_layer == 2
        assert reply.spec.tokenizer == "rwkv-world-v20230424"
        assert reply.initial_peers and all(
            p.startswith("/ip4/127.0.0.1/tcp/") for p in reply.initial_peers
        )
        # two DHT peers that only know the coordinator's bootstrap peer find each other's data;
        # in a child process: forking hivemind's DHT from a process that has used gRPC threads
        # (earlier tests) can deadlock the fork
        # the probe's two DHT peers join here: a process that has used gRPC channels can
        # deadlock when it then forks hivemind's DHT, so the probe itself never talks gRPC
        probe_args = []
        for name in ("writer", "reader"):
            swarm_key = SwarmKey()
            with sync_channel(f"127.0.0.1:{port}") as ch:
                joined = pb_grpc.CoordinatorStub(ch).Join(
                    pb.JoinRequest(
                        public_key=node_key(),
                        info=pb.NodeInfo(software_version="0.1.0"),
                        swarm_public_key=swarm_key.public_key,
                    ),
                    timeout=10,
                )
            (tmp_path / f"{name}.key").write_bytes(pickle.dumps(swarm_key.private_key))
            (tmp_path / f"{name}.join").write_bytes(joined.SerializeToString())
            probe_args += [str(tmp_path / f"{name}.key"), str(tmp_path / f"{name}.join")]
        probe = subprocess.run(
            [sys.executable, "-c", DHT_PROBE, f"127.0.0.1:{port}", *probe_args,
             *reply.initial_peers],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        # ... and a DHT peer without the coordinator's token reads nothing (swarm_auth.py)
        assert probe.returncode == 0, probe.stderr[-2000:]
        assert probe.stdout.strip() == "hello nothing", probe.stderr[-2000:]
        status = json.loads(cli("status", "--dir", str(run_dir), "--json").stdout)
        assert (
            status["shards"]["total"] > 10
            and status["shards"]["pending"] == status["shards"]["total"]
        )
        assert reply.node_id in [n["node_id"] for n in status["nodes"]]
        assert len(status["nodes"]) == 3  # ours and the probe's two admitted DHT peers
        human = cli("status", "--coordinator", f"127.0.0.1:{port}")
        assert human.returncode == 0 and status["run_id"] in human.stdout
        children = descendants(proc.pid)
        assert children  # the DHT process (and its p2p daemon)
    finally:
        code, err = stop(proc)
    assert code == 0 and "Traceback" not in err, err

    def survivors() -> list[int]:
        return [pid for pid in children if Path(f"/proc/{pid}").exists() and not zombie(pid)]

    deadline = time.monotonic() + 30  # hivemind's p2p daemon takes a moment to exit after us
    while survivors() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not survivors()


def descendants(pid: int) -> list[int]:
    """Process ids below `pid`, from /proc (Linux)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, parent in parents.items() if parent in frontier]
        found += kids
        frontier = kids
    return found


def zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_serve_sigint_and_restart_keeps_the_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    make_run(run_dir, n_train=3)
    proc, port_file = start_serve(run_dir, "--no-dht")
    try:
        first = wait_line(proc, 60)
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        code, err = stop(proc)
    finally:
        stop(proc)
    assert code == 0 and "Traceback" not in err, err
    proc, port_file = start_serve(run_dir, "--no-dht")
    try:
        second = wait_line(proc, 60)
    finally:
        stop(proc)
    assert first.split(" on ")[0] == second.split(" on ")[0]  # same run id


def test_occupied_port_is_one_clear_line(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    make_run(run_dir, n_train=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = cli("serve", "--dir", str(run_dir), "--port", str(port), "--no-dht")
    assert r.returncode == 1
    assert_one_error_line(r, f"port {port} on 127.0.0.1 is in use", "--port")


def test_bad_run_dirs_are_one_clear_line(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    assert_one_error_line(cli("serve", "--dir", str(a_file), "--no-dht"), "not a directory")
    cluttered = tmp_path / "cluttered"
    cluttered.mkdir()
    (cluttered / "notes.txt").write_text("x")
    assert_one_error_line(cli("serve", "--dir", str(cluttered), "--no-dht"), "holds no run")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "run.json").write_text("{not json")
    assert_one_error_line(cli("serve", "--dir", str(broken), "--no-dht"), "broken")
    assert_one_error_line(cli("status", "--dir", str(tmp_path / "nowhere")), "not found")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a mode-000 directory: nothing to refuse")
def test_unreadable_run_dir_is_one_clear_line(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    make_run(locked, n_train=1)
    locked.chmod(0)
    try:
        assert_one_error_line(cli("serve", "--dir", str(locked), "--no-dht"), str(locked))
    finally:
        locked.chmod(0o755)


def test_status_of_unknown_coordinator_is_one_clear_line() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("status", "--coordinator", f"127.0.0.1:{port}", "--timeout", "2")
    assert_one_error_line(r, "no coordinator answers", f"127.0.0.1:{port}")


def test_init_options_and_errors(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_data_dir(data, n_train=3)
    run_dir = tmp_path / "run"
    r = cli("init", "--dir", str(run_dir), "--data", str(data), "--preset", "tiny", "--seq-len", "256",
            "--inner-steps", "8", "--inner-lr", "0.001", "--compression", "none", "--seed", "7",
            "--lease-seconds", "30", "--heartbeat-seconds", "3", "--run-id", "my-run",
            "--val-batches", "3", "--outer-lr", "0.5", "--outer-momentum", "0.6",
            "--outer-warmup-rounds", "5")  # fmt: skip
    assert r.returncode == 0, r.stderr
    spec = json.loads((run_dir / "run.json").read_text())
    assert spec["spec"]["outer"] == {
        "lr": 0.5, "momentum": 0.6, "nesterov": True, "warmup_rounds": 5
    }  # fmt: skip
    assert spec["spec"]["run_id"] == "my-run" and spec["spec"]["seq_len"] == 256
    assert spec["spec"]["inner"]["lr"] == 0.001 and spec["spec"]["compression"] == "none"
    assert (
        spec["spec"]["seed"] == 7 and spec["lease_seconds"] == 30 and spec["heartbeat_seconds"] == 3
    )
    assert spec["spec"]["val_batches"] == 3 and spec["spec"]["inner_steps"] == 8
    assert_one_error_line(
        cli("init", "--dir", str(run_dir), "--data", str(data)), "already holds a run"
    )
    assert_one_error_line(
        cli("init", "--dir", str(tmp_path / "r2"), "--data", str(tmp_path / "nodata")),
        "data prepare",
    )
    assert_one_error_line(
        cli("init", "--dir", str(tmp_path / "r3"), "--data", str(data), "--lease-seconds", "1"),
        "lease_seconds",
    )
    assert not (tmp_path / "r3" / "run.json").exists()
    assert_one_error_line(  # 8 batches of 4 x 256 need 8,193 held-out tokens; the data has 4,097
        cli("init", "--dir", str(tmp_path / "r5"), "--data", str(data), "--seq-len", "256"),
        "this run needs 8,193",
        "--val-tokens 8193",
    )
    bad = cli("init", "--dir", str(tmp_path / "r4"), "--data", str(data), "--compression", "zip")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_pause_resume_ban_on_disk(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    make_run(run_dir, n_train=2)
    assert cli("pause", "--dir", str(run_dir)).returncode == 0
    assert json.loads(cli("status", "--dir", str(run_dir), "--json").stdout)["paused"] is True
    assert cli("resume", "--dir", str(run_dir)).returncode == 0
    assert json.loads(cli("status", "--dir", str(run_dir), "--json").stdout)["paused"] is False
    assert_one_error_line(cli("ban", "--dir", str(run_dir), "0123456789"), "no node")
    assert_one_error_line(cli("pause", "--dir", str(tmp_path / "none")), "holds no run")


def _nodes_sharing_a_prefix(run_dir: Path) -> tuple[str, str]:
    """Join nodes straight into the run's database until two ids share their first hex digit."""
    from gpt5os.coordinator.runs import load_run
    from gpt5os.coordinator.swarm import open_swarm

    sw = open_swarm(run_dir, load_run(run_dir), now=time.time())
    info = {"software_version": "0.1.0", "device": "cpu", "hostname": "", "display_name": ""}
    try:
        first: dict[str, str] = {}
        while True:
            node, _ = sw.join(os.urandom(32), info, time.time())
            other = first.setdefault(node.node_id[0], node.node_id)
            if other != node.node_id:
                return other, node.node_id
    finally:
        sw.store.close()


def test_ban_by_id_or_unique_prefix_and_ambiguous_prefix(tmp_path: Path) -> None:
    from gpt5os.coordinator.store import DB_NAME, Store

    run_dir = tmp_path / "run"
    make_run(run_dir, n_train=2)
    a, b = _nodes_sharing_a_prefix(run_dir)
    assert_one_error_line(cli("ban", "--dir", str(run_dir), a[0]), "matches", "more of the id")
    r = cli("ban", "--dir", str(run_dir), "--reason", "spam", a[:10])
    assert r.returncode == 0 and r.stdout.strip() == f"gpt5os-coordinator: banned node {a}"
    r = cli("ban", "--dir", str(run_dir), b)
    assert r.returncode == 0 and b in r.stdout
    store = Store(run_dir / DB_NAME, readonly=True)
    try:
        assert store.bans() == {a: "spam", b: "banned by the maintainer"}
    finally:
        store.close()


def test_spec_set_and_ban_reach_a_running_node(tmp_path: Path, caplog) -> None:
    """What a node does after `spec --set` (logs that a restart picks it up) and after `ban`
    (its heartbeat stops the node with the reason): a real server, the node's own client."""
    import threading

    from gpt5os.node.coordinator_client import CoordinatorClient, CoordinatorError
    from gpt5os.node.heartbeat import Heartbeat
    from gpt5os.node.identity import load_or_create_identity
    from gpt5os.node.progress import NodeProgress

    run_dir = tmp_path / "run"
    make_run(run_dir, n_train=2)
    proc, port_file = start_serve(run_dir, "--no-dht")
    client = None
    try:
        wait_line(proc, 120)
        address = f"127.0.0.1:{port_file.read_text().strip()}"
        client = CoordinatorClient(address, load_or_create_identity(tmp_path / "home"))
        session = client.join("cpu")
        stop_event = threading.Event()
        hb = Heartbeat(client, NodeProgress(), interval_s=0.5, maddrs=list, stop=stop_event)
        hb.beat()
        assert hb.spec_revision == 1
        r = cli("spec", "--dir", str(run_dir), "--set", "inner_lr=0.0005")
        assert r.returncode == 0 and "revision 2" in r.stdout, r.stderr
        deadline = time.monotonic() + 60
        while hb.spec_revision != 2 and time.monotonic() < deadline:
            hb.beat()
            time.sleep(0.2)
        assert hb.spec_revision == 2
        assert "revision 1 -> 2): restart the node" in caplog.text
        assert client.join("cpu").spec.inner.lr == 0.0005  # a (re)joining node gets it
        r = cli("ban", "--dir", str(run_dir), session.node_id[:8])
        assert r.returncode == 0, r.stderr
        hb.start()  # the node's heartbeat thread: it stops the node instead of retrying
        assert stop_event.wait(60), "the banned node was not stopped"
        assert "banned" in hb.refused
        with pytest.raises(CoordinatorError, match="PERMISSION_DENIED"):
            client.lease_shard()
    finally:
        if client is not None:
            client.close()
        stop(proc)
