"""Helpers for tests of the coordinator and of code that talks to it (node, dashboard).

`make_data_dir` writes a small prepared-data directory by hand (random tokens, a real
manifest with real sha256 digests), so tests need neither the tokenizer nor the stdlib corpus.
`make_run` adds a run on top. `node_key` makes a node key that channels from `aio_channel` /
`sync_channel` sign with (every node request must be signed, common/request_signing.py).
`serving` runs a CoordinatorServer for the length of an `async with`; `ThreadedServer` runs one
on its own event-loop thread for synchronous clients. Nothing here is used by the coordinator
itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpt5os.common.request_signing import Keyring
from gpt5os.coordinator.manifest import Manifest, ShardInfo, save_manifest
from gpt5os.coordinator.run_spec import RunSpec, preset_spec, val_tokens_needed
from gpt5os.coordinator.runs import create_run


def make_data_dir(
    data_dir: Path,
    *,
    n_train: int = 8,
    n_val: int = 1,
    shard_tokens: int = 4096,
    val_tokens: int | None = None,
    seed: int = 0,
) -> Manifest:
    """Write `n_train` + `n_val` shards of random uint16 tokens (token 0 = document separator);
    val shards are longer when `val_tokens` (in all; default: what a default tiny run needs,
    so `init` accepts the data) needs it."""
    if val_tokens is None:
        val_tokens = preset_spec("tiny", run_id="testkit").val_tokens
    rng = random.Random(seed)
    val_shard_tokens = max(shard_tokens, -(-val_tokens // n_val) if n_val else 0)
    (data_dir / "shards").mkdir(parents=True, exist_ok=True)
    shards = []
    for i in range(n_train + n_val):
        split = "train" if i < n_train else "val"
        shard_id = f"{split}-{i:05d}"
        n_tokens = shard_tokens if split == "train" else val_shard_tokens
        data = bytes(rng.getrandbits(8) for _ in range(2 * n_tokens))
        rel = f"shards/{shard_id}.bin"
        (data_dir / rel).write_bytes(data)
        shards.append(
            ShardInfo(
                shard_id=shard_id,
                split=split,
                tokens=n_tokens,
                size_bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                path=rel,
            )
        )
    manifest = Manifest(tokenizer="rwkv-world-v20230424", shard_tokens=shard_tokens, shards=shards)
    save_manifest(data_dir, manifest)
    return manifest


def make_run(
    run_dir: Path, *, n_train: int = 8, n_val: int = 1, shard_tokens: int = 4096, **spec: Any
) -> RunSpec:
    """A run in `run_dir` over a hand-made data dir in `run_dir/data`, with as many held-out
    tokens as the run's validation needs."""
    base = preset_spec(spec.get("preset") or "tiny", run_id="testkit")
    need = val_tokens_needed(
        spec.get("seq_len") or base.seq_len,
        spec.get("batch_size") or base.batch_size,
        spec.get("val_batches") or base.val_batches,
    )
    make_data_dir(
        run_dir / "data",
        n_train=n_train,
        n_val=n_val,
        shard_tokens=shard_tokens,
        val_tokens=need if n_val else 0,
    )
    return create_run(run_dir, run_dir / "data", **spec)


KEYRING = Keyring()  # every key a test made: the test channels sign with the matching one


def node_key(seed: bytes | None = None) -> bytes:
    """A new node key (from a 32-byte `seed` when given) that test channels sign with; returns
    the raw public key a JoinRequest carries."""
    key = Ed25519PrivateKey.from_private_bytes(seed) if seed else Ed25519PrivateKey.generate()
    return KEYRING.add(key)


def aio_channel(address: str, **kwargs: Any) -> grpc.aio.Channel:
    """A grpc.aio channel whose node requests are signed with the keys from `node_key`."""
    return grpc.aio.insecure_channel(address, interceptors=KEYRING.aio_interceptors(), **kwargs)


def sync_channel(address: str) -> grpc.Channel:
    """A synchronous channel whose node requests are signed with the keys from `node_key`."""
    return grpc.intercept_channel(grpc.insecure_channel(address), KEYRING.interceptor())


@contextlib.asynccontextmanager
async def serving(run_dir: Path, **settings: Any) -> AsyncIterator[Any]:
    """A started CoordinatorServer on a free port (`settings`: its keyword arguments), stopped
    when the block ends, however it ends."""
    from gpt5os.coordinator.server import CoordinatorServer

    server = CoordinatorServer(run_dir, port=0, **settings)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(grace=0.1)


class ThreadedServer:
    """A CoordinatorServer on its own event-loop thread, for synchronous clients (the node's
    CoordinatorClient, the dashboard's source). `close()` stops both."""

    def __init__(self, run_dir: Path, **settings: Any) -> None:
        from gpt5os.coordinator.server import CoordinatorServer

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

        async def start() -> CoordinatorServer:  # built in the loop's thread (SQLite objects)
            server = CoordinatorServer(run_dir, port=0, **settings)
            await server.start()
            return server

        self.server = asyncio.run_coroutine_threadsafe(start(), self.loop).result(timeout=60)
        self.address = self.server.address

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(0.2), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=30)
        self.loop.close()
