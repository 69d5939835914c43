"""DiLoCo's outer loop state: the global parameters, the outer Nesterov optimizer, pseudo-gradients.

θ_global lives on the CPU in fp32 (like OpenDiLoCo's offloading): the device holds only the
local model that inner AdamW steps move. After a round, every peer applies the same averaged
pseudo-gradient Δ = θ_global − θ_local to its θ_global with SGD(lr, momentum, nesterov) and resets
θ_local to it, so all peers start the next round from the same point.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

import torch
from gpt5os.coordinator.run_spec import OuterOptimizerSpec, outer_schedule
from gpt5os.model.checkpoint import tensors_sha256

__all__ = ["LivePseudoGradients", "OuterState", "tensors_sha256"]


class LivePseudoGradients(Sequence):
    """Δ_i = θ_global_i − θ_local_i, computed when item i is read (fp32, on the CPU), never held
    for all tensors at once: a round's averaging reads each Δ_i when it writes the wire buffer,
    commits the error feedback, or steps alone, and recomputes the same bits each time (the
    elementwise subtraction of the same operands). Valid only while neither θ changes: the
    non-overlapped round, where training waits for the average (memory.py)."""

    def __init__(self, outer: OuterState) -> None:
        self._outer = outer

    def __len__(self) -> int:
        return len(self._outer.global_params)

    def numels(self) -> list[int]:
        """The tensors' sizes, without computing them."""
        return [g.numel() for g in self._outer.global_params]

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        with torch.no_grad():
            g, p = self._outer.global_params[i], self._outer.local_params[i]
            return g - p.detach().to("cpu", torch.float32)

    def __iter__(self) -> Iterator[torch.Tensor]:
        return (self[i] for i in range(len(self)))


class OuterState:
    """θ_global plus the outer optimizer's momentum; thread-safe against state-sharing requests."""

    def __init__(self, model: torch.nn.Module, outer: OuterOptimizerSpec) -> None:
        self.spec = outer
        self.local_params = [p for p in model.parameters()]
        self.global_params = [
            p.detach().to("cpu", torch.float32).clone() for p in self.local_params
        ]
        self.optimizer = torch.optim.SGD(
            self.global_params,
            lr=outer.lr,
            momentum=outer.momentum,
            nesterov=outer.nesterov and outer.momentum > 0,
        )
        # Momentum buffers exist from the start (zeros behave exactly like the lazy first step), so
        # a peer's state can be shared before its first outer round.
        if outer.momentum > 0:
            for p in self.global_params:
                self.optimizer.state[p]["momentum_buffer"] = torch.zeros_like(p)
        self.lock = threading.Lock()
        self.round = 0  # outer rounds applied to θ_global
        self.swarm_tokens = 0  # tokens the swarm trained into θ_global (drives the LR schedule)
        self.group_size = 0  # peers whose work the last round averaged (0: the initial state)

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.global_params)

    def pseudo_gradients(self) -> list[torch.Tensor]:
        """Δ = θ_global − θ_local for every parameter, on the CPU in fp32 (a copy: 4 bytes a
        parameter; see `live_pseudo_gradients` for a round that holds none)."""
        return list(self.live_pseudo_gradients())

    def live_pseudo_gradients(self) -> LivePseudoGradients:
        """Δ computed per tensor when read, the same bits as `pseudo_gradients` (see the class)."""
        return LivePseudoGradients(self)

    def apply_outer_step(
        self,
        averaged: Sequence[torch.Tensor],
        *,
        tokens: int,
        group_size: int,
        delayed: bool = False,
    ) -> None:
        """θ_global ← OuterSGD(θ_global, Δ_avg); one more round, `tokens` more; then θ_local ←
        θ_global, or with `delayed` (an overlapped round, see `begin_overlapped_round`)
        θ_local += θ_global_new − θ_global_old: the steps trained since keep their progress.

        One tensor at a time (SGD's CPU step is per tensor anyway, so the bits are the same as
        one step over all): an fp32 copy of Δ_avg, where one is needed, and the old θ_global
        exist for one tensor only, and `averaged` may be the wire buffers themselves or
        `LivePseudoGradients` (read before θ_local changes)."""
        with self.lock, torch.no_grad():
            self.round += 1
            self.swarm_tokens += tokens
            self.group_size = group_size
            # the round's outer lr and momentum (warmup): the same on every peer for a round
            lr, momentum = outer_schedule(self.spec, self.round)
            for group in self.optimizer.param_groups:
                group["lr"], group["momentum"] = lr, momentum
            for i, g in enumerate(self.global_params):
                old = g.clone() if delayed else None
                g.grad = averaged[i].to(torch.float32).reshape(g.shape)
                self.optimizer.step()  # only g has a gradient: the other tensors are skipped
                g.grad = None
                if old is not None:
                    p = self.local_params[i]
                    p.add_((g - old).to(p.device, p.dtype))
            if not delayed:
                self._copy_global_to_local()

    def begin_overlapped_round(self) -> list[torch.Tensor]:
        """Δ = θ_global − θ_local for a round averaged in the background, and θ_local ← θ_global
        (the old one): the next round's first steps train from it, and `apply_outer_step(...,
        delayed=True)` moves them by the global update once it lands (the one-step-delayed outer
        update of Streaming DiLoCo / arXiv 2502.12996)."""
        deltas = self.pseudo_gradients()
        self.reset_local()
        return deltas

    def reset_local(self) -> None:
        """Throw away local progress: θ_local ← θ_global."""
        with self.lock, torch.no_grad():
            self._copy_global_to_local()

    def _copy_global_to_local(self) -> None:
        for g, p in zip(self.global_params, self.local_params, strict=False):
            p.copy_(g.to(p.device, p.dtype))

    def momentum_buffers(self) -> list[torch.Tensor]:
        return [
            self.optimizer.state[p].get("momentum_buffer", torch.zeros_like(p))
            for p in self.global_params
        ]

    def export(self) -> tuple[dict[str, int], list[torch.Tensor]]:
        """(round, swarm tokens) and copies of θ_global and momentum, taken atomically, for a peer
        that downloads our state."""
        with self.lock:
            meta = {
                "round": self.round,
                "swarm_tokens": self.swarm_tokens,
                "group_size": self.group_size,
            }
            return meta, [t.clone() for t in self.global_params + self.momentum_buffers()]

    def import_state(self, meta: dict, tensors: Sequence[torch.Tensor]) -> None:
        """Adopt a peer's state (and reset θ_local to it); ValueError when it does not fit."""
        n = len(self.global_params)
        if len(tensors) != 2 * n:
            raise ValueError(f"peer state has {len(tensors)} tensors, expected {2 * n}")
        for g, t in zip(self.global_params, tensors[:n], strict=False):
            if g.numel() != t.numel():
                raise ValueError("peer state does not match this model's shapes")
        with self.lock, torch.no_grad():
            self.round = int(meta["round"])
            self.swarm_tokens = int(meta["swarm_tokens"])
            self.group_size = int(meta.get("group_size", 0))
            for g, t in zip(self.global_params, tensors[:n], strict=False):
                g.copy_(t.reshape(g.shape))
            for buf, t in zip(self.momentum_buffers(), tensors[n:], strict=False):
                buf.copy_(t.reshape(buf.shape))
            self._copy_global_to_local()

    def digest(self) -> str:
        """sha256 of θ_global's bytes: equal on two peers iff their global models are identical."""
        with self.lock:
            return tensors_sha256(self.global_params)
