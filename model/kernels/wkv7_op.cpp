// Torch bindings for wkv7.cu: shape/dtype checks and allocation. Autograd and the torch.library
// registration live in gpt5os/model/wkv_cuda.py, which also passes the current CUDA stream (as an
// integer handle) and selects the device. This file needs only torch's CPU headers, so a CI
// machine without CUDA torch can still compile-check it (tests/test_model_cuda.py).

#include <torch/extension.h>

#include <tuple>
#include <vector>

#ifndef WKV7_CHUNK
#define WKV7_CHUNK 16
#endif

int wkv7_forward_launch(int B, int T, int H, int N, const void* r, const float* w, const void* k,
                        const void* v, const void* a, const void* b, const float* s0, void* y,
                        float* s_out, float* s_saved, float* sa_saved, void* stream);
int wkv7_backward_launch(int B, int T, int H, int N, const void* r, const float* w, const void* k,
                         const void* v, const void* a, const void* b, const void* dy,
                         const float* ds_out, const float* s_saved, const float* sa_saved,
                         void* dr, float* dw, void* dk, void* dv, void* da, void* db, float* ds0,
                         void* stream);
const char* wkv7_error_string(int err);

namespace {

void check_input(const torch::Tensor& x, const char* name, at::ScalarType dtype,
                 const torch::Tensor& like) {
  TORCH_CHECK(x.is_cuda(), "wkv7 cuda: ", name, " must be a CUDA tensor");
  TORCH_CHECK(x.scalar_type() == dtype, "wkv7 cuda: ", name, " has dtype ", x.scalar_type(),
              ", expected ", dtype);
  TORCH_CHECK(x.is_contiguous(), "wkv7 cuda: ", name, " must be contiguous");
  TORCH_CHECK(x.sizes() == like.sizes(), "wkv7 cuda: ", name, " has shape ", x.sizes(),
              ", expected ", like.sizes());
  TORCH_CHECK(x.device() == like.device(), "wkv7 cuda: ", name, " is on another device");
}

void check_launch(int err) {
  TORCH_CHECK(err == 0, "wkv7 cuda kernel launch failed: ", wkv7_error_string(err));
}

}  // namespace

std::vector<torch::Tensor> wkv7_forward(torch::Tensor r, torch::Tensor w, torch::Tensor k,
                                        torch::Tensor v, torch::Tensor a, torch::Tensor b,
                                        torch::Tensor s0, int64_t stream) {
  TORCH_CHECK(r.dim() == 4, "wkv7 cuda: inputs must be [B, T, H, N]");
  const auto bf = at::kBFloat16;
  check_input(r, "r", bf, r);
  check_input(w, "w", at::kFloat, r);
  check_input(k, "k", bf, r);
  check_input(v, "v", bf, r);
  check_input(a, "a", bf, r);
  check_input(b, "b", bf, r);
  const int B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  TORCH_CHECK(N == 16 || N == 32 || N == 64, "wkv7 cuda: head size must be 16, 32 or 64");
  TORCH_CHECK(T > 0, "wkv7 cuda: T must be > 0");
  TORCH_CHECK(s0.is_cuda() && s0.scalar_type() == at::kFloat && s0.is_contiguous() &&
                  s0.sizes() == at::IntArrayRef({B, H, N, N}),
              "wkv7 cuda: state must be a contiguous fp32 CUDA tensor [B, H, N, N]");
  const int n_chunks = (T + WKV7_CHUNK - 1) / WKV7_CHUNK;
  auto f32 = r.options().dtype(at::kFloat);
  auto y = torch::empty_like(r);
  auto s_out = torch::empty({B, H, N, N}, f32);
  auto s_saved = torch::empty({B, H, n_chunks, N, N}, f32);
  auto sa = torch::empty({B, T, H, N}, f32);
  check_launch(wkv7_forward_launch(
      B, T, H, N, r.data_ptr(), w.data_ptr<float>(), k.data_ptr(), v.data_ptr(), a.data_ptr(),
      b.data_ptr(), s0.data_ptr<float>(), y.data_ptr(), s_out.data_ptr<float>(),
      s_saved.data_ptr<float>(), sa.data_ptr<float>(), reinterpret_cast<void*>(stream)));
  return {y, s_out, s_saved, sa};
}

std::vector<torch::Tensor> wkv7_backward(torch::Tensor r, torch::Tensor w, torch::Tensor k,
                                         torch::Tensor v, torch::Tensor a, torch::Tensor b,
                                         torch::Tensor dy, torch::Tensor ds_out,
                                         torch::Tensor s_saved, torch::Tensor sa,
                                         int64_t stream) {
  const auto bf = at::kBFloat16;
  check_input(r, "r", bf, r);
  check_input(w, "w", at::kFloat, r);
  check_input(k, "k", bf, r);
  check_input(v, "v", bf, r);
  check_input(a, "a", bf, r);
  check_input(b, "b", bf, r);
  check_input(dy, "dy", bf, r);
  check_input(sa, "sa", at::kFloat, r);
  const int B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  TORCH_CHECK(ds_out.is_contiguous() && ds_out.scalar_type() == at::kFloat &&
                  ds_out.sizes() == at::IntArrayRef({B, H, N, N}),
              "wkv7 cuda: final-state gradient must be contiguous fp32 [B, H, N, N]");
  TORCH_CHECK(s_saved.is_contiguous() && s_saved.scalar_type() == at::kFloat,
              "wkv7 cuda: saved states must be contiguous fp32");
  auto dr = torch::empty_like(r), dk = torch::empty_like(k), dv = torch::empty_like(v);
  auto da = torch::empty_like(a), db = torch::empty_like(b), dw = torch::empty_like(w);
  auto ds0 = torch::empty_like(ds_out);
  check_launch(wkv7_backward_launch(
      B, T, H, N, r.data_ptr(), w.data_ptr<float>(), k.data_ptr(), v.data_ptr(), a.data_ptr(),
      b.data_ptr(), dy.data_ptr(), ds_out.data_ptr<float>(), s_saved.data_ptr<float>(),
      sa.data_ptr<float>(), dr.data_ptr(), dw.data_ptr<float>(), dk.data_ptr(), dv.data_ptr(),
      da.data_ptr(), db.data_ptr(), ds0.data_ptr<float>(), reinterpret_cast<void*>(stream)));
  return {dr, dw, dk, dv, da, db, ds0};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &wkv7_forward, "WKV-7 forward (bf16 in/out, fp32 w and state)");
  m.def("backward", &wkv7_backward, "WKV-7 backward");
}
