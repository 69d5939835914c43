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

struct Head {
  // pointers to this head's first element; step t of an input is at base + t * stride
  const float *r, *w, *k, *v, *a, *b;
  int64_t stride;  // H * N
};

template <int N>
void step_forward(vf (*S)[N / W], const vf* rv, const vf* wv, const vf* kv, const vf* av,
                  const vf* bv, const float* v, float* y, float* sa_out) {
  constexpr int NV = N / W;
  for (int i = 0; i < N; ++i) {
    vf acc = {};
    for (int q = 0; q < NV; ++q) acc += S[i][q] * av[q];
    const float sa = hsum(acc);
    const vf sav = splat(sa), vi = splat(v[i]);
    vf yacc = {};
    for (int q = 0; q < NV; ++q) {
      const vf s = S[i][q] * wv[q] + sav * bv[q] + vi * kv[q];
      S[i][q] = s;
      yacc += s * rv[q];
    }
    if (y) y[i] = hsum(yacc);
    if (sa_out) sa_out[i] = sa;
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
    step_forward<N>(S, rv, wv, kv, av, bv, h.v + o, y + o, nullptr);
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
      step_forward<N>(buf[t - t0 + 1], rv, wv, kv, av, bv, h.v + t * h.stride, nullptr,
                      sa + (t - t0) * N);
    }
    for (int64_t t = t1 - 1; t >= t0; --t) {
      const vf(*St)[NV] = buf[t - t0 + 1];
      const vf(*Sp)[NV] = buf[t - t0];
      load_step<N>(h, t, rv, wv, kv, av, bv);
      const int64_t o = t * h.stride;
      const float *dyt = dy + o, *vt = h.v + o, *sat = sa + (t - t0) * N;
      float rb = 0.0f, rk = 0.0f;
      {
        vf x = {}, z = {};
        for (int q = 0; q < NV; ++q) x += rv[q] * bv[q], z += rv[q] * kv[q];
        rb = hsum(x);
        rk = hsum(z);
      }
      // dsa_i = G_i . b and dv_i = G_i . k, with G_i = dS_i + dy_i r
      for (int i = 0; i < N; ++i) {
        vf x = {}, z = {};
        for (int q = 0; q < NV; ++q) x += dS[i][q] * bv[q], z += dS[i][q] * kv[q];
        dsa[i] = hsum(x) + dyt[i] * rb;
        dv[o + i] = hsum(z) + dyt[i] * rk;
      }
      // column blocks: the five key-side gradients accumulate in registers over the rows
      for (int q = 0; q < NV; ++q) {
        vf gr = {}, gw = {}, gb = {}, gk = {}, ga = {};
        const vf rq = rv[q], wq = wv[q], aq = av[q];
        for (int i = 0; i < N; ++i) {
          const vf dyi = splat(dyt[i]), sp = Sp[i][q];
          const vf g = dS[i][q] + dyi * rq;
          const vf dsai = splat(dsa[i]);
          gr += dyi * St[i][q];
          gw += sp * g;
          gb += splat(sat[i]) * g;
          gk += splat(vt[i]) * g;
          ga += dsai * sp;
          dS[i][q] = g * wq + dsai * aq;
        }
        store(dr + o + q * W, gr);
        store(dw + o + q * W, gw);
        store(db + o + q * W, gb);
        store(dk + o + q * W, gk);
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
