"""How long a late joiner's re-sync takes: download a peer's (θ_global, momentum) over hivemind on
loopback and check its sha256 against the certificate (node/state_sync.py's path).

Two processes on 127.0.0.1: a server peer that shares its state and this process, which
downloads it with PseudoGradientAverager.download_state and hashes it. The baseline, measured in
the same run, is the local cost of the same bytes: exporting the state (a copy) and hashing it.
The ratio says what the network path adds on top of the unavoidable copy + hash.

Usage: python bench/state_download.py [--params 25_000_000] [--repeat 3]
(0.1b is ~191M parameters: ~1.5 GB of state, ~6 GB across the two processes.)
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time

import torch


class Flat(torch.nn.Module):
    def __init__(self, numel: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(numel) * 0.02)


def spec():
    from gpt5os.coordinator.run_spec import preset_spec

    s = preset_spec("tiny", run_id="bench")
    s.matchmaking_time_s = 2.0
    return s


def serve(numel: int, maddrs_q: mp.Queue, stop: mp.Event) -> None:
    from gpt5os.node.diloco import OuterState
    from gpt5os.node.swarm import PseudoGradientAverager, start_dht, visible_maddrs

    torch.manual_seed(0)
    outer = OuterState(Flat(numel), spec().outer)
    dht = start_dht([], "/ip4/127.0.0.1/tcp/0")
    averager = PseudoGradientAverager(outer, dht, prefix="bench_diloco", spec=spec())
    averager.allow_state_sharing = True
    averager.state_sharing_priority = 1.0
    maddrs_q.put((visible_maddrs(dht), dht.peer_id.to_bytes(), outer.digest()))
    stop.wait()
    averager.shutdown()
    dht.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", type=int, default=25_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from gpt5os.node.diloco import OuterState, tensors_sha256
    from gpt5os.node.swarm import CHUNK_TIMEOUT_S, PseudoGradientAverager, start_dht

    ctx = mp.get_context("fork")  # hivemind forks its own children: spawn would pickle them
    maddrs_q, stop = ctx.Queue(), ctx.Event()
    server = ctx.Process(target=serve, args=(args.params, maddrs_q, stop))  # has children
    server.start()
    try:
        maddrs, peer, digest = maddrs_q.get(timeout=300)
        outer = OuterState(Flat(args.params), spec().outer)
        dht = start_dht(maddrs, "/ip4/127.0.0.1/tcp/0")
        averager = PseudoGradientAverager(outer, dht, prefix="bench_diloco", spec=spec())
        state_mb = 2 * args.params * 4 / 1e6
        net, local = [], []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            meta, tensors = averager.download_state(peer, CHUNK_TIMEOUT_S)
            assert tensors_sha256(tensors[:1]) == digest, "downloaded state fails its digest"
            net.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            _, copy = outer.export()
            tensors_sha256(copy[:1])
            local.append(time.perf_counter() - t0)
        best_net, best_local = min(net), min(local)
        print(
            f"state {state_mb:.0f} MB ({args.params:,} params + momentum): download+verify "
            f"{best_net:.2f} s ({state_mb / best_net:.0f} MB/s), local copy+hash "
            f"{best_local:.2f} s; ratio {best_net / best_local:.1f}x; "
            f"all runs {', '.join(f'{t:.2f}' for t in net)} s"
        )
        averager.shutdown()
        dht.shutdown()
    finally:
        stop.set()
        server.join(timeout=60)
        if server.is_alive():
            server.kill()


if __name__ == "__main__":
    main()
