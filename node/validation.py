"""Validation loss on the run's held-out split, measured on θ_global after each outer round.

Every node evaluates the same tokens: the first `val_batches` full batches (batch_size sequences
of seq_len) of the held-out stream, i.e. the run's validation shards concatenated in the order
the coordinator lists them (manifest order). `init` refuses a run whose held-out split is
shorter than that (coordinator/runs.py), so every preset reports a validation loss. A node that
cannot fill the budget (a run made before that check) reports none rather than a loss over
other tokens than its peers'.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from gpt5os.coordinator.run_spec import val_tokens_needed
from gpt5os.proto import pb

from .coordinator_client import CoordinatorClient, CoordinatorError, ShardCorrupt
from .shard_feed import cut_batches, is_intact

log = logging.getLogger(__name__)


def held_out_tokens(shards: Iterable[np.ndarray], needed: int) -> np.ndarray | None:
    """The first `needed` tokens of the shards' concatenation, reading no shard more than it
    takes; None when they hold fewer."""
    parts, have = [], 0
    for tokens in shards:
        parts.append(tokens[: needed - have])
        have += len(parts[-1])
        if have >= needed:
            return np.concatenate(parts)
    return None


def validation_batches(
    tokens: np.ndarray, *, seq_len: int, batch_size: int, val_batches: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Exactly `val_batches` full [batch_size, seq_len] (inputs, targets) batches from `tokens`."""
    batches = list(cut_batches(tokens, seq_len, batch_size))[:val_batches]
    if len(batches) < val_batches or batches[-1][0].shape[0] < batch_size:
        raise ValueError(
            f"{len(tokens)} held-out tokens do not fill {val_batches} batches of "
            f"{batch_size} x {seq_len}"
        )
    return batches


class Validator:
    def __init__(
        self,
        client: CoordinatorClient,
        shards: list[pb.Lease],
        cache_dir: Path,
        *,
        seq_len: int,
        batch_size: int,
        val_batches: int,
    ) -> None:
        self.client = client
        self.shards = list(shards)
        self.cache_dir = Path(cache_dir)
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.val_batches = val_batches
        self._batches: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._unavailable = False

    def _shard_tokens(self) -> Iterable[np.ndarray]:
        for shard in self.shards:
            path = self.cache_dir / f"{shard.sha256}.bin"
            if not is_intact(path, shard.sha256):
                self.client.fetch_shard(shard, path)
            yield np.fromfile(path, dtype="<u2")

    def _load(self) -> list[tuple[np.ndarray, np.ndarray]] | None:
        if self._batches is None and not self._unavailable:
            needed = val_tokens_needed(self.seq_len, self.batch_size, self.val_batches)
            try:
                tokens = held_out_tokens(self._shard_tokens(), needed)
            except (CoordinatorError, ShardCorrupt) as e:
                log.warning("validation shards unavailable: %s; trying again next round", e)
                return None
            if tokens is None:
                self._unavailable = True
                log.warning(
                    "the run's held-out split holds fewer than the %d tokens of %d validation "
                    "batches: no validation loss will be reported",
                    needed,
                    self.val_batches,
                )
                return None
            self._batches = validation_batches(
                tokens,
                seq_len=self.seq_len,
                batch_size=self.batch_size,
                val_batches=self.val_batches,
            )
        return self._batches

    @torch.no_grad()
    def loss(self, model: torch.nn.Module, device: torch.device) -> float | None:
        """Mean next-token loss over the validation batches; None when there are none."""
        batches = self._load()
        if batches is None:
            return None
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        try:
            for inputs, targets in batches:
                x = torch.from_numpy(inputs).to(device)
                y = torch.from_numpy(targets).to(device)
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    loss = model.loss(x, y)
                total += float(loss) * y.numel()
                count += y.numel()
        finally:
            model.train(was_training)
        return total / count
