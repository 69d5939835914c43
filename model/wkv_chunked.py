"""WKV-7 in chunked matrix form with a hand-written backward: the fast CPU path.

Why it is fast: the per-step loop does T tiny state updates; here the sequence is cut into
chunks of L steps and everything runs as batched matmuls over all chunks at once, except a
(T/L)-step loop of three small matmul-sized ops per chunk that carries the state. The backward
is written by hand (`_ChunkedWKV`): autograd through the chunked ops spent most of its time in
small elementwise ops, slicing, concatenation and a triangular solve's backward; by hand it is
a handful of batched matmuls, one reverse loop and one elementwise pass (~2x faster overall).

The math, per head and chunk (rows are time steps, S0 the state entering the chunk,
gamma_t = w_1 * ... * w_t the cumulative decay inside the chunk)::

    u_t := S_{t-1} a_t                      (what the delta rule reads from the state)
    S_t  = S_0 diag(gamma_t) + sum_{s<=t} (u_s b_s^T + v_s k_s^T) diag(gamma_t / gamma_s)

so, with strictly-lower M[t,s] = a_t . (gamma_{t-1}/gamma_s) . b_s (and Mk with k_s):

    U = (I - M)^{-1} [ (a*gamma_prev) S0^T + Mk V ] =: X S0^T + Uv
    Y = (r*gamma) S0^T + Qb U + Qk V        (Q: lower incl. diagonal, gamma_t/gamma_s, r_t)
    S_L = S0 diag(gamma_L) + U^T (b*gamma_L/gamma) + V^T (k*gamma_L/gamma)

(I - M)^{-1}, X, Uv and V^T(k..) need no state and are computed for all chunks at once; the
loop does U = X S^T + Uv and the S_L update (as fla's chunked DPLR kernels do: this costs
O(L N^2) per chunk, where forming S_L = S0 G + H with an N x N G would cost O(N^3)). The
backward runs the same loop in reverse: dU += b_e dS_L^T, dS0 = dS_L diag(gamma_L) + dU^T X
+ dY^T (r*gamma); everything else is batched again.

Numerical range: gamma_{t}/gamma_s is formed as exp(cs_t - c) * exp(c - cs_s) with c the
cumulative log-decay at the chunk's middle, so each factor stays within (1/w_min)^(L/2). The
model's decay clamp guarantees w >= exp(-e^-0.5) ~ 0.545, giving factors <= 0.545^-16 ~ 2e4 for
L = 32. We check w >= w_min(L) = 1e-30^(1/(L+2)) (0.131 for L = 32), far below the clamp, where a
product of two factors, including the masked upper triangle, stays < 1e30 (no overflow in fp32),
and refuse other inputs, pointing at impl="reference".
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

CHUNK = 32  # chunk length L; see bench/RESULTS.md for the measured choice


def w_min(chunk: int) -> float:
    """Smallest decay factor the chunked form accepts (see the module docstring)."""
    return 10.0 ** (-30.0 / (chunk + 2))


def balanced_chunk(t_len: int, chunk: int = CHUNK) -> int:
    """The chunk length actually used: as many chunks as `chunk` needs, evened out so that the
    last one is nearly full (T = 33 runs as 2 x 17, not 2 x 32 with 31 padding steps)."""
    n_chunks = -(-t_len // chunk)
    return -(-t_len // n_chunks)


def check_decay(w: Tensor, chunk: int) -> None:
    """Refuse decays outside [w_min(chunk), 1], pointing at the implementation that takes them."""
    lo = w_min(chunk)
    wmin, wmax = (float(x) for x in torch.aminmax(w.detach()))
    if not (wmin >= lo and wmax <= 1.0):
        raise ValueError(
            f"wkv7 impl='cpu' needs decay factors w in [{lo:.3g}, 1] (the model clamps them to "
            f">= 0.545), got [{wmin:.3g}, {wmax:.3g}]; use impl='reference' for other inputs"
        )


def _masks(chunk: int, device: torch.device) -> Tensor:
    """[2L, 2L] bool mask of the stacked interaction matrix [[Mb, Mk], [Qb, Qk]]: rows of a
    (strictly earlier columns), rows of r (earlier or same step). Built per call: a cached tensor
    made under inference_mode could not be used with autograd later."""
    t = torch.arange(2 * chunk, device=device) % chunk
    rows_a = (torch.arange(2 * chunk, device=device) < chunk)[:, None]
    return torch.where(rows_a, t[:, None] > t[None, :], t[:, None] >= t[None, :])


# Inputs travel stacked in this order, [n_chunks, BH, 6, L, N] (chunks outermost, so one
# chunk's slice is contiguous for the sequential loops): a and r get the same kind of decay
# factor (they read the state), b and k the inverse one (they write it).
A, R, B, K, V, W = range(6)


def _forward(xs: Tensor, s0: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, tuple]:
    """xs [nc, BH, 6, L, N], s0 [BH, N, N] -> y [nc, BH, L, N], final state, saved tensors."""
    nc, bh, _, chunk, n = xs.shape
    a, r, b, k, v, w = xs.unbind(2)
    logw = torch.log(w)
    cs = torch.cumsum(logw, dim=-2)  # log gamma_t (inclusive)
    mid = cs[..., chunk // 2 : chunk // 2 + 1, :]
    last = cs[..., -1:, :]
    # [a; r] are scaled by gamma_{t-1}, gamma_t; [b; k] by 1 / gamma_s (all relative to mid)
    e_q = xs.new_empty(nc, bh, 2, chunk, n)
    torch.exp(cs - mid, out=e_q[:, :, 1])
    torch.div(e_q[:, :, 1], w, out=e_q[:, :, 0])
    e_k = torch.reciprocal(e_q[:, :, 1])
    queries, keys = xs.new_empty(2, nc, bh, 2 * chunk, n).unbind(0)
    torch.mul(xs[:, :, A : R + 1], e_q, out=queries.view(nc, bh, 2, chunk, n))
    torch.mul(xs[:, :, B : K + 1], e_k[:, :, None], out=keys.view(nc, bh, 2, chunk, n))
    q_all = (queries @ keys.mT).masked_fill_(~mask, 0.0)
    m_b, m_k = q_all[..., :chunk, :chunk], q_all[..., :chunk, chunk:]  # strictly lower
    q_b, q_k = q_all[..., chunk:, :chunk], q_all[..., chunk:, chunk:]  # lower incl. diagonal

    p_in = queries * torch.exp(mid)  # [a_s; r_s] = [a * gamma_{t-1}; r * gamma_t]
    bk_e = keys * torch.exp(last - mid)  # [b; k] * gamma_L / gamma_s
    a_s, r_s = p_in[..., :chunk, :], p_in[..., chunk:, :]
    b_e, k_e = bk_e[..., :chunk, :], bk_e[..., chunk:, :]
    gamma_l = torch.exp(last)  # [nc, BH, 1, N]

    # (I - Mb)^-1 by a triangular solve against I: L x L right-hand sides are ~7x cheaper than
    # solving for the L x 2N right-hand sides directly, and the backward reuses the inverse
    eye = torch.eye(chunk, dtype=xs.dtype, device=xs.device)
    tinv = torch.linalg.solve_triangular(eye - m_b, eye.expand_as(m_b), upper=False,
                                         unitriangular=True)  # fmt: skip
    x_s = tinv @ a_s  # U = X S0^T + Uv
    mv = m_k @ v
    u_v = tinv @ mv
    hv = v.mT @ k_e  # the state's write that does not depend on the state

    # sequential over chunks, per chunk: U = X S^T + Uv;  S <- S diag(gamma_L) + U^T b_e + V^T k_e
    s_in = xs.new_empty(nc, bh, n, n)  # state entering each chunk
    u_all = xs.new_empty(nc, bh, chunk, n)  # (contiguous slices: out= on a strided view is slow)
    s_in[0] = s0
    for c in range(nc):
        s = s_in[c]
        u = torch.baddbmm(u_v[c], x_s[c], s.mT, out=u_all[c])
        s_next = torch.addcmul(hv[c], s, gamma_l[c])
        s = torch.baddbmm(s_next, u.mT, b_e[c], out=s_in[c + 1] if c + 1 < nc else s_next)
    uv = torch.cat([u_all, v], dim=-2)  # [U; V]

    y = torch.baddbmm((q_b @ u_all).flatten(0, 1), r_s.flatten(0, 1), s_in.flatten(0, 1).mT).view(
        nc, bh, chunk, n
    )
    y.view(nc * bh, chunk, n).baddbmm_(q_k.flatten(0, 1), v.flatten(0, 1))
    saved = (xs, cs, e_q, e_k, last, queries, keys, q_all, p_in, bk_e, tinv, x_s, mv, u_v)
    return y, s, (*saved, s_in, uv)


def _backward(dy: Tensor, ds_end: Tensor, mask: Tensor, saved: tuple) -> tuple[Tensor, Tensor]:
    """Gradients of the stacked inputs [nc, BH, 6, L, N] and of the initial state."""
    xs, cs, e_q, e_k, last, queries, keys, q_all, p_in, bk_e, tinv, x_s, mv, u_v, s_in, uv = saved
    nc, bh, _, chunk, n = xs.shape
    m_k, q_rbk = q_all[..., :chunk, chunk:], q_all[..., chunk:, :]
    r_s, b_e, k_e = p_in[..., chunk:, :], bk_e[..., :chunk, :], bk_e[..., chunk:, :]
    gamma_l = torch.exp(last)

    # y = r_s S^T + Qb U + Qk V: d[U; V] = [Qb Qk]^T dY
    du_dv = q_rbk.mT @ dy
    ds_y = dy.mT @ r_s

    # reverse scan: dU += b_e dS_next^T (U is written into the next state),
    # dS = dS_next diag(gamma_L) + dU^T X + dY^T r_s
    du_all = du_dv[..., :chunk, :].contiguous()
    ds_next = xs.new_empty(nc, bh, n, n)  # gradient of the state leaving each chunk
    ds_next[nc - 1] = ds_end
    for c in range(nc - 1, -1, -1):
        ds = ds_next[c]
        du = du_all[c].baddbmm_(b_e[c], ds.mT)
        ds_prev = torch.addcmul(ds_y[c], ds, gamma_l[c])
        ds = torch.baddbmm(ds_prev, du.mT, x_s[c], out=ds_next[c - 1] if c else ds_prev)
    d1 = torch.cat([du_all, dy], dim=-2)  # [dU; dY], the gradient of [X; r_s] S^T

    dp = d1 @ s_in  # [dX; dr_s]
    dbk_e = uv @ ds_next  # [db_e; dk_e]: S_next += U^T b_e + V^T k_e
    dgamma_l = (s_in * ds_next).sum(-2)  # S_next += S diag(gamma_L)

    # X = Tinv a_s, Uv = Tinv (Mk V), Tinv = (I - Mb)^-1
    dx_s, du_v = dp[..., :chunk, :], d1[..., :chunk, :]
    da_s = tinv.mT @ dx_s
    dmv = tinv.mT @ du_v
    dq_all = torch.empty_like(q_all)
    dmb = (da_s @ x_s.mT).view(nc * bh, chunk, chunk)
    dq_all[..., :chunk, :chunk] = dmb.baddbmm_(dmv.flatten(0, 1), u_v.flatten(0, 1).mT).view(
        nc, bh, chunk, chunk
    )  # dMb
    dq_all[..., :chunk, chunk:] = dmv @ uv[..., chunk:, :].mT  # dMk = dmv V^T
    dq_all[..., chunk:, :] = dy @ uv.mT  # d[Qb Qk]
    dq_all.masked_fill_(~mask, 0.0)
    dv = du_dv[..., chunk:, :] + k_e @ ds_next.mT
    dv.view(nc * bh, chunk, n).baddbmm_(m_k.flatten(0, 1).mT, dmv.flatten(0, 1))

    mid = cs[..., chunk // 2 : chunk // 2 + 1, :]
    dqueries = (dq_all @ keys).view(nc, bh, 2, chunk, n)
    e_mid = torch.exp(mid)
    # a_s = a gamma_{t-1} = (a e_q) e_mid: both terms carry e_q; the mid factors cancel exactly
    dqueries[:, :, 0].addcmul_(da_s, e_mid)
    dqueries[:, :, 1].addcmul_(dp[..., chunk:, :], e_mid)
    dxs = torch.empty_like(xs)
    torch.mul(dqueries, e_q, out=dxs[:, :, A : R + 1])
    dkeys = (dq_all.mT @ queries).view(nc, bh, 2, chunk, n)
    dbk_e = dbk_e.view(nc, bh, 2, chunk, n)
    dkeys.addcmul_(dbk_e, torch.exp(last - mid)[:, :, None])
    torch.mul(dkeys, e_k[:, :, None], out=dxs[:, :, B : K + 1])
    dxs[:, :, V] = dv

    # log-decay: d(cs) from every factor exp(+-cs), d(cs - logw) from a's factor
    dcs = dxs[:, :, R] * xs[:, :, R]
    dcs.addcmul_(dxs[:, :, B], xs[:, :, B], value=-1.0).addcmul_(
        dxs[:, :, K], xs[:, :, K], value=-1.0
    )
    dlast = (dbk_e * bk_e.view(nc, bh, 2, chunk, n)).sum((2, 3))
    dlast.addcmul_(dgamma_l, gamma_l.squeeze(-2))
    dcs[..., -1, :] += dlast
    tot = torch.addcmul(dcs, dxs[:, :, A], xs[:, :, A])  # + d(cs - logw), from a's factor
    dlogw = (tot.sum(-2, keepdim=True) - tot.cumsum(-2)).add_(dcs)  # revcumsum(tot) - dcp
    torch.div(dlogw, xs[:, :, W], out=dxs[:, :, W])
    return dxs, ds


def _pack(inputs: tuple[Tensor, ...], n_chunks: int, chunk: int) -> Tensor:
    """[B, T, H, N] x 6 in the order a, r, b, k, v, w -> [nc, BH, 6, L, N], one copy each.
    T is padded to nc * L with identity steps (w = 1, nothing written or read)."""
    bsz, t_len, h, n = inputs[0].shape
    xs = inputs[0].new_empty(n_chunks, bsz, h, 6, chunk, n)
    dst = xs.permute(3, 1, 0, 4, 2, 5)  # [6, B, nc, L, H, N]
    full = t_len // chunk
    for i, x in enumerate(inputs):
        if full:
            dst[i, :, :full].copy_(x[:, : full * chunk].reshape(bsz, full, chunk, h, n))
        if full < n_chunks:  # the padded last chunk
            rest = t_len - full * chunk
            dst[i, :, full, :rest].copy_(x[:, full * chunk :])
            dst[i, :, full, rest:].fill_(1.0 if i == W else 0.0)
    return xs.view(n_chunks, bsz * h, 6, chunk, n)


def _unpack(x: Tensor, bsz: int, h: int, t_len: int) -> Tensor:
    """[nc, BH, L, N] -> [B, T, H, N] (contiguous, padding dropped)."""
    n_chunks, _, chunk, n = x.shape
    x = x.view(n_chunks, bsz, h, chunk, n).permute(1, 0, 3, 2, 4)
    return x.reshape(bsz, n_chunks * chunk, h, n)[:, :t_len].contiguous()


class _ChunkedWKV(torch.autograd.Function):
    """Inputs and gradients cross this boundary in the caller's [B, T, H, N] layout, so that
    autograd sees six plain contiguous gradients (no stack/unbind or clones around us)."""

    @staticmethod
    def forward(ctx, r, w, k, v, a, b, s0, chunk: int):  # type: ignore[override]
        bsz, t_len, h, n = r.shape
        n_chunks = -(-t_len // chunk)
        xs = _pack((a, r, b, k, v, w), n_chunks, chunk)
        mask = _masks(chunk, r.device)
        y, s_end, saved = _forward(xs, s0.reshape(bsz * h, n, n), mask)
        ctx.save_for_backward(mask, *saved)
        ctx.dims = (bsz, h, t_len)
        return _unpack(y, bsz, h, t_len), s_end.view(bsz, h, n, n)

    @staticmethod
    @once_differentiable
    def backward(ctx, dy: Tensor, ds_end: Tensor):  # type: ignore[override]
        mask, *saved = ctx.saved_tensors
        bsz, h, t_len = ctx.dims
        n_chunks, _, _, chunk, n = saved[0].shape
        dy = _pack((dy,), n_chunks, chunk)[:, :, 0]  # padded steps get zero output gradient
        dxs, ds0 = _backward(dy, ds_end.reshape(bsz * h, n, n), mask, tuple(saved))
        da, dr, db, dk, dv, dw = (_unpack(dxs[:, :, i], bsz, h, t_len) for i in range(6))
        return dr, dw, dk, dv, da, db, ds0.view(bsz, h, n, n), None


def wkv7_chunked(
    r: Tensor,
    w: Tensor,
    k: Tensor,
    v: Tensor,
    a: Tensor,
    b: Tensor,
    state: Tensor | None = None,
    chunk: int = CHUNK,
) -> tuple[Tensor, Tensor]:
    """Same contract as `gpt5os.model.wkv7` (``impl="cpu"``); computes in fp32."""
    bsz, t_len, h, n = r.shape
    out_dtype = r.dtype
    r, w, k, v, a, b = (x.float() for x in (r, w, k, v, a, b))
    s0 = r.new_zeros(bsz, h, n, n) if state is None else state.float()
    if t_len == 0:
        return r.new_zeros(bsz, 0, h, n).to(out_dtype), s0
    if t_len == 1:  # a chunk of one step is the recurrence itself (RNN decoding): skip the setup
        s = s0 * w[:, 0, :, None, :] + (s0 @ a[:, 0, :, :, None]) * b[:, 0, :, None, :]
        s = s + v[:, 0, :, :, None] * k[:, 0, :, None, :]
        return (s @ r[:, 0, :, :, None]).view(bsz, 1, h, n).to(out_dtype), s
    chunk = balanced_chunk(t_len, chunk)
    check_decay(w, chunk)
    y, s = _ChunkedWKV.apply(r, w, k, v, a, b, s0, chunk)
    return y.to(out_dtype), s
