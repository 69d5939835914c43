"""How long a late joiner's re-sync takes: download a peer's (θ_global, momentum) over hivemind on
loopback and check its sha256 against the certificate (node/state_sync.py's path).

Two processes on 127.0.0.1: a server peer that shares its state and this process, which
downloads it with PseudoGradientAverager.download_state (node/state_wire.py: 4 MiB raw parts,
one copy into shared memory, θ_global hashed as it arrives) and checks the digest. Baselines
measured in the same run: the local cost of the same bytes (exporting the state, a copy, and
hashing it), and hivemind's stock path (its rpc_download_state: 64 KiB protobuf parts, and the
receiver this project used before: join, copy, then hash) against a second server process
started after the first has stopped (one state-holding server at a time).

Usage: python bench/state_download.py [--params 25_000_000] [--repeat 3] [--no-stock]
(0.1b is ~191M parameters: ~1.5 GB of state; ~3 GB per process with --no-stock, more for the
stock path, whose receiver holds the state three times over.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from functools import partial

import hivemind
import torch
from gpt5os.node.swarm import PseudoGradientAverager
from hivemind.compression import deserialize_torch_tensor
from hivemind.p2p import PeerID
from hivemind.proto import averaging_pb2
from hivemind.utils.asyncio import aiter_with_timeout
from hivemind.utils.streaming import combine_from_streaming


class Flat(torch.nn.Module):
    def __init__(self, numel: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(numel) * 0.02)


def spec():
    from gpt5os.coordinator.run_spec import preset_spec

    s = preset_spec("tiny", run_id="bench")
    s.matchmaking_time_s = 2.0
    return s


class StockServer(PseudoGradientAverager):
    """Serves state the way hivemind does (64 KiB protobuf parts, no concurrency limit)."""

    rpc_download_state = hivemind.DecentralizedAverager.rpc_download_state


# hivemind names each RPC after its class: keep the name the real peers use
StockServer.__name__ = "PseudoGradientAverager"


class Downloader(PseudoGradientAverager):
    """Also downloads the way this project did before state_wire.py (for the stock baseline)."""

    def download_stock(self, peer: bytes, timeout: float):
        future = hivemind.utils.MPFuture()
        self._outer_pipe.send(("_download_stock", [peer, timeout], dict(future=future)))
        return future.result(timeout=timeout * 4 + 30)

    async def _download_stock(self, peer: bytes, timeout: float, future) -> None:
        stub = self.get_stub(self._p2p, PeerID(peer), namespace=self.prefix)
        stream = await stub.rpc_download_state(averaging_pb2.DownloadRequest())
        meta, parts, tensors = None, [], []
        async for message in aiter_with_timeout(stream, timeout=timeout):
            if message.metadata:
                meta = self.serializer.loads(message.metadata)
            if message.tensor_part.dtype and parts:
                tensors.append(deserialize_torch_tensor(combine_from_streaming(parts)))
                parts = []
            parts.append(message.tensor_part)
        if parts:
            tensors.append(deserialize_torch_tensor(combine_from_streaming(parts)))
        future.set_result((meta, tensors))


Downloader.__name__ = "PseudoGradientAverager"


def serve(numel: int, stock: bool) -> None:
    """The server process (`--serve`): one line of JSON with its address, then serve until
    stdin closes."""
    from gpt5os.node.diloco import OuterState
    from gpt5os.node.swarm import start_dht, visible_maddrs

    torch.manual_seed(0)
    outer = OuterState(Flat(numel), spec().outer)
    dht = start_dht([], "/ip4/127.0.0.1/tcp/0")
    server = StockServer if stock else PseudoGradientAverager
    averager = server(outer, dht, prefix="bench_diloco", spec=spec())
    averager.allow_state_sharing = True
    averager.state_sharing_priority = 1.0
    info = {"maddrs": visible_maddrs(dht), "peer": dht.peer_id.to_bytes().hex()}
    print(json.dumps(dict(info, digest=outer.digest())), flush=True)
    sys.stdin.read()
    averager.shutdown()
    dht.shutdown()


def measure(args, stock: bool, client, outer) -> list[float]:
    """Seconds per download+verify of a fresh server's state (stock: hivemind's path)."""
    from gpt5os.node.diloco import tensors_sha256
    from gpt5os.node.swarm import CHUNK_TIMEOUT_S

    serve_as = ["--serve", "stock" if stock else "wire", "--params", str(args.params)]
    server = subprocess.Popen(
        [sys.executable, __file__, *serve_as], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        info = json.loads(server.stdout.readline())
        maddrs, peer, digest = info["maddrs"], bytes.fromhex(info["peer"]), info["digest"]
        client.dht.run_coroutine(partial(_connect, peer, maddrs))
        times, tensors, loaded = [], None, None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            if stock:
                _meta, tensors = client.download_stock(peer, CHUNK_TIMEOUT_S)
                got = tensors_sha256(tensors[:1])
            else:
                loaded = client.download_state(peer, CHUNK_TIMEOUT_S)
                got = loaded.digest
            assert got == digest, "downloaded state fails its digest"
            times.append(time.perf_counter() - t0)
            tensors = loaded = None  # one state at a time in this process
        return times
    finally:
        server.stdin.close()
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            server.kill()


async def _connect(peer: bytes, maddrs: list[str], _dht, node) -> None:
    """As tests/state_source_worker.py: the addresses without their /p2p/ part."""
    from hivemind.utils.multiaddr import Multiaddr

    p2p = Multiaddr(f"/p2p/{PeerID(peer).to_base58()}")
    await node.p2p._client.connect(PeerID(peer), [Multiaddr(m).decapsulate(p2p) for m in maddrs])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", type=int, default=25_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-stock", action="store_true", help="skip hivemind's path")
    parser.add_argument("--serve", choices=["stock", "wire"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.params, args.serve == "stock")
        return

    from gpt5os.node.diloco import OuterState, tensors_sha256
    from gpt5os.node.swarm import start_dht

    outer = OuterState(Flat(args.params), spec().outer)
    dht = start_dht([], "/ip4/127.0.0.1/tcp/0")
    client = Downloader(outer, dht, prefix="bench_diloco", spec=spec())
    state_mb = 2 * args.params * 4 / 1e6
    try:
        local = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            _, copy = outer.export()
            tensors_sha256(copy[:1])
            local.append(time.perf_counter() - t0)
            del copy
        best_local = min(local)
        print(f"state {state_mb:.0f} MB ({args.params:,} params + momentum); "
              f"local copy+hash {best_local:.2f} s")  # fmt: skip
        paths = [("stock hivemind", True)] * (not args.no_stock) + [("state_wire", False)]
        best = {}
        for name, stock in paths:
            times = measure(args, stock, client, outer)
            best[name] = min(times)
            print(
                f"{name}: download+verify {best[name]:.2f} s ({state_mb / best[name]:.0f} MB/s),"
                f" {best[name] / best_local:.1f}x the local copy+hash; "
                f"all runs {', '.join(f'{t:.2f}' for t in times)} s",
                flush=True,
            )
        if len(best) == 2:
            print(f"speed-up over stock: {best['stock hivemind'] / best['state_wire']:.1f}x")
    finally:
        client.shutdown()
        dht.shutdown()


if __name__ == "__main__":
    main()
