"""A stand-in for the compiled CUDA extension, for tests on machines without a GPU: the two
kernels of kernels/wkv7.cu transcribed into batched PyTorch (fp32, bf16 in and out), with the
same buffers: the forward saves sa_t and the state at every chunk end only when asked to; the
backward rebuilds S_{t-1} from those by backstepping, as the kernel does. Swapped in for
`wkv_cuda._extension`, it lets the custom ops, their fake implementations, the autograd formula,
opcheck and tracing run on CPU tensors, and checks that the forward saves what the backward reads.
"""

from __future__ import annotations

import torch
from gpt5os.model.wkv_cuda import CHUNK
from torch import Tensor


def forward(r, w, k, v, a, b, s0, save: bool, stream: int) -> list[Tensor]:
    bsz, t_len, h, n = r.shape
    r, k, v, a, b = (x.float() for x in (r, k, v, a, b))
    n_chunks = -(-t_len // CHUNK)
    y = torch.empty(bsz, t_len, h, n)
    s_saved = torch.empty(bsz, h, n_chunks, n, n) if save else torch.empty(0)
    sa_saved = torch.empty(bsz, t_len, h, n) if save else torch.empty(0)
    s = s0.clone()  # [B, H, N, N], value x key
    for t in range(t_len):
        sa = (s * a[:, t, :, None, :]).sum(-1)
        s = s * w[:, t, :, None, :] + sa[..., None] * b[:, t, :, None, :]
        s = s + v[:, t, :, :, None] * k[:, t, :, None, :]
        y[:, t] = (s * r[:, t, :, None, :]).sum(-1)
        if save:
            sa_saved[:, t] = sa
            if (t + 1) % CHUNK == 0 or t == t_len - 1:
                s_saved[:, :, t // CHUNK] = s
    return [y.to(torch.bfloat16), s, s_saved, sa_saved]


def backward(r, w, k, v, a, b, dy, ds_out, s_saved, sa, stream: int) -> list[Tensor]:
    bsz, t_len, h, n = r.shape
    r, k, v, a, b, dy = (x.float() for x in (r, k, v, a, b, dy))
    grads = [torch.empty(bsz, t_len, h, n) for _ in range(6)]
    dr, dw, dk, dv, da, db = grads
    ds = ds_out.clone()
    s = None
    for t in reversed(range(t_len)):
        if (t + 1) % CHUNK == 0 or t == t_len - 1:  # exact S_t from the forward's checkpoint
            s = s_saved[:, :, t // CHUNK].clone()
        col = {name: x[:, t, :, None, :] for name, x in zip("rwkvab", (r, w, k, v, a, b), strict=True)}  # fmt: skip
        dyt, sat, vt = dy[:, t, :, :, None], sa[:, t, :, :, None], v[:, t, :, :, None]
        dr[:, t] = (s * dyt).sum(-2)  # y_t = S_t r_t
        ds = ds + dyt * col["r"]
        s = (s - sat * col["b"] - vt * col["k"]) / col["w"]  # back to S_{t-1}
        dw[:, t] = (ds * s).sum(-2)
        dk[:, t] = (ds * vt).sum(-2)
        db[:, t] = (ds * sat).sum(-2)
        dv[:, t] = (ds * col["k"]).sum(-1)
        dsa = (ds * col["b"]).sum(-1, keepdim=True)
        da[:, t] = (dsa * s).sum(-2)
        ds = ds * col["w"] + dsa * col["a"]
    bf = torch.bfloat16
    return [dr.to(bf), dw, dk.to(bf), dv.to(bf), da.to(bf), db.to(bf), ds]
