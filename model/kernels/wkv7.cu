// WKV-7 forward and backward for gpt5os: bf16 r, k, v, a, b and y; fp32 decay w, state and
// everything accumulated. Layout: inputs [B, T, H, N] contiguous, state [B, H, N, N] (value x key).
//
//   sa_t = S_{t-1} a_t;  S_t = S_{t-1} diag(w_t) + sa_t b_t^T + v_t k_t^T;  y_t = S_t r_t
//
// One thread block per (batch, head), N threads. Forward: thread i keeps row i of S in registers.
// When a gradient is needed (SAVE) it saves sa_t for every step and the state at the end of every
// CHUNK steps, so the backward can run the recurrence in reverse ("backstepping", as in the
// official RWKV-7 kernels):
//   S_{t-1} = (S_t - sa_t b_t^T - v_t k_t^T) diag(1 / w_t),
// restarting from the saved state at every chunk end so rounding errors, amplified by 1/w, never
// grow over more than CHUNK steps. That amplification, up to w_min^-CHUNK, is why wkv_cuda.py
// refuses w < W_MIN = 0.5 (6.6e4 at CHUNK 16); the model's clamp keeps w >= exp(-e^-0.5) ~ 0.545.
// Without SAVE (inference, decoding) neither buffer is written or allocated. Backward: thread j keeps column j of S and of dS, and thread i
// row i of dS, so every reduction is a loop over registers against vectors in shared memory.
//
// This file has no torch dependency: wkv7_op.cpp binds it. `nvcc -c wkv7.cu` must keep working.

#include <cuda_bf16.h>
#include <cuda_runtime.h>

#ifndef WKV7_CHUNK
#define WKV7_CHUNK 16
#endif

namespace {

typedef __nv_bfloat16 bf16;

__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }
__device__ __forceinline__ bf16 to_bf(float x) { return __float2bfloat16(x); }

template <int N, bool SAVE>
__global__ void __launch_bounds__(N) wkv7_forward_kernel(
    int T, int H, const bf16* __restrict__ r, const float* __restrict__ w,
    const bf16* __restrict__ k, const bf16* __restrict__ v, const bf16* __restrict__ a,
    const bf16* __restrict__ b, const float* __restrict__ s0, bf16* __restrict__ y,
    float* __restrict__ s_out, float* __restrict__ s_saved, float* __restrict__ sa_saved) {
  const int bh = blockIdx.x;  // batch * H + head
  const int batch = bh / H, head = bh % H;
  const int i = threadIdx.x;
  const int n_chunks = (T + WKV7_CHUNK - 1) / WKV7_CHUNK;

  __shared__ float sr[N], sw[N], sk[N], sa_[N], sb[N];

  float state[N];
  const float* s0_row = s0 + ((long long)bh * N + i) * N;
#pragma unroll
  for (int j = 0; j < N; j++) state[j] = s0_row[j];

  for (int t = 0; t < T; t++) {
    const long long idx = (((long long)batch * T + t) * H + head) * N + i;
    __syncthreads();
    sr[i] = to_f(r[idx]);
    sw[i] = w[idx];
    sk[i] = to_f(k[idx]);
    sa_[i] = to_f(a[idx]);
    sb[i] = to_f(b[idx]);
    const float vi = to_f(v[idx]);
    __syncthreads();

    float sa = 0.f;
#pragma unroll
    for (int j = 0; j < N; j++) sa += state[j] * sa_[j];
    if (SAVE) sa_saved[idx] = sa;

    float yi = 0.f;
#pragma unroll
    for (int j = 0; j < N; j++) {
      state[j] = state[j] * sw[j] + sa * sb[j] + vi * sk[j];
      yi += state[j] * sr[j];
    }
    y[idx] = to_bf(yi);

    if (SAVE && ((t + 1) % WKV7_CHUNK == 0 || t == T - 1)) {
      const int c = t / WKV7_CHUNK;
      float* dst = s_saved + (((long long)bh * n_chunks + c) * N + i) * N;
#pragma unroll
      for (int j = 0; j < N; j++) dst[j] = state[j];
    }
  }
  float* out_row = s_out + ((long long)bh * N + i) * N;
#pragma unroll
  for (int j = 0; j < N; j++) out_row[j] = state[j];
}

template <int N>
__global__ void __launch_bounds__(N) wkv7_backward_kernel(
    int T, int H, const bf16* __restrict__ r, const float* __restrict__ w,
    const bf16* __restrict__ k, const bf16* __restrict__ v, const bf16* __restrict__ a,
    const bf16* __restrict__ b, const bf16* __restrict__ dy, const float* __restrict__ ds_out,
    const float* __restrict__ s_saved, const float* __restrict__ sa_saved,
    bf16* __restrict__ dr, float* __restrict__ dw, bf16* __restrict__ dk, bf16* __restrict__ dv,
    bf16* __restrict__ da, bf16* __restrict__ db, float* __restrict__ ds0) {
  const int bh = blockIdx.x;
  const int batch = bh / H, head = bh % H;
  const int tid = threadIdx.x;  // column j for *_col arrays, row i for *_row arrays
  const int n_chunks = (T + WKV7_CHUNK - 1) / WKV7_CHUNK;

  __shared__ float sr[N], sw[N], sk[N], sv[N], sa_[N], sb[N], sdy[N], ssa[N], sdsa[N];

  float s_col[N];   // S[i][tid] for all i
  float ds_col[N];  // dS[i][tid]
  float ds_row[N];  // dS[tid][j]
  const float* dso = ds_out + (long long)bh * N * N;
#pragma unroll
  for (int x = 0; x < N; x++) {
    ds_col[x] = dso[x * N + tid];
    ds_row[x] = dso[tid * N + x];
  }

  for (int t = T - 1; t >= 0; t--) {
    const long long idx = (((long long)batch * T + t) * H + head) * N + tid;
    if ((t + 1) % WKV7_CHUNK == 0 || t == T - 1) {  // exact S_t from the forward's checkpoint
      const float* src = s_saved + ((long long)bh * n_chunks + t / WKV7_CHUNK) * N * N;
#pragma unroll
      for (int i = 0; i < N; i++) s_col[i] = src[i * N + tid];
    }
    __syncthreads();
    sr[tid] = to_f(r[idx]);
    sw[tid] = w[idx];
    sk[tid] = to_f(k[idx]);
    sv[tid] = to_f(v[idx]);
    sa_[tid] = to_f(a[idx]);
    sb[tid] = to_f(b[idx]);
    sdy[tid] = to_f(dy[idx]);
    ssa[tid] = sa_saved[idx];
    __syncthreads();

    const float rj = sr[tid], wj = sw[tid], kj = sk[tid], aj = sa_[tid], bj = sb[tid];
    const float dyi = sdy[tid], inv_w = 1.f / wj;

    // y_t = S_t r_t: dS_t += dy r^T and dr = S_t^T dy
    float drj = 0.f;
#pragma unroll
    for (int i = 0; i < N; i++) {
      drj += s_col[i] * sdy[i];
      ds_col[i] += sdy[i] * rj;
    }
#pragma unroll
    for (int j = 0; j < N; j++) ds_row[j] += dyi * sr[j];

    // step back to S_{t-1}, then the gradients of this step's inputs
    float dwj = 0.f, dkj = 0.f, dbj = 0.f;
#pragma unroll
    for (int i = 0; i < N; i++) {
      s_col[i] = (s_col[i] - ssa[i] * bj - sv[i] * kj) * inv_w;
      dwj += ds_col[i] * s_col[i];
      dkj += ds_col[i] * sv[i];
      dbj += ds_col[i] * ssa[i];
    }
    float dvi = 0.f, dsai = 0.f;
#pragma unroll
    for (int j = 0; j < N; j++) {
      dvi += ds_row[j] * sk[j];
      dsai += ds_row[j] * sb[j];
    }
    sdsa[tid] = dsai;
    __syncthreads();

    float daj = 0.f;
#pragma unroll
    for (int i = 0; i < N; i++) {
      daj += sdsa[i] * s_col[i];
      ds_col[i] = ds_col[i] * wj + sdsa[i] * aj;
    }
#pragma unroll
    for (int j = 0; j < N; j++) ds_row[j] = ds_row[j] * sw[j] + dsai * sa_[j];

    dr[idx] = to_bf(drj);
    dw[idx] = dwj;
    dk[idx] = to_bf(dkj);
    dv[idx] = to_bf(dvi);
    da[idx] = to_bf(daj);
    db[idx] = to_bf(dbj);
  }
  float* d0 = ds0 + (long long)bh * N * N;
#pragma unroll
  for (int i = 0; i < N; i++) d0[i * N + tid] = ds_col[i];
}

}  // namespace

// Host launchers, declared in wkv7_op.cpp. They return a cudaError_t (0 = success) so the binding
// can raise a readable error; the stream is the caller's current CUDA stream.
const char* wkv7_error_string(int err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

// s_saved and sa_saved null: the no-grad forward, which writes neither (inference, decoding).
int wkv7_forward_launch(int B, int T, int H, int N, const void* r, const float* w, const void* k,
                        const void* v, const void* a, const void* b, const float* s0, void* y,
                        float* s_out, float* s_saved, float* sa_saved, void* stream_handle) {
  if (B <= 0 || H <= 0 || T <= 0) return (int)cudaErrorInvalidConfiguration;  // empty grid
  if ((s_saved == nullptr) != (sa_saved == nullptr)) return (int)cudaErrorInvalidValue;
  const bool save = s_saved != nullptr;
  const dim3 grid(B * H), block(N);
  cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
#define WKV7_FWD(NN, SAVE)                                                                    \
  wkv7_forward_kernel<NN, SAVE><<<grid, block, 0, stream>>>(                                  \
      T, H, (const bf16*)r, w, (const bf16*)k, (const bf16*)v, (const bf16*)a, (const bf16*)b, \
      s0, (bf16*)y, s_out, s_saved, sa_saved)
#define WKV7_FWD_N(NN)     \
  if (save)                \
    WKV7_FWD(NN, true);    \
  else                     \
    WKV7_FWD(NN, false);   \
  break
  switch (N) {
    case 16: WKV7_FWD_N(16);
    case 32: WKV7_FWD_N(32);
    case 64: WKV7_FWD_N(64);
    default: return (int)cudaErrorInvalidValue;
  }
#undef WKV7_FWD_N
#undef WKV7_FWD
  return (int)cudaGetLastError();
}

int wkv7_backward_launch(int B, int T, int H, int N, const void* r, const float* w, const void* k,
                         const void* v, const void* a, const void* b, const void* dy,
                         const float* ds_out, const float* s_saved, const float* sa_saved,
                         void* dr, float* dw, void* dk, void* dv, void* da, void* db, float* ds0,
                         void* stream_handle) {
  if (B <= 0 || H <= 0 || T <= 0) return (int)cudaErrorInvalidConfiguration;  // empty grid
  const dim3 grid(B * H), block(N);
  cudaStream_t stream = static_cast<cudaStream_t>(stream_handle);
#define WKV7_BWD(NN)                                                                            \
  wkv7_backward_kernel<NN><<<grid, block, 0, stream>>>(                                         \
      T, H, (const bf16*)r, w, (const bf16*)k, (const bf16*)v, (const bf16*)a, (const bf16*)b,   \
      (const bf16*)dy, ds_out, s_saved, sa_saved, (bf16*)dr, dw, (bf16*)dk, (bf16*)dv, (bf16*)da, \
      (bf16*)db, ds0)
  switch (N) {
    case 16: WKV7_BWD(16); break;
    case 32: WKV7_BWD(32); break;
    case 64: WKV7_BWD(64); break;
    default: return (int)cudaErrorInvalidValue;
  }
#undef WKV7_BWD
  return (int)cudaGetLastError();
}
