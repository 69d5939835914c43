"""The node's data path against a real coordinator (in-process gRPC server, real client):
shards are leased, downloaded, verified, cut into batches and completed exactly once."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gpt5os.coordinator.server import CoordinatorServer
from gpt5os.coordinator.testkit import make_run
from gpt5os.node.coordinator_client import CoordinatorClient, ShardCorrupt
from gpt5os.node.identity import load_or_create_identity
from gpt5os.node.shard_feed import ShardFeed, cut_batches, is_intact, sequence_order
from gpt5os.proto import pb

N_SHARDS = 3
SHARD_TOKENS = 1024


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real CoordinatorServer on a free port, in its own event loop thread."""
    run_dir = tmp_path / "run"
    make_run(run_dir, n_train=N_SHARDS, n_val=1, shard_tokens=SHARD_TOKENS)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> tuple[CoordinatorServer, int]:  # built in the loop's thread: SQLite
        server = CoordinatorServer(run_dir, port=0, start_dht=False)  # objects stay in one thread
        return server, await server.start()

    server, port = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=60)
    try:
        yield f"127.0.0.1:{port}", run_dir
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(0.5), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@pytest.fixture
def client(coordinator, tmp_path: Path) -> Iterator[CoordinatorClient]:
    address, _ = coordinator
    client = CoordinatorClient(address, load_or_create_identity(tmp_path / "home"))
    client.join("cpu")
    yield client
    client.close()


def test_every_shard_is_trained_on_whole_and_completed_once(
    client, coordinator, tmp_path: Path
) -> None:
    _, run_dir = coordinator
    stop = threading.Event()
    watchdog = threading.Timer(120, stop.set)  # never hang the suite if leasing stalls
    watchdog.start()
    feed = ShardFeed(client, tmp_path / "cache", seq_len=64, batch_size=4, stop=stop)
    seen: dict[str, list[np.ndarray]] = {}
    order: list[str] = []
    batches_per_shard = -(-((SHARD_TOKENS - 1) // 64) // 4)
    taken = 0  # batches of the current lease (the same shard may be leased twice in a row)
    for batch in feed.batches():
        if not order or order[-1] != batch.shard_id or taken == batches_per_shard:
            order.append(batch.shard_id)
            taken = 0
            if len(order) > N_SHARDS:  # the next epoch began: the first one was completed
                break
        seen.setdefault(batch.shard_id, []).append(batch.inputs.numpy())
        taken += 1
        feed.record_loss(1.0, batch.num_tokens)
    stop.set()
    watchdog.cancel()

    assert len(seen) == N_SHARDS, order
    n_seq = (SHARD_TOKENS - 1) // 64
    for shard_id, inputs in seen.items():
        original = np.fromfile(run_dir / "data" / "shards" / f"{shard_id}.bin", dtype="<u2")
        windows = np.concatenate(inputs)
        assert windows.shape == (n_seq, 64)
        # every window once, in the shard's seeded order for epoch 0 (seed 0: make_run's)
        seq = sequence_order(0, shard_id, 0, n_seq)
        assert not (seq == np.arange(n_seq)).all()
        expected = np.stack([original[i * 64 : i * 64 + 64] for i in seq])
        assert (windows == expected).all()

    assert sorted(order[:N_SHARDS]) == sorted(seen)  # each shard once per epoch
    status = client._stub.GetStatus(pb.GetStatusRequest(), timeout=10)
    [node] = status.nodes
    assert node.shards_done == N_SHARDS  # the three of the first epoch, each counted once


def test_a_corrupt_download_is_refused_and_leaves_nothing(client, tmp_path: Path) -> None:
    lease = client.lease_shard().lease
    dest = tmp_path / "cache" / "shard.bin"
    wrong = pb.Lease()
    wrong.CopyFrom(lease)
    wrong.sha256 = "0" * 64
    with pytest.raises(ShardCorrupt, match="sha256"):
        client.fetch_shard(wrong, dest)
    assert not dest.exists() and not dest.with_suffix(".part").exists()

    client.fetch_shard(lease, dest)
    assert is_intact(dest, lease.sha256)
    data = bytearray(dest.read_bytes())
    data[10] ^= 0xFF  # a bit flip on disk: the cached copy must not be trusted any more
    dest.write_bytes(bytes(data))
    assert not is_intact(dest, lease.sha256)
    assert not dest.exists()


def test_sequence_order_is_a_permutation_new_each_epoch_and_per_shard() -> None:
    n = 500
    first = sequence_order(7, "train-00003", 0, n)
    assert sorted(first.tolist()) == list(range(n))
    assert (first == sequence_order(7, "train-00003", 0, n)).all()  # a function of its inputs
    assert not (first == sequence_order(7, "train-00003", 1, n)).all()  # next epoch
    assert not (first == sequence_order(7, "train-00004", 0, n)).all()  # another shard
    assert not (first == sequence_order(8, "train-00003", 0, n)).all()  # another run seed
    assert not (first == np.arange(n)).all()
    assert sequence_order(7, "train-00003", 0, 0).size == 0


def test_sequence_order_is_the_same_on_every_node() -> None:
    """Two fresh interpreters with different hash seeds (two nodes) compute the same order."""
    code = (
        "from gpt5os.node.shard_feed import sequence_order; "
        "print(sequence_order(3, 'train-00042', 5, 64).tolist())"
    )
    outs = [
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONHASHSEED": str(hash_seed)},
            check=True,
        ).stdout
        for hash_seed in (1, 2)
    ]
    assert outs[0] == outs[1] == str(sequence_order(3, "train-00042", 5, 64).tolist()) + "\n"


def test_cut_batches_follows_the_order() -> None:
    tokens = np.arange(41, dtype=np.uint16)
    order = np.array([3, 0, 2, 1])
    batches = list(cut_batches(tokens, seq_len=10, batch_size=3, order=order))
    inputs = np.concatenate([b[0] for b in batches])
    targets = np.concatenate([b[1] for b in batches])
    assert [len(b[0]) for b in batches] == [3, 1]
    assert (inputs[:, 0] == order * 10).all() and (targets == inputs + 1).all()
