// WKV-7 on the CPU: the per-step recurrence, fused and vectorised, forward and backward.
//
// Why a per-step loop beats the chunked matrix form here: one head's state (N x N fp32, 16 KB
// for N = 64) lives in L1, and a step is ~5 multiply-adds per state element with every operand
// already in cache. The chunked form does ~4x more arithmetic (the triangular intra-chunk
// interactions and their gradients) through many separate PyTorch ops.
//
// Plain C ABI (no torch headers), so it builds with g++ in about a second and loads with ctypes;
// gpt5os.model.wkv_cpu compiles it on first use, caches the library and keeps the pure-PyTorch
// chunked path as the fallback. Threads: the caller splits the B*H heads across threads (ctypes
// releases the GIL); nothing here is shared between heads.
//
// Layouts (all fp32, contiguous): inputs and their gradients [B, T, H, N]; states
// [B, H, N, N] as value x key (row i = value index, column j = key index); checkpoints
// [B, H, n_seg, N, N], the state entering steps 0, C, 2C, ... The backward replays each segment
// of C steps from its checkpoint (into a buffer that stays in L2), recomputing S_t and sa_t.
//
// Per step:  sa = S a;  S = S diag(w) + sa b^T + v k^T;  y = S r.
// Backward, with G = dS_t + dy r^T (the gradient of S_t, its own output included):
//   dr = S_t^T dy, dw = colsum(S_{t-1} * G), db = G^T sa, dk = G^T v, dv = G k,
//   dsa = G b, da = S_{t-1}^T dsa, dS_{t-1} = G diag(w) + dsa a^T.

#include <cstdint>
#include <cstdlib>
#include <cstring>

#ifndef WKV7_VEC
#define WKV7_VEC 8
#endif

namespace {

constexpr int W = WKV7_VEC;  // floats per vector register
typedef float vf __attribute__((vector_size(W * sizeof(float))));

inline vf load(const float* p) {
  vf x;
  std::memcpy(&x, p, sizeof(vf));
  return x;
}
inline void store(float* p, vf x) { std::memcpy(p, &x, sizeof(vf)); }
inline vf splat(float s) { return vf{} + s; }
typedef float v4 __attribute__((vector_size(4 * sizeof(float))));
inline float hsum(vf x) {  // halving tree: log2(W) shuffles and adds, not W scalar extracts
#if WKV7_VEC == 16
  typedef float v8 __attribute__((vector_size(8 * sizeof(float))));
  const v8 x8 = __builtin_shufflevector(x, x, 0, 1, 2, 3, 4, 5, 6, 7) +
                __builtin_shufflevector(x, x, 8, 9, 10, 11, 12, 13, 14, 15);
  const v4 x4 = __builtin_shufflevector(x8, x8, 0, 1, 2, 3) +
                __builtin_shufflevector(x8, x8, 4, 5, 6, 7);
#elif WKV7_VEC == 8
  const v4 x4 = __builtin_shufflevector(x, x, 0, 1, 2, 3) +
                __builtin_shufflevector(x, x, 4, 5, 6, 7);
#else
#error "WKV7_VEC must be 8 or 16"
#endif
  const v4 x2 = x4 + __builtin_shufflevector(x4, x4, 2, 3, 0, 1);
  return x2[0] + x2[1];
}

// Row sums of W vectors at once: lane r of the result is the sum of x[r]'s lanes. A transposing
// tree (W - 1 shuffle pairs in all) instead of W separate horizontal sums (W log2(W)).
inline vf sum_rows(vf* x) {
#if WKV7_VEC == 16
  for (int r = 0; r < 8; ++r)
    x[r] = __builtin_shufflevector(x[r], x[r + 8], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21,
                                   22, 23) +
           __builtin_shufflevector(x[r], x[r + 8], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27,
                                   28, 29, 30, 31);
  for (int r = 0; r < 4; ++r)
    x[r] = __builtin_shufflevector(x[r], x[r + 4], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24,
                                   25, 26, 27) +
           __builtin_shufflevector(x[r], x[r + 4], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28,
                                   29, 30, 31);
  for (int r = 0; r < 2; ++r)
    x[r] = __builtin_shufflevector(x[r], x[r + 2], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12,
                                   13, 28, 29) +
           __builtin_shufflevector(x[r], x[r + 2], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14,
                                   15, 30, 31);
  return __builtin_shufflevector(x[0], x[1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28,
                                 14, 30) +
         __builtin_shufflevector(x[0], x[1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29,
                                 15, 31);
#else
  for (int r = 0; r < 4; ++r)
    x[r] = __builtin_shufflevector(x[r], x[r + 4], 0, 1, 2, 3, 8, 9, 10, 11) +
           __builtin_shufflevector(x[r], x[r + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  for (int r = 0; r < 2; ++r)
    x[r] = __builtin_shufflevector(x[r], x[r + 2], 0, 1, 8, 9, 4, 5, 12, 13) +
           __builtin_shufflevector(x[r], x[r + 2], 2, 3, 10, 11, 6, 7, 14, 15);
  return __builtin_shufflevector(x[0], x[1], 0, 8, 2, 10, 4, 12, 6, 14) +
         __builtin_shufflevector(x[0], x[1], 1, 9, 3, 11, 5, 13, 7, 15);
#endif
}

struct Head {
  // pointers to this head's first element; step t of an input is at base + t * stride
  const float *r, *w, *k, *v, *a, *b;
  int64_t stride;  // H * N
};

// One step for W rows at a time: their S a and S r dot products reduce together (sum_rows).
template <int N, bool Y>
void step_forward(vf (*S)[N / W], const vf* rv, const vf* wv, const vf* kv, const vf* av,
                  const vf* bv, const float* v, float* y, float* sa_out) {
  constexpr int NV = N / W;
  for (int i0 = 0; i0 < N; i0 += W) {
    vf acc[W];
    for (int r = 0; r < W; ++r) {
      acc[r] = S[i0 + r][0] * av[0];
      for (int q = 1; q < NV; ++q) acc[r] += S[i0 + r][q] * av[q];
    }
    const vf sa = sum_rows(acc);
    const vf vb = load(v + i0);
    for (int r = 0; r < W; ++r) {
      const vf sar = splat(sa[r]), vi = splat(vb[r]);
      vf yacc = {};
      for (int q = 0; q < NV; ++q) {
        const vf s = S[i0 + r][q] * wv[q] + sar * bv[q] + vi * kv[q];
        S[i0 + r][q] = s;
        if (Y) yacc += s * rv[q];
      }
      acc[r] = yacc;
    }
    if (Y) store(y + i0, sum_rows(acc));
    if (sa_out) store(sa_out + i0, sa);
  }
}

template <int N>
void load_step(const Head& h, int64_t t, vf* rv, vf* wv, vf* kv, vf* av, vf* bv) {
  constexpr int NV = N / W;
  const int64_t o = t * h.stride;
  for (int q = 0; q < NV; ++q) {
    rv[q] = load(h.r + o + q * W);
    wv[q] = load(h.w + o + q * W);
    kv[q] = load(h.k + o + q * W);
    av[q] = load(h.a + o + q * W);
    bv[q] = load(h.b + o + q * W);
  }
}

template <int N>
void forward_head(const Head& h, int64_t T, int C, const float* s0, float* y, float* s_end,
                  float* ckpt) {
  constexpr int NV = N / W;
  alignas(64) vf S[N][NV];
  std::memcpy(S, s0, sizeof(S));
  alignas(64) vf rv[NV], wv[NV], kv[NV], av[NV], bv[NV];
  for (int64_t t = 0; t < T; ++t) {
    if (ckpt && t % C == 0) std::memcpy(ckpt + (t / C) * N * N, S, sizeof(S));
    load_step<N>(h, t, rv, wv, kv, av, bv);
    const int64_t o = t * h.stride;
    step_forward<N, true>(S, rv, wv, kv, av, bv, h.v + o, y + o, nullptr);
  }
  std::memcpy(s_end, S, sizeof(S));
}

template <int N>
void backward_head(const Head& h, int64_t T, int C, const float* ckpt, float* sa,
                   const float* dy, const float* ds_end, float* ds0, float* dr, float* dw,
                   float* dk, float* dv, float* da, float* db, vf (*buf)[N][N / W]) {
  constexpr int NV = N / W;
  alignas(64) vf dS[N][NV];
  std::memcpy(dS, ds_end, sizeof(dS));
  alignas(64) vf rv[NV], wv[NV], kv[NV], av[NV], bv[NV];
  alignas(64) float dsa[N];
  const int64_t n_seg = (T + C - 1) / C;
  for (int64_t seg = n_seg - 1; seg >= 0; --seg) {
    const int64_t t0 = seg * C, t1 = t0 + C < T ? t0 + C : T;
    // recompute the segment's states: buf[j] = S_{t0 + j - 1} (buf[0] enters step t0)
    std::memcpy(buf[0], ckpt + seg * N * N, sizeof(dS));
    for (int64_t t = t0; t < t1; ++t) {
      std::memcpy(buf[t - t0 + 1], buf[t - t0], sizeof(dS));
      load_step<N>(h, t, rv, wv, kv, av, bv);
      step_forward<N, false>(buf[t - t0 + 1], rv, wv, kv, av, bv, h.v + t * h.stride, nullptr,
                             sa + (t - t0) * N);
    }
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const vf(*Sp)[NV] = buf[t - t0];
      load_step<N>(h, t, rv, wv, kv, av, bv);
      const int64_t o = t * h.stride;
      const float *dyt = dy + o, *vt = h.v + o, *sat = sa + (t - t0) * N;
      // the dot products that the dy r^T part of G contributes through
      float rb, rk, sady, vdy;
      {
        vf x = {}, z = {}, p = {}, u = {};
        for (int q = 0; q < NV; ++q) x += rv[q] * bv[q], z += rv[q] * kv[q];
        for (int q = 0; q < NV; ++q) {
          const vf d = load(dyt + q * W);
          p += load(sat + q * W) * d;
          u += load(vt + q * W) * d;
        }
        rb = hsum(x), rk = hsum(z), sady = hsum(p), vdy = hsum(u);
      }
      // dsa_i = G_i . b and dv_i = G_i . k, with G_i = dS_i + dy_i r
      for (int i0 = 0; i0 < N; i0 += W) {
        vf x[W];
        const vf dyb = load(dyt + i0);
        for (int r = 0; r < W; ++r) {
          x[r] = dS[i0 + r][0] * bv[0];
          for (int q = 1; q < NV; ++q) x[r] += dS[i0 + r][q] * bv[q];
        }
        store(dsa + i0, sum_rows(x) + dyb * rb);
        for (int r = 0; r < W; ++r) {
          x[r] = dS[i0 + r][0] * kv[0];
          for (int q = 1; q < NV; ++q) x[r] += dS[i0 + r][q] * kv[q];
        }
        store(dv + o + i0, sum_rows(x) + dyb * rk);
      }
      // column blocks: the key-side gradients accumulate in registers over the rows. Written
      // with dS rather than G, and S_t = S_{t-1} diag(w) + sa b^T + v k^T expanded, so that
      // only S_{t-1} is read: dr = w * (S_{t-1}^T dy) + b (sa . dy) + k (v . dy)
      for (int q = 0; q < NV; ++q) {
        vf gsp = {}, gw = {}, gb = {}, gk = {}, ga = {};
        const vf rq = rv[q], wq = wv[q], aq = av[q], rwq = rv[q] * wv[q];
        for (int i = 0; i < N; ++i) {
          const vf dyi = splat(dyt[i]), sp = Sp[i][q], ds = dS[i][q];
          const vf dsai = splat(dsa[i]);
          gsp += dyi * sp;
          gw += sp * ds;
          gb += splat(sat[i]) * ds;
          gk += splat(vt[i]) * ds;
          ga += dsai * sp;
          dS[i][q] = ds * wq + dyi * rwq + dsai * aq;  // G diag(w) + dsa a^T
        }
        store(dr + o + q * W, wq * gsp + sady * bv[q] + vdy * kv[q]);
        store(dw + o + q * W, gw + rq * gsp);
        store(db + o + q * W, gb + sady * rq);
        store(dk + o + q * W, gk + vdy * rq);
        store(da + o + q * W, ga);
      }
    }
  }
  std::memcpy(ds0, dS, sizeof(dS));
}

Head head_at(const float* const* x, int64_t bi, int64_t hi, int64_t T, int64_t H, int64_t N) {
  const int64_t off = bi * T * H * N + hi * N;
  return Head{x[0] + off, x[1] + off, x[2] + off, x[3] + off, x[4] + off, x[5] + off, H * N};
}

template <int N>
void forward_range(int64_t h0, int64_t h1, int64_t T, int64_t H, int C, const float* const* x,
                   const float* s0, float* y, float* s_end, float* ckpt) {
  const int64_t n_seg = (T + C - 1) / C;
  for (int64_t bh = h0; bh < h1; ++bh) {
    const int64_t bi = bh / H, hi = bh % H, off = bi * T * H * N + hi * N;
    forward_head<N>(head_at(x, bi, hi, T, H, N), T, C, s0 + bh * N * N, y + off,
                    s_end + bh * N * N, ckpt ? ckpt + bh * n_seg * N * N : nullptr);
  }
}

template <int N>
int backward_range(int64_t h0, int64_t h1, int64_t T, int64_t H, int C, const float* const* x,
                   const float* ckpt, const float* dy, const float* ds_end, float* ds0,
                   float* const* dx) {
  constexpr int NV = N / W;
  const int64_t n_seg = (T + C - 1) / C;
  // the replayed states of one segment, then its sa_t
  void* mem = std::aligned_alloc(64, sizeof(vf) * NV * N * (C + 1) + sizeof(float) * N * C);
  if (!mem) return 1;
  auto buf = static_cast<vf(*)[N][NV]>(mem);
  float* sa = reinterpret_cast<float*>(buf + C + 1);
  for (int64_t bh = h0; bh < h1; ++bh) {
    const int64_t bi = bh / H, hi = bh % H, off = bi * T * H * N + hi * N;
    // dx in the order r, w, k, v, a, b
    backward_head<N>(head_at(x, bi, hi, T, H, N), T, C, ckpt + bh * n_seg * N * N, sa, dy + off, ds_end + bh * N * N, ds0 + bh * N * N, dx[0] + off, dx[1] + off,
                     dx[2] + off, dx[3] + off, dx[4] + off, dx[5] + off, buf);
  }
  std::free(mem);
  return 0;
}

}  // namespace

extern "C" {

// Version of this ABI; the loader refuses a library that reports another one.
int wkv7_cpu_abi() { return 2; }

// x: the six inputs r, w, k, v, a, b. Processes heads [h0, h1) of the B*H. ckpt may be null
// (no backward to follow). Returns 0, or 2 for an unsupported head size.
int wkv7_cpu_forward(int64_t h0, int64_t h1, int64_t T, int64_t H, int64_t N, int C,
                     const float* const* x, const float* s0, float* y, float* s_end,
                     float* ckpt) {
  switch (N) {
    case 16: forward_range<16>(h0, h1, T, H, C, x, s0, y, s_end, ckpt); return 0;
    case 32: forward_range<32>(h0, h1, T, H, C, x, s0, y, s_end, ckpt); return 0;
    case 64: forward_range<64>(h0, h1, T, H, C, x, s0, y, s_end, ckpt); return 0;
    case 128: forward_range<128>(h0, h1, T, H, C, x, s0, y, s_end, ckpt); return 0;
    default: return 2;
  }
}

// dx: the six gradients dr, dw, dk, dv, da, db (written, not accumulated).
int wkv7_cpu_backward(int64_t h0, int64_t h1, int64_t T, int64_t H, int64_t N, int C,
                      const float* const* x, const float* ckpt, const float* dy,
                      const float* ds_end, float* ds0, float* const* dx) {
  switch (N) {
    case 16: return backward_range<16>(h0, h1, T, H, C, x, ckpt, dy, ds_end, ds0, dx);
    case 32: return backward_range<32>(h0, h1, T, H, C, x, ckpt, dy, ds_end, ds0, dx);
    case 64: return backward_range<64>(h0, h1, T, H, C, x, ckpt, dy, ds_end, ds0, dx);
    case 128: return backward_range<128>(h0, h1, T, H, C, x, ckpt, dy, ds_end, ds0, dx);
    default: return 2;
  }
}

}  // extern "C"
