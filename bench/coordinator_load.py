"""Load test of the coordinator: N simulated nodes heartbeating, leasing and completing shards.

Starts a real `gpt5os-coordinator serve` on a fresh run (or uses --coordinator HOST:PORT) and
drives it from one or more client processes, each running many asyncio node loops over a small
pool of gRPC channels. Every node joins (spread over --ramp seconds), then every --interval
seconds sends a Heartbeat; at a heartbeat it also leases a shard (with probability
--lease-prob when it holds none) or completes the shard it has held for --work seconds.
After the ramp and one interval of warm-up, it measures for --duration seconds and prints the
sustained request rate and p50/p99/max latency per method, as seen by the clients.

    python bench/coordinator_load.py                        # 1,000 nodes, 30 s
    python bench/coordinator_load.py --nodes 10000          # 4 client processes
    python bench/coordinator_load.py --nodes 10000 --server-cpus 0,1

Latencies are client-side (they include the clients' own event-loop delay): run the clients on
other cores than the server (--server-cpus pins the server with taskset) for a fair figure.
Goal (issue 5): 10,000 nodes at one heartbeat per 10 s, p99 < 50 ms, server on 2 cores.
Goal (issue 11): every one of 10,000 joins over 10 s succeeds (a restart's join storm); nodes
retry Join as gpt5os-node does (`--join-attempts 1` measures first attempts alone).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import hashlib
import multiprocessing as mp
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from gpt5os.common.request_signing import Keyring  # noqa: E402
from gpt5os.node.coordinator_client import (  # noqa: E402
    CALL_TIMEOUT_S,
    JOIN_ATTEMPTS,
    JOIN_BACKOFF,
)
from gpt5os.proto import pb, pb_grpc  # noqa: E402

METHODS = ("Join", "Heartbeat", "LeaseShard", "CompleteShard")
EXTRA = ("errors", "join_total", "join_attempts", "join_failed")
KEYRING = Keyring()  # the simulated nodes' keys (per client process)


async def _timed(samples: dict, window: tuple[float, float], name: str, coro):
    t0 = time.time()
    try:
        reply = await coro
        ok = True
    except grpc.aio.AioRpcError as e:
        reply, ok = None, f"{e.code().name}({e.details()[:60]})"
    t1 = time.time()
    if window[0] <= t0 <= window[1] or name == "Join":
        samples[name].append(t1 - t0)
        if ok is not True:
            samples["errors"].append(f"{name}:{ok}")
    return reply


async def _node(idx: int, stub, args, samples: dict, start: float, window: tuple[float, float]):
    rng = random.Random(idx)
    await asyncio.sleep(max(0.0, start + args.ramp * idx / args.nodes - time.time()))
    seed = hashlib.sha256(f"bench-node-{idx}".encode()).digest()
    key = KEYRING.add(Ed25519PrivateKey.from_private_bytes(seed))  # every request is signed
    req = pb.JoinRequest(public_key=key, info=pb.NodeInfo(software_version="99.0", device="sim"))
    # A node's own policy (node/coordinator_client.py): retry what is retryable with backoff and
    # full jitter, JOIN_ATTEMPTS times; "Join" samples each attempt, "join_total" each node.
    backoff = dataclasses.replace(JOIN_BACKOFF, rng=random.Random(idx))
    t_first = time.time()
    for attempt in range(1, (args.join_attempts or 1) + 1):
        reply = await _timed(samples, window, "Join", stub.Join(req, timeout=CALL_TIMEOUT_S))
        if reply is not None:
            samples["join_total"].append(time.time() - t_first)
            samples["join_attempts"].append(attempt)
            break
        if attempt < (args.join_attempts or 1):
            await asyncio.sleep(backoff.delay(attempt))
    if reply is None:
        samples["join_failed"].append(idx)
        return
    auth = pb.NodeAuth(node_id=reply.node_id, session_token=reply.session_token)
    await asyncio.sleep(rng.uniform(0, args.interval))
    held, held_since, tokens = None, 0.0, 0
    while time.time() < window[1]:
        t = time.time()
        tokens += int(1000 * args.interval)
        stats = pb.NodeStats(tokens_per_second=1000.0, tokens_trained=tokens, last_loss=5.0)
        await _timed(
            samples,
            window,
            "Heartbeat",
            stub.Heartbeat(pb.HeartbeatRequest(auth=auth, stats=stats), timeout=30),
        )
        if held is None and rng.random() < args.lease_prob:
            lease = await _timed(
                samples,
                window,
                "LeaseShard",
                stub.LeaseShard(pb.LeaseShardRequest(auth=auth), timeout=30),
            )
            if lease is not None and lease.granted:
                held, held_since = lease.lease.shard_id, time.time()
        elif held is not None and time.time() - held_since >= args.work:
            done = pb.CompleteShardRequest(
                auth=auth, shard_id=held, tokens_trained=64, mean_loss=5.0
            )
            await _timed(samples, window, "CompleteShard", stub.CompleteShard(done, timeout=30))
            held = None
        await asyncio.sleep(max(0.0, args.interval - (time.time() - t)))


async def _client(indices: list[int], address: str, args, start: float, window, out) -> None:
    channels = [
        grpc.aio.insecure_channel(address, interceptors=KEYRING.aio_interceptors())
        for _ in range(args.channels)
    ]
    stubs = [pb_grpc.CoordinatorStub(c) for c in channels]
    samples: dict = {m: [] for m in METHODS} | {k: [] for k in EXTRA}
    await asyncio.gather(
        *(_node(i, stubs[i % len(stubs)], args, samples, start, window) for i in indices)
    )
    for c in channels:
        await c.close()
    out.put(samples)


def _client_proc(indices, address, args, start, window, out) -> None:
    if args.client_nice:
        os.nice(args.client_nice)  # on a shared box, let the server have the CPU it asks for
    asyncio.run(_client(indices, address, args, start, window, out))


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _histogram(metrics_port: int) -> dict[str, dict[float, float]]:
    """Server-side RPC latency buckets: {method: {le: cumulative count}}."""
    text = (
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        .read()
        .decode()
    )
    out: dict[str, dict[float, float]] = {}
    for line in text.splitlines():
        if line.startswith("gpt5os_rpc_seconds_bucket{"):
            labels, value = line[len("gpt5os_rpc_seconds_bucket{") :].split("} ")
            kv = dict(x.split("=", 1) for x in labels.split(","))
            out.setdefault(kv["method"].strip('"'), {})[float(kv["le"].strip('"'))] = float(value)
    return out


def _bucket_pct(start: dict[float, float], end: dict[float, float], q: float) -> str:
    les = sorted(end)
    counts = [end[le] - start.get(le, 0.0) for le in les]
    total = counts[-1] if counts else 0
    if total <= 0:
        return "-"
    for le, c in zip(les, counts, strict=True):
        if c >= q * total:
            return f"<= {le * 1e3:g} ms"
    return "> max bucket"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_server(args, tmp: Path) -> tuple[subprocess.Popen, str]:
    from gpt5os.coordinator.testkit import make_run

    run_dir = tmp / "run"
    n_shards = max(200, args.nodes)
    make_run(run_dir, n_train=n_shards, n_val=1, shard_tokens=64, heartbeat_seconds=args.interval,
             lease_seconds=max(60.0, 6 * args.interval))  # fmt: skip
    port_file = tmp / "port"
    cmd = [str(Path(sys.executable).with_name("gpt5os-coordinator")), "serve", "--dir", str(run_dir),
           "--port", "0", "--port-file", str(port_file), "--no-dht", "--no-keeper",
           "--metrics-port", str(args.metrics_port)]  # fmt: skip
    if args.server_cpus:
        cmd = ["taskset", "-c", args.server_cpus, *cmd]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=open(tmp / "server.log", "wb"))
    deadline = time.time() + 60
    while not (port_file.is_file() and port_file.read_text().strip()):
        if proc.poll() is not None or time.time() > deadline:
            raise SystemExit(
                f"coordinator did not start: {(tmp / 'server.log').read_text()[-2000:]}"
            )
        time.sleep(0.05)
    return proc, f"127.0.0.1:{port_file.read_text().strip()}"


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--duration", type=float, default=30.0, help="measured seconds")
    p.add_argument("--interval", type=float, default=10.0, help="heartbeat period per node")
    p.add_argument("--ramp", type=float, default=10.0, help="seconds over which nodes join")
    p.add_argument("--lease-prob", type=float, default=0.5)
    p.add_argument("--work", type=float, default=20.0, help="seconds a node holds a shard")
    p.add_argument(
        "--procs",
        type=int,
        help="client processes (default: one per 2,500 nodes; more nodes per process and the "
        "clients' own event loops inflate the measured latency)",
    )
    p.add_argument("--channels", type=int, default=16, help="gRPC channels per client process")
    p.add_argument(
        "--client-nice",
        type=int,
        default=10,
        help="nice the client processes (the clients share this machine with the server; "
        "0 lets them compete with it for CPU)",
    )
    p.add_argument(
        "--join-attempts",
        type=int,
        default=JOIN_ATTEMPTS,
        help="Join attempts per node with the node's backoff and jitter (1: no retry)",
    )
    p.add_argument("--coordinator", help="use a running coordinator instead of starting one")
    p.add_argument("--server-cpus", help="taskset CPU list for the started server, e.g. 0,1")
    args = p.parse_args()
    args.metrics_port = _free_port()
    if args.procs is None:
        args.procs = max(1, -(-args.nodes // 2500))

    tmp = Path(tempfile.mkdtemp(prefix="gpt5os-load-"))
    proc = None
    try:
        if args.coordinator:
            address = args.coordinator
        else:
            proc, address = _start_server(args, tmp)
        start = time.time() + 1.0
        window = (
            start + args.ramp + args.interval,
            start + args.ramp + args.interval + args.duration,
        )
        ctx = mp.get_context("spawn")
        out = ctx.Queue()
        slices = [list(range(i, args.nodes, args.procs)) for i in range(args.procs)]
        procs = [
            ctx.Process(target=_client_proc, args=(s, address, args, start, window, out))
            for s in slices
        ]
        for c in procs:
            c.start()
        server_side = proc is not None
        time.sleep(max(0.0, window[0] - time.time()))
        if server_side:
            cpu0, hist0 = _cpu_seconds(proc.pid), _histogram(args.metrics_port)
        time.sleep(max(0.0, window[1] - time.time()))
        if server_side:
            cpu1, hist1 = _cpu_seconds(proc.pid), _histogram(args.metrics_port)
        merged: dict = {m: [] for m in METHODS} | {k: [] for k in EXTRA}
        for _ in procs:
            for k, v in out.get(timeout=window[1] - time.time() + 120).items():
                merged[k] += v
        for c in procs:
            c.join()
        measured = sum(len(merged[m]) for m in METHODS if m != "Join")
        first_errors = collections.Counter(e for e in merged["errors"] if e.startswith("Join:"))
        retried = sum(1 for a in merged["join_attempts"] if a > 1)
        print(f"joins: {len(merged['join_total']):,} of {args.nodes:,} succeeded "
              f"({len(merged['join_failed']):,} failed after {args.join_attempts} attempts; "
              f"{retried:,} needed a retry; failed attempts {sum(first_errors.values()):,}"
              + "".join(f", {k} x{v}" for k, v in first_errors.most_common(3)) + ")")  # fmt: skip
        if merged["join_total"]:
            jt = merged["join_total"]
            print(f"  join, first try to success: p50 {_pct(jt, 0.5) * 1e3:7.2f} ms  "
                  f"p99 {_pct(jt, 0.99) * 1e3:7.2f} ms  max {max(jt) * 1e3:7.2f} ms")  # fmt: skip
        print(f"nodes {args.nodes}  heartbeat every {args.interval:g} s  measured {args.duration:g} s  "
              f"client procs {args.procs}  server cpus {args.server_cpus or 'any'}")  # fmt: skip
        errors = collections.Counter(merged["errors"])
        print(f"sustained {measured / args.duration:,.0f} req/s  errors {sum(errors.values())}"
              + "".join(f"  {k} x{v}" for k, v in errors.most_common(4)))  # fmt: skip
        everything = [x for m in METHODS if m != "Join" for x in merged[m]]
        for name, values in [*((m, merged[m]) for m in METHODS), ("all (excl. Join)", everything)]:
            if values:
                print(f"  {name:<18} n={len(values):>7}  p50 {_pct(values, 0.5) * 1e3:7.2f} ms  "
                      f"p99 {_pct(values, 0.99) * 1e3:7.2f} ms  max {max(values) * 1e3:7.2f} ms")  # fmt: skip
        if server_side:
            print(f"server CPU: {(cpu1 - cpu0) / args.duration:.2f} cores busy on average "
                  "(process total, all threads)")  # fmt: skip
            print("server-side handler latency (histogram bucket bounds, excl. network/queueing):")
            for m in METHODS:
                if m in hist1:
                    start = hist0.get(m, {})
                    print(f"  {m:<18} p50 {_bucket_pct(start, hist1[m], 0.5):>12}  "
                          f"p99 {_bucket_pct(start, hist1[m], 0.99):>12}")  # fmt: skip
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        log = tmp / "server.log"
        if log.is_file() and log.read_text().strip():
            print("server log (tail):\n" + log.read_text()[-1500:])
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
