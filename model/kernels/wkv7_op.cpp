// Torch bindings for wkv7.cu: shape/dtype/device checks and allocation. Autograd and the
// torch.library registration live in gpt5os/model/wkv_cuda.py, which also passes the current CUDA
// stream (as an integer handle) and selects the device. This file needs only torch's CPU headers,
// so a machine without CUDA torch can still build it: tests/test_model_cuda_build.py builds it with
// WKV7_DEVICE=at::kCPU and stub launchers (tests/wkv7_stub_launch.cpp) to check every error here.

// torch/python.h + torch/types.h rather than torch/extension.h: the same API used here, ~40%
// less to compile (torch/extension.h pulls in all of libtorch's C++ frontend).
#include <torch/python.h>
#include <torch/types.h>

#include <vector>

#ifndef WKV7_CHUNK
#define WKV7_CHUNK 16
#endif
#ifndef WKV7_DEVICE
#define WKV7_DEVICE at::kCUDA
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

// Every tensor the kernels read: on r's device (a CUDA device in the real build), of one dtype,
// contiguous (the kernels index [B, T, H, N] and [B, H, ..., N, N] by hand) and of one shape.
void check_tensor(const torch::Tensor& x, const char* name, at::ScalarType dtype,
                  at::IntArrayRef shape, const torch::Tensor& r) {
  TORCH_CHECK(x.device().type() == WKV7_DEVICE, "wkv7 cuda: ", name, " must be on ",
              c10::DeviceTypeName(WKV7_DEVICE), ", got ", x.device());
  TORCH_CHECK(x.device() == r.device(), "wkv7 cuda: ", name, " is on ", x.device(), ", r on ",
              r.device());
  TORCH_CHECK(x.scalar_type() == dtype, "wkv7 cuda: ", name, " has dtype ", x.scalar_type(),
              ", expected ", dtype);
  TORCH_CHECK(x.sizes() == shape, "wkv7 cuda: ", name, " has shape ", x.sizes(), ", expected ",
              shape);
  TORCH_CHECK(x.is_contiguous(), "wkv7 cuda: ", name, " must be contiguous");
}

// r, w, k, v, a, b: [B, T, H, N], bf16 except the fp32 decay w; the head size one the kernels have.
void check_inputs(const torch::Tensor& r, const torch::Tensor& w, const torch::Tensor& k,
                  const torch::Tensor& v, const torch::Tensor& a, const torch::Tensor& b) {
  TORCH_CHECK(r.dim() == 4, "wkv7 cuda: inputs must be [B, T, H, N], got r of shape ", r.sizes());
  const auto bf = at::kBFloat16;
  check_tensor(r, "r", bf, r.sizes(), r);
  check_tensor(w, "w", at::kFloat, r.sizes(), r);
  check_tensor(k, "k", bf, r.sizes(), r);
  check_tensor(v, "v", bf, r.sizes(), r);
  check_tensor(a, "a", bf, r.sizes(), r);
  check_tensor(b, "b", bf, r.sizes(), r);
  const int64_t N = r.size(3);
  TORCH_CHECK(N == 16 || N == 32 || N == 64, "wkv7 cuda: head size must be 16, 32 or 64, got ", N);
  TORCH_CHECK(r.size(0) * r.size(2) < (int64_t{1} << 31) && r.size(1) < (int64_t{1} << 31),
              "wkv7 cuda: B*H and T must each be < 2^31, got shape ", r.sizes());
}

void check_launch(int err) {
  TORCH_CHECK(err == 0, "wkv7 cuda kernel launch failed: ", wkv7_error_string(err));
}

int64_t n_chunks(int64_t T) { return (T + WKV7_CHUNK - 1) / WKV7_CHUNK; }

}  // namespace

// save=false is the no-grad forward: s_saved and sa come back empty and are never written.
std::vector<torch::Tensor> wkv7_forward(torch::Tensor r, torch::Tensor w, torch::Tensor k,
                                        torch::Tensor v, torch::Tensor a, torch::Tensor b,
                                        torch::Tensor s0, bool save, int64_t stream) {
  check_inputs(r, w, k, v, a, b);
  const int64_t B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  check_tensor(s0, "s0 (initial state)", at::kFloat, {B, H, N, N}, r);
  auto f32 = r.options().dtype(at::kFloat);
  auto y = torch::empty_like(r);
  auto s_out = torch::empty({B, H, N, N}, f32);
  auto s_saved = save ? torch::empty({B, H, n_chunks(T), N, N}, f32) : torch::empty({0}, f32);
  auto sa = save ? torch::empty({B, T, H, N}, f32) : torch::empty({0}, f32);
  if (B * H == 0) return {y, s_out, s_saved, sa};  // nothing to compute: no empty-grid launch
  if (T == 0) {  // no step: the state passes through
    s_out.copy_(s0);
    return {y, s_out, s_saved, sa};
  }
  check_launch(wkv7_forward_launch(
      B, T, H, N, r.data_ptr(), w.data_ptr<float>(), k.data_ptr(), v.data_ptr(), a.data_ptr(),
      b.data_ptr(), s0.data_ptr<float>(), y.data_ptr(), s_out.data_ptr<float>(),
      save ? s_saved.data_ptr<float>() : nullptr, save ? sa.data_ptr<float>() : nullptr,
      reinterpret_cast<void*>(stream)));
  return {y, s_out, s_saved, sa};
}

std::vector<torch::Tensor> wkv7_backward(torch::Tensor r, torch::Tensor w, torch::Tensor k,
                                         torch::Tensor v, torch::Tensor a, torch::Tensor b,
                                         torch::Tensor dy, torch::Tensor ds_out,
                                         torch::Tensor s_saved, torch::Tensor sa,
                                         int64_t stream) {
  check_inputs(r, w, k, v, a, b);
  const int64_t B = r.size(0), T = r.size(1), H = r.size(2), N = r.size(3);
  check_tensor(dy, "dy", at::kBFloat16, r.sizes(), r);
  check_tensor(ds_out, "ds_out (final-state gradient)", at::kFloat, {B, H, N, N}, r);
  check_tensor(s_saved, "s_saved (the forward's chunk states; was it run with save=True?)",
               at::kFloat, {B, H, n_chunks(T), N, N}, r);
  check_tensor(sa, "sa (the forward's S a; was it run with save=True?)", at::kFloat, r.sizes(), r);
  auto dr = torch::empty_like(r), dk = torch::empty_like(k), dv = torch::empty_like(v);
  auto da = torch::empty_like(a), db = torch::empty_like(b), dw = torch::empty_like(w);
  auto ds0 = torch::empty_like(ds_out);
  if (B * H == 0) return {dr, dw, dk, dv, da, db, ds0};
  if (T == 0) {
    ds0.copy_(ds_out);
    return {dr, dw, dk, dv, da, db, ds0};
  }
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
