// Stand-ins for wkv7.cu's host launchers, so tests/test_model_cuda_build.py can build the binding
// (kernels/wkv7_op.cpp) against CPU tensors and check its errors on a machine without a GPU.
// Each launcher "fails" with a description of what it was given: a test that sees this text knows
// the checks let the call through, and with which buffers.

#include <cstdio>

static char last_call[256];

int wkv7_forward_launch(int B, int T, int H, int N, const void*, const float*, const void*,
                        const void*, const void*, const void*, const float*, void*, float*,
                        float* s_saved, float* sa_saved, void*) {
  std::snprintf(last_call, sizeof(last_call),
                "stub forward launch B=%d T=%d H=%d N=%d s_saved=%s sa=%s", B, T, H, N,
                s_saved ? "set" : "null", sa_saved ? "set" : "null");
  return 1;
}

int wkv7_backward_launch(int B, int T, int H, int N, const void*, const float*, const void*,
                         const void*, const void*, const void*, const void*, const float*,
                         const float*, const float*, void*, float*, void*, void*, void*, void*,
                         float*, void*) {
  std::snprintf(last_call, sizeof(last_call), "stub backward launch B=%d T=%d H=%d N=%d", B, T, H,
                N);
  return 1;
}

const char* wkv7_error_string(int) { return last_call; }
