"""Training data for one node: lease shards, download and verify them, cut them into batches, and
complete each shard once it has been trained on.

A background thread keeps the next shard downloaded while the current one trains, so the GPU never
waits on the network. Shards are cached by sha256 in the node's home: a restarted node that is
leased the same shard again does not download it twice.

A shard's sequences are trained in a seeded permutation, per shard and epoch (`sequence_order`):
consecutive inner steps then mix documents instead of walking through one file, a new epoch
sees the shard in a new order, and every node that is leased the same shard in the same epoch
trains it in the same order (the order is a function of the run's seed, the shard id and the
epoch only), so a shard re-leased after a node left is trained the same way.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gpt5os.proto import pb

from .coordinator_client import Banned, CoordinatorClient, CoordinatorError, ShardCorrupt

log = logging.getLogger(__name__)

MAX_FETCH_ATTEMPTS = 3


@dataclass
class LoadedShard:
    lease: pb.Lease
    tokens: np.ndarray  # uint16


@dataclass
class Batch:
    inputs: torch.Tensor  # [B, T] int64
    targets: torch.Tensor  # [B, T] int64
    shard_id: str

    @property
    def num_tokens(self) -> int:
        return self.targets.numel()


def sequence_count(n_tokens: int, seq_len: int) -> int:
    """Windows of seq_len+1 tokens a shard holds (consecutive windows share one token)."""
    return max(0, (n_tokens - 1) // seq_len)


def sequence_order(seed: int, shard_id: str, epoch: int, n_seq: int) -> np.ndarray:
    """The order a shard's sequences are trained in: a permutation seeded by the run's seed, the
    shard and the epoch (sha256 of the shard id: Python's hash() differs between processes)."""
    shard_key = int.from_bytes(hashlib.sha256(shard_id.encode()).digest()[:8], "big")
    rng = np.random.default_rng(np.random.SeedSequence([seed, shard_key, epoch]))
    return rng.permutation(n_seq)


def cut_batches(
    tokens: np.ndarray, seq_len: int, batch_size: int, order: np.ndarray | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Windows of seq_len+1 tokens (inputs and next-token targets), batch_size at a time, in
    `order` (window indices; consecutive windows when None).

    The last batch of a shard may be smaller; the tail shorter than one window is dropped.
    """
    n_seq = sequence_count(len(tokens), seq_len)
    if order is None:
        order = np.arange(n_seq)
    for start in range(0, n_seq, batch_size):
        rows = order[start : start + batch_size]
        window = np.stack([tokens[i * seq_len : i * seq_len + seq_len + 1] for i in rows])
        window = window.astype(np.int64)
        yield window[:, :-1], window[:, 1:]


def is_intact(path: Path, sha256: str) -> bool:
    """A cached shard is reused only when its bytes still hash to what the lease says."""
    if not path.exists():
        return False
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != sha256:
        path.unlink(missing_ok=True)
        return False
    return True


class ShardFeed:
    """Yields training batches from leased shards and reports each finished shard to the coordinator."""

    def __init__(
        self,
        client: CoordinatorClient,
        cache_dir: Path,
        *,
        seq_len: int,
        batch_size: int,
        stop: threading.Event,
        seed: int = 0,
    ) -> None:
        self.client = client
        self.seed = seed
        self.cache_dir = Path(cache_dir)
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.stop = stop
        self.waiting_reason = ""  # why no data is flowing right now (paused, epoch drained)
        self._ready: queue.Queue[LoadedShard] = queue.Queue(maxsize=1)
        self._loss_sum = 0.0
        self._loss_tokens = 0
        self._prefetcher = threading.Thread(
            target=self._prefetch_loop, name="shard-prefetch", daemon=True
        )
        self._prefetcher.start()

    def record_loss(self, loss: float, tokens: int) -> None:
        """The trainer reports each batch's mean loss, so the shard's completion carries its mean loss."""
        self._loss_sum += loss * tokens
        self._loss_tokens += tokens

    def batches(self) -> Iterator[Batch]:
        while not self.stop.is_set():
            shard = self._next_shard()
            if shard is None:
                return
            self._loss_sum, self._loss_tokens = 0.0, 0
            lease = shard.lease
            order = sequence_order(
                self.seed,
                lease.shard_id,
                lease.epoch,
                sequence_count(len(shard.tokens), self.seq_len),
            )
            log.debug(
                "training shard %s (epoch %d) in seeded sequence order", lease.shard_id, lease.epoch
            )
            for inputs, targets in cut_batches(shard.tokens, self.seq_len, self.batch_size, order):
                if self.stop.is_set():
                    return  # the unfinished shard goes back to the queue when the node leaves
                yield Batch(
                    torch.from_numpy(inputs), torch.from_numpy(targets), shard.lease.shard_id
                )
            self._complete(shard)

    def _complete(self, shard: LoadedShard) -> None:
        mean_loss = self._loss_sum / self._loss_tokens if self._loss_tokens else 0.0
        try:
            response = self.client.complete_shard(
                shard.lease.shard_id, self._loss_tokens, mean_loss
            )
            if not response.counted:
                log.warning("shard %s was not counted: %s", shard.lease.shard_id, response.message)
        except Banned:
            pass  # the node stops (runner.py says why in one line)
        except CoordinatorError as e:
            log.warning("could not complete shard %s: %s", shard.lease.shard_id, e)

    def _next_shard(self) -> LoadedShard | None:
        while not self.stop.is_set():
            try:
                return self._ready.get(timeout=0.2)
            except queue.Empty:
                continue
        return None

    # -- background download -----------------------------------------------------------------

    def _prefetch_loop(self) -> None:
        while not self.stop.is_set():
            try:
                shard = self._lease_and_load()
            except Banned:
                return  # the node stops (runner.py says why in one line)
            except CoordinatorError as e:
                log.warning("leasing a shard failed: %s; retrying", e)
                self.stop.wait(2.0)
                continue
            if shard is None:
                continue
            while not self.stop.is_set():
                try:
                    self._ready.put(shard, timeout=0.2)
                    break
                except queue.Full:
                    continue

    def _lease_and_load(self) -> LoadedShard | None:
        response = self.client.lease_shard()
        if not response.granted:
            self.waiting_reason = response.reason or "no shard available"
            self.stop.wait(max(0.2, response.retry_after_s or 1.0))
            return None
        self.waiting_reason = ""
        lease = response.lease
        path = self.cache_dir / f"{lease.sha256}.bin"
        if not is_intact(path, lease.sha256):
            for attempt in range(1, MAX_FETCH_ATTEMPTS + 1):
                try:
                    self.client.fetch_shard(lease, path)
                    break
                except ShardCorrupt as e:
                    log.warning("%s (attempt %d of %d)", e, attempt, MAX_FETCH_ATTEMPTS)
            else:
                raise CoordinatorError(
                    f"shard {lease.shard_id} stayed corrupt after {MAX_FETCH_ATTEMPTS} downloads"
                )
        tokens = np.fromfile(path, dtype="<u2")
        return LoadedShard(lease, tokens)
