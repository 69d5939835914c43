// CPU kernels for one-token RNN decoding: one-row matrix products and the one-step WKV.
//
// Matrix products: y[j] (+)= sum_i x[i] * W[i, j] over a column range.
//
// Why not BLAS: decoding multiplies one row by every weight matrix, so the step is bound by how
// fast the weights stream from memory. MKL's sgemm with M = 1 streams a [768, 768] fp32 matrix
// at ~11 GB/s on a 2-core VM where a plain read reaches ~17-20 GB/s; walking the rows of W in
// order, four at a time, into an accumulator block that stays in L1 reaches ~20 GB/s there
// (measured 2026-11-23: [768, 768] 1.8x, [768, 3072] 1.3x, [3072, 768] 1.6x, [768, 65536] 1.3x
// faster than torch.mm). Plain C++ that the compiler vectorises with -O3 -march=native: no torch
// headers, builds in half a second.
#include <algorithm>
#include <cstdint>
#include <cmath>
#include <cstring>

extern "C" int decode_cpu_abi() { return 3; }

// W is row-major with row stride ldw (elements); x has k elements; y has at least j1 elements.
// Columns [j0, j1) of y are written (accumulate = 0) or added to (accumulate = 1).
extern "C" void matvec_cpu(const float* __restrict x, const float* __restrict w,
                           float* __restrict y, int64_t k, int64_t ldw, int64_t j0, int64_t j1,
                           int accumulate) {
    constexpr int64_t BLOCK = 1024;  // 4 KB of accumulators: stays in L1 while rows stream by
    alignas(64) float acc[BLOCK];
    for (int64_t c0 = j0; c0 < j1; c0 += BLOCK) {
        const int64_t nb = std::min(BLOCK, j1 - c0);
        if (accumulate) {
            std::memcpy(acc, y + c0, nb * sizeof(float));
        } else {
            std::memset(acc, 0, nb * sizeof(float));
        }
        int64_t i = 0;
        for (; i + 4 <= k; i += 4) {  // four rows per pass: a quarter of the accumulator traffic
            const float* w0 = w + i * ldw + c0;
            const float* w1 = w0 + ldw;
            const float* w2 = w1 + ldw;
            const float* w3 = w2 + ldw;
            const float a0 = x[i], a1 = x[i + 1], a2 = x[i + 2], a3 = x[i + 3];
#pragma GCC ivdep
            for (int64_t j = 0; j < nb; j++) {
                acc[j] += a0 * w0[j] + a1 * w1[j] + a2 * w2[j] + a3 * w3[j];
            }
        }
        for (; i < k; i++) {
            const float* w0 = w + i * ldw + c0;
            const float a0 = x[i];
            for (int64_t j = 0; j < nb; j++) acc[j] += a0 * w0[j];
        }
        std::memcpy(y + c0, acc, nb * sizeof(float));
    }
}

// Layer norm of x [c] (one token), then the token-shift mixes: out[m][j] = xn[j] + (shift[j] -
// xn[j]) * mix[m][j] for the n_mix rows of mix [n_mix, c]; shift <- xn (the next token's
// previous input). One call instead of five PyTorch ops.
extern "C" void ln_shift_mix_cpu(const float* __restrict x, const float* __restrict ln_w,
                                 const float* __restrict ln_b, float eps, float* __restrict shift,
                                 const float* __restrict mix, int64_t n_mix, int64_t c,
                                 float* __restrict out) {
    double sum = 0.0, sq = 0.0;
    for (int64_t j = 0; j < c; j++) sum += x[j];
    const float mean = static_cast<float>(sum / c);
    for (int64_t j = 0; j < c; j++) {
        const float d = x[j] - mean;
        sq += static_cast<double>(d) * d;
    }
    const float rstd = 1.0f / std::sqrt(static_cast<float>(sq / c) + eps);
    for (int64_t j = 0; j < c; j++) {
        const float xn = (x[j] - mean) * rstd * ln_w[j] + ln_b[j];
        const float d = shift[j] - xn;
        for (int64_t m = 0; m < n_mix; m++) out[m * c + j] = xn + d * mix[m * c + j];
        shift[j] = xn;
    }
}

// The time-mix core of one token after its matrix products: decay from w_raw, the in-context
// rate a = sigmoid(a_raw), kk = normalize(k * k_k) per head, k <- k * (1 + (a - 1) * k_a), the
// WKV step on s [h, n, n] in place, GroupNorm of y per head, the r.k.r_k bonus, times g:
//   out = (GroupNorm(S r) + (sum r k r_k) v) * g        (every vector h * n floats, n <= 256)
extern "C" void tmix_core_cpu(float* __restrict s, const float* __restrict r,
                              const float* __restrict w_raw, const float* __restrict k_in,
                              const float* __restrict v, const float* __restrict a_raw,
                              const float* __restrict g, const float* __restrict k_k,
                              const float* __restrict k_a, const float* __restrict r_k,
                              const float* __restrict lnx_w, const float* __restrict lnx_b,
                              float lnx_eps, float decay_scale, float* __restrict out, int64_t h,
                              int64_t n) {
    alignas(64) float kk[256], kka[256], kn[256], wd[256], y[256];
    for (int64_t hh = 0; hh < h; hh++) {
        const int64_t o = hh * n;
        float nrm = 0.f;
        for (int64_t j = 0; j < n; j++) {
            const float t = k_in[o + j] * k_k[o + j];
            kk[j] = t;
            nrm += t * t;
        }
        const float inv = 1.0f / std::max(std::sqrt(nrm), 1e-12f);
        float bonus = 0.f;
        for (int64_t j = 0; j < n; j++) {
            const float a = 1.0f / (1.0f + std::exp(-a_raw[o + j]));
            kk[j] *= inv;
            kka[j] = kk[j] * a;
            kn[j] = k_in[o + j] * (1.0f + (a - 1.0f) * k_a[o + j]);
            wd[j] = std::exp(-decay_scale / (1.0f + std::exp(-w_raw[o + j])));
            bonus += r[o + j] * kn[j] * r_k[o + j];
        }
        float* sh = s + o * n;
        for (int64_t i = 0; i < n; i++) {
            float* row = sh + i * n;
            float sa = 0.f;
            for (int64_t j = 0; j < n; j++) sa += row[j] * kk[j];
            const float vi = v[o + i];
            float acc = 0.f;
            for (int64_t j = 0; j < n; j++) {
                const float t = row[j] * wd[j] - sa * kka[j] + vi * kn[j];
                row[j] = t;
                acc += t * r[o + j];
            }
            y[i] = acc;
        }
        float mean = 0.f, var = 0.f;
        for (int64_t i = 0; i < n; i++) mean += y[i];
        mean /= n;
        for (int64_t i = 0; i < n; i++) var += (y[i] - mean) * (y[i] - mean);
        const float rstd = 1.0f / std::sqrt(var / n + lnx_eps);
        for (int64_t i = 0; i < n; i++) {
            const float yn = (y[i] - mean) * rstd * lnx_w[o + i] + lnx_b[o + i];
            out[o + i] = (yn + bonus * v[o + i]) * g[o + i];
        }
    }
}
