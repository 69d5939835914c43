"""Validation loss on the run's held-out shards, measured on θ_global after each outer round.

Every node evaluates the same first tokens of the first validation shard, so the numbers the
coordinator averages are comparable; the budget is small enough to cost little next to a round.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from gpt5os.proto import pb

from .coordinator_client import CoordinatorClient, CoordinatorError, ShardCorrupt
from .shard_feed import cut_batches, is_intact

log = logging.getLogger(__name__)

VAL_TOKENS = 2048  # tokens evaluated per measurement


class Validator:
    def __init__(
        self,
        client: CoordinatorClient,
        shards: list[pb.Lease],
        cache_dir: Path,
        *,
        seq_len: int,
        batch_size: int,
    ) -> None:
        self.client = client
        self.shard = shards[0] if shards else None
        self.cache_dir = Path(cache_dir)
        self.seq_len = seq_len
        self.batch_size = batch_size
        self._tokens: np.ndarray | None = None

    def _load(self) -> np.ndarray | None:
        if self._tokens is None and self.shard is not None:
            path = self.cache_dir / f"{self.shard.sha256}.bin"
            try:
                if not is_intact(path, self.shard.sha256):
                    self.client.fetch_shard(self.shard, path)
            except (CoordinatorError, ShardCorrupt) as e:
                log.warning("validation shard unavailable: %s", e)
                return None
            self._tokens = np.fromfile(path, dtype="<u2")[: VAL_TOKENS + 1]
        return self._tokens

    @torch.no_grad()
    def loss(self, model: torch.nn.Module, device: torch.device) -> float | None:
        """Mean next-token loss over the validation budget; None when the run has no val split."""
        tokens = self._load()
        if tokens is None:
            return None
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        try:
            for inputs, targets in cut_batches(tokens, self.seq_len, self.batch_size):
                x = torch.from_numpy(inputs).to(device)
                y = torch.from_numpy(targets).to(device)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    loss = model.loss(x, y)
                total += float(loss) * y.numel()
                count += y.numel()
        finally:
            model.train(was_training)
        return total / count if count else None
