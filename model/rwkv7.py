"""RWKV-7 "Goose" (x070) in PyTorch: the same math, parameter names and initialisation as the
reference (BlinkDL/RWKV-LM, RWKV-v7/train_temp), so official checkpoints load and exports run in
the `rwkv` package.

One block::

    x = ln0(emb)                              (layer 0 only)
    x = x + TimeMix(ln1(x))                   (attention-like: the WKV state machine)
    x = x + ChannelMix(ln2(x))                (a squared-ReLU MLP with token shift)

The same forward runs a whole sequence in parallel (training, prefill) or continues from a
carried `RWKV7State` (RNN decoding): token shift reads the previous token's normalised input from
the state, and WKV starts from the state's matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import ModelConfig
from .wkv import wkv7

# the decay is exp(-exp(-0.5) * sigmoid(z)) = exp(-exp(-softplus(-z) - 0.5)): always in
# (exp(-e^-0.5), 1) ~ (0.545, 1), the clamp the chunked CPU path relies on
DECAY_SCALE = math.exp(-0.5)


@dataclass
class RWKV7State:
    """Recurrent state of the whole model after some tokens.

    :param att_shift: ``[L, B, C]`` last ln1 output of each layer (time-mix token shift)
    :param wkv: ``[L, B, H, N, N]`` fp32 WKV state of each layer (value x key)
    :param ffn_shift: ``[L, B, C]`` last ln2 output of each layer (channel-mix token shift)
    """

    att_shift: Tensor
    wkv: Tensor
    ffn_shift: Tensor

    @classmethod
    def zeros(cls, config: ModelConfig, batch: int, device=None, dtype=torch.float32) -> RWKV7State:
        c, n_layer, h, n = config.n_embd, config.n_layer, config.n_head, config.head_size
        return cls(
            att_shift=torch.zeros(n_layer, batch, c, device=device, dtype=dtype),
            wkv=torch.zeros(n_layer, batch, h, n, n, device=device, dtype=torch.float32),
            ffn_shift=torch.zeros(n_layer, batch, c, device=device, dtype=dtype),
        )

    def detach(self) -> RWKV7State:
        return RWKV7State(self.att_shift.detach(), self.wkv.detach(), self.ffn_shift.detach())

    def clone(self) -> RWKV7State:
        return RWKV7State(self.att_shift.clone(), self.wkv.clone(), self.ffn_shift.clone())


def _token_shift(x: Tensor, prev: Tensor | None) -> Tensor:
    """x shifted one step later in time; position 0 gets `prev` (zeros at a sequence start)."""
    first = torch.zeros_like(x[:, :1]) if prev is None else prev[:, None].to(x.dtype)
    return torch.cat([first, x[:, :-1]], dim=1)


def _orthogonal_(x: Tensor, gain: float) -> Tensor:
    return nn.init.orthogonal_(x, gain=gain)


def _lora_out_init(x: Tensor, scale: float) -> Tensor:
    """Reference `ortho_init` for a [rank, C] LoRA output matrix."""
    gain = math.sqrt(x.shape[0] / x.shape[1]) if x.shape[0] > x.shape[1] else 1.0
    return _orthogonal_(x, gain * scale)


class TimeMix(nn.Module):
    """RWKV_Tmix_x070: data-dependent decay, in-context learning rate and value residual."""

    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id, self.n_layer = layer_id, config.n_layer
        self.n_head, self.head_size = config.n_head, config.head_size
        c = config.n_embd

        def vec() -> nn.Parameter:
            return nn.Parameter(torch.empty(1, 1, c))

        self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g = (vec() for _ in range(6))
        self.w0, self.w1 = vec(), nn.Parameter(torch.empty(c, config.d_decay_lora))
        self.w2 = nn.Parameter(torch.empty(config.d_decay_lora, c))
        self.a0, self.a1 = vec(), nn.Parameter(torch.empty(c, config.d_aaa_lora))
        self.a2 = nn.Parameter(torch.empty(config.d_aaa_lora, c))
        if layer_id > 0:  # layer 0's v is the residual source: no gate
            self.v0, self.v1 = vec(), nn.Parameter(torch.empty(c, config.d_mv_lora))
            self.v2 = nn.Parameter(torch.empty(config.d_mv_lora, c))
        self.g1 = nn.Parameter(torch.empty(c, config.d_gate_lora))
        self.g2 = nn.Parameter(torch.empty(config.d_gate_lora, c))
        self.k_k, self.k_a = vec(), vec()
        self.r_k = nn.Parameter(torch.empty(self.n_head, self.head_size))
        self.receptance = nn.Linear(c, c, bias=False)
        self.key = nn.Linear(c, c, bias=False)
        self.value = nn.Linear(c, c, bias=False)
        self.output = nn.Linear(c, c, bias=False)
        self.ln_x = nn.GroupNorm(self.n_head, c, eps=64e-5)  # the reference's eps, not 1e-5

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The reference initialisation (module init + `generate_init_weight` overrides)."""
        c, n = self.x_r.shape[-1], self.head_size
        ratio_0_to_1 = self.layer_id / max(self.n_layer - 1, 1)
        ratio_1_to_almost0 = 1.0 - self.layer_id / self.n_layer
        ddd = torch.arange(c, dtype=torch.float32) / c
        for p, e in ((self.x_r, 0.2), (self.x_w, 0.9), (self.x_k, 0.7), (self.x_v, 0.7),
                     (self.x_a, 0.9), (self.x_g, 0.2)):  # fmt: skip
            p.copy_((1.0 - torch.pow(ddd, e * ratio_1_to_almost0)).view(1, 1, c))
        i = torch.arange(c, dtype=torch.float64)
        linear = i / (c - 1) - 0.5
        zigzag = ((i % n) - (n - 1) / 2) / ((n - 1) / 2)
        zigzag = zigzag * zigzag.abs()
        www = -6 + 6 * (i / (c - 1)) ** (1 + 1 * ratio_0_to_1**0.3)
        self.w1.zero_()
        _lora_out_init(self.w2, 0.1)
        self.w0.copy_((www + 0.5 + zigzag * 2.5).view(1, 1, c))
        self.a1.zero_()
        _lora_out_init(self.a2, 0.1)
        self.a0.copy_((-0.19 + zigzag * 0.3 + linear * 0.4).view(1, 1, c))
        if self.layer_id > 0:
            self.v1.zero_()
            _lora_out_init(self.v2, 0.1)
            self.v0.copy_((0.73 - linear * 0.4).view(1, 1, c))
        self.g1.zero_()
        _lora_out_init(self.g2, 0.1)
        self.k_k.copy_((0.71 - linear * 0.1).view(1, 1, c))
        self.k_a.fill_(1.02)
        self.r_k.fill_(-0.04)
        _orthogonal_(self.receptance.weight, 1.0)
        _orthogonal_(self.key.weight, 0.1)
        _orthogonal_(self.value.weight, 1.0)
        self.output.weight.zero_()
        self.ln_x.weight.fill_(((1 + self.layer_id) / self.n_layer) ** 0.7)
        self.ln_x.bias.zero_()

    def forward(
        self, x: Tensor, v_first: Tensor | None, shift: Tensor | None, s: Tensor | None, impl: str
    ) -> tuple[Tensor, Tensor, Tensor]:
        """x: ln1 output [B, T, C]. Returns (out, v_first, final WKV state)."""
        bsz, t_len, c = x.shape
        h, n = self.n_head, self.head_size
        xx = _token_shift(x, shift) - x
        xr, xw, xk = x + xx * self.x_r, x + xx * self.x_w, x + xx * self.x_k
        xv, xa, xg = x + xx * self.x_v, x + xx * self.x_a, x + xx * self.x_g

        r = self.receptance(xr)
        w_raw = self.w0 + torch.tanh(xw @ self.w1) @ self.w2
        k = self.key(xk)
        v = self.value(xv)
        if self.layer_id == 0:
            v_first = v
        else:  # value residual: mix in layer 0's value through a learned gate
            assert v_first is not None
            v = v + (v_first - v) * torch.sigmoid(self.v0 + (xv @ self.v1) @ self.v2)
        a = torch.sigmoid(self.a0 + (xa @ self.a1) @ self.a2)  # in-context learning rate
        g = torch.sigmoid(xg @ self.g1) @ self.g2

        kk = F.normalize((k * self.k_k).view(bsz, t_len, h, n), dim=-1, p=2.0).view(bsz, t_len, c)
        k = k * (1 + (a - 1) * self.k_a)
        w = torch.exp(-DECAY_SCALE * torch.sigmoid(w_raw.float()))  # fp32: near-1 decays

        def heads(t: Tensor) -> Tensor:
            return t.view(bsz, t_len, h, n)

        y, s_out = wkv7(
            heads(r), heads(w), heads(k), heads(v), heads(-kk), heads(kk * a), state=s, impl=impl
        )
        y = self.ln_x(y.reshape(bsz * t_len, c).to(x.dtype)).view(bsz, t_len, c)
        bonus = (heads(r) * heads(k) * self.r_k).sum(dim=-1, keepdim=True) * heads(v)
        y = y + bonus.view(bsz, t_len, c)
        return self.output(y * g), v_first, s_out


class ChannelMix(nn.Module):
    """RWKV_CMix_x070: token shift, then relu(key x)^2 -> value."""

    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id, self.n_layer = layer_id, config.n_layer
        c = config.n_embd
        self.x_k = nn.Parameter(torch.empty(1, 1, c))
        self.key = nn.Linear(c, config.dim_ffn, bias=False)
        self.value = nn.Linear(config.dim_ffn, c, bias=False)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        c = self.x_k.shape[-1]
        ratio_1_to_almost0 = 1.0 - self.layer_id / self.n_layer
        ddd = torch.arange(c, dtype=torch.float32) / c
        self.x_k.copy_((1.0 - torch.pow(ddd, ratio_1_to_almost0**4)).view(1, 1, c))
        _orthogonal_(self.key.weight, 1.0)
        self.value.weight.zero_()

    def forward(self, x: Tensor, shift: Tensor | None) -> Tensor:
        k = x + (_token_shift(x, shift) - x) * self.x_k
        return self.value(torch.relu(self.key(k)) ** 2)


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.layer_id = layer_id
        c = config.n_embd
        if layer_id == 0:
            self.ln0 = nn.LayerNorm(c)
        self.ln1 = nn.LayerNorm(c)
        self.ln2 = nn.LayerNorm(c)
        self.att = TimeMix(config, layer_id)
        self.ffn = ChannelMix(config, layer_id)


class RWKV7(nn.Module):
    """The RWKV-7 language model.

    :param config: the model's shape
    :param init_weights: run the reference initialisation (False leaves weights uninitialised,
        for loaders that overwrite every tensor anyway)

    Example::

        torch.manual_seed(0)
        model = RWKV7(ModelConfig.from_preset("tiny"))
        logits = model(idx)                                   # [B, T, vocab]
        logits, state = model(idx[:, :10], return_state=True)  # prefill
        logits, state = model(idx[:, 10:11], state, return_state=True)  # one RNN step
    """

    def __init__(self, config: ModelConfig, *, init_weights: bool = True) -> None:
        super().__init__()
        self.config = config
        self.wkv_impl = "auto"  # see gpt5os.model.wkv7
        self.emb = nn.Embedding(config.vocab_size, config.n_embd)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.ln_out = nn.LayerNorm(config.n_embd)
        self.head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if init_weights:
            self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Reference init; deterministic given `torch.manual_seed` (CPU)."""
        for block in self.blocks:
            block.att.reset_parameters()
            block.ffn.reset_parameters()
            for ln in (getattr(block, "ln0", None), block.ln1, block.ln2):
                if ln is not None:
                    ln.reset_parameters()
        self.ln_out.reset_parameters()
        nn.init.uniform_(self.emb.weight, a=-1e-4, b=1e-4)
        v, c = self.config.vocab_size, self.config.n_embd
        _orthogonal_(self.head.weight, 0.5 * math.sqrt(v / c) if v > c else 0.5)

    def zero_state(self, batch: int = 1) -> RWKV7State:
        p = self.head.weight
        return RWKV7State.zeros(self.config, batch, device=p.device, dtype=p.dtype)

    def forward(
        self,
        idx: Tensor,
        state: RWKV7State | None = None,
        *,
        return_state: bool = False,
        only_last: bool = False,
    ) -> Tensor | tuple[Tensor, RWKV7State]:
        """Logits ``[B, T, vocab]`` for token ids ``idx [B, T]``.

        :param state: continue after the tokens that produced it (None: start of sequence)
        :param return_state: also return the state after the last token (a new object; the
            input state is not modified, and gradients flow through it)
        :param only_last: logits of the last position only (``[B, 1, vocab]``): prefill
            without paying for the head on every prompt token
        """
        if idx.dim() != 2:
            raise ValueError(f"idx must be [B, T] token ids, got shape {tuple(idx.shape)}")
        x = self.emb(idx)
        v_first = None
        att_shift, wkv_states, ffn_shift = [], [], []
        for i, block in enumerate(self.blocks):
            if i == 0:
                x = block.ln0(x)
            xa = block.ln1(x)
            out, v_first, s_out = block.att(
                xa,
                v_first,
                None if state is None else state.att_shift[i],
                None if state is None else state.wkv[i],
                self.wkv_impl,
            )
            x = x + out
            xf = block.ln2(x)
            x = x + block.ffn(xf, None if state is None else state.ffn_shift[i])
            if return_state:
                att_shift.append(xa[:, -1])
                wkv_states.append(s_out)
                ffn_shift.append(xf[:, -1])
        if only_last:
            x = x[:, -1:]
        logits = self.head(self.ln_out(x))
        if not return_state:
            return logits
        new_state = RWKV7State(
            torch.stack(att_shift), torch.stack(wkv_states), torch.stack(ffn_shift)
        )
        return logits, new_state

    def loss(self, idx: Tensor, targets: Tensor) -> Tensor:
        """Mean next-token cross-entropy (fp32) of `targets [B, T]` given `idx [B, T]`."""
        logits = self(idx)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())
