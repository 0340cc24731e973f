// saxpy: the demo's CUDA kernel program (built for the architectures the manifest asks for).
//
// Every CUDA call and the launch are checked, and every element of the result is compared
// with the CPU's: a kernel that never ran (no SASS for the GPU and PTX its driver cannot
// JIT) is an error, not a plausible-looking number. Exit status: 0 when the result is
// right, 1 when a CUDA call failed or a value is wrong, 2 for bad arguments. Without a
// GPU it computes on the CPU and checks that, unless SAXPY_REQUIRE_GPU=1 (a GPU test).
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>
#include <vector>

__global__ void saxpy(int n, float a, const float* x, float* y) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

static void saxpy_host(int n, float a, const float* x, float* y) {
  for (int i = 0; i < n; ++i) y[i] = a * x[i] + y[i];
}

// The first failed CUDA call ends the program with its name and the error.
#define CHECK(call)                                                                   \
  do {                                                                                \
    cudaError_t err_ = (call);                                                        \
    if (err_ != cudaSuccess) {                                                        \
      std::fprintf(stderr, "saxpy: FAILED: %s: %s (%s)\n", #call, cudaGetErrorString(err_), \
                   cudaGetErrorName(err_));                                           \
      return 1;                                                                       \
    }                                                                                 \
  } while (0)

// Inputs that give every element its own value, so a shifted or partial result shows.
static void fill(int n, std::vector<float>& x, std::vector<float>& y) {
  for (int i = 0; i < n; ++i) {
    x[i] = static_cast<float>(i % 1000) * 0.5f;
    y[i] = static_cast<float>(i % 7) - 3.0f;
  }
}

// How many elements of got differ from the CPU's answer; the first few are printed.
static long mismatches(int n, float a, const std::vector<float>& got) {
  std::vector<float> x(n), want(n);
  fill(n, x, want);
  saxpy_host(n, a, x.data(), want.data());
  long bad = 0;
  for (int i = 0; i < n; ++i) {
    if (std::fabs(got[i] - want[i]) > 1e-4f * (1.0f + std::fabs(want[i]))) {
      if (bad < 5) std::fprintf(stderr, "saxpy: y[%d] = %g, expected %g\n", i, got[i], want[i]);
      ++bad;
    }
  }
  return bad;
}

static int on_gpu(int n, float a, std::vector<float>& x, std::vector<float>& y, int devices) {
  cudaDeviceProp prop;
  CHECK(cudaGetDeviceProperties(&prop, 0));
  int driver = 0, runtime = 0;
  CHECK(cudaDriverGetVersion(&driver));
  CHECK(cudaRuntimeGetVersion(&runtime));
  float *dx = nullptr, *dy = nullptr;
  CHECK(cudaMalloc(&dx, n * sizeof(float)));
  CHECK(cudaMalloc(&dy, n * sizeof(float)));
  CHECK(cudaMemcpy(dx, x.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dy, y.data(), n * sizeof(float), cudaMemcpyHostToDevice));
  saxpy<<<(n + 255) / 256, 256>>>(n, a, dx, dy);
  CHECK(cudaGetLastError());  // the launch itself: no kernel image for this GPU shows here
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaMemcpy(y.data(), dy, n * sizeof(float), cudaMemcpyDeviceToHost));
  CHECK(cudaFree(dx));
  CHECK(cudaFree(dy));
  long bad = mismatches(n, a, y);
  const char* jit = std::getenv("CUDA_FORCE_PTX_JIT");
  std::printf("saxpy: %d CUDA device(s), %s (sm_%d%d), driver %d.%d, runtime %d.%d%s\n", devices, prop.name,
              prop.major, prop.minor, driver / 1000, driver % 1000 / 10, runtime / 1000, runtime % 1000 / 10,
              jit && *jit == '1' ? ", PTX JIT forced" : "");
  if (bad) {
    std::printf("saxpy: FAILED: %ld of %d values wrong\n", bad, n);
    return 1;
  }
  std::printf("saxpy: OK: %d values checked on the GPU\n", n);
  return 0;
}

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 1 << 20;
  if (n <= 0) {
    std::fprintf(stderr, "usage: saxpy [N > 0]\n");
    return 2;
  }
  const float a = 2.0f;
  std::vector<float> x(n), y(n);
  fill(n, x, y);

  int devices = 0;
  cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    const char* why = err == cudaSuccess ? "none found" : cudaGetErrorString(err);
    const char* required = std::getenv("SAXPY_REQUIRE_GPU");
    if (required && *required == '1') {
      std::printf("saxpy: FAILED: no CUDA device (%s), and SAXPY_REQUIRE_GPU=1\n", why);
      return 1;
    }
    saxpy_host(n, a, x.data(), y.data());  // no GPU (or no driver) here: the CPU answers
    long bad = mismatches(n, a, y);
    if (bad) {
      std::printf("saxpy: FAILED: %ld of %d values wrong on the CPU\n", bad, n);
      return 1;
    }
    std::printf("saxpy: no CUDA device (%s); OK: %d values checked on the CPU\n", why, n);
    return 0;
  }
  return on_gpu(n, a, x, y, devices);
}
