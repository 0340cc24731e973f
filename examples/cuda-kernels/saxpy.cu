// saxpy: the demo's CUDA kernel program (built for the architectures the manifest asks for).
#include <cstdio>
#include <cstdlib>
#include <cuda_runtime.h>

__global__ void saxpy(int n, float a, const float* x, float* y) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

static void saxpy_host(int n, float a, const float* x, float* y) {
  for (int i = 0; i < n; ++i) y[i] = a * x[i] + y[i];
}

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 1024;
  float* x = static_cast<float*>(std::malloc(n * sizeof(float)));
  float* y = static_cast<float*>(std::malloc(n * sizeof(float)));
  for (int i = 0; i < n; ++i) { x[i] = 1.0f; y[i] = 2.0f; }

  int devices = 0;
  cudaError_t err = cudaGetDeviceCount(&devices);
  if (err != cudaSuccess || devices == 0) {
    // No GPU (or no driver) here: compute on the CPU so the program still answers.
    saxpy_host(n, 2.0f, x, y);
    std::printf("saxpy: no CUDA device (%s); CPU result y[0]=%.1f for n=%d\n",
                err == cudaSuccess ? "none found" : cudaGetErrorString(err), y[0], n);
    return 0;
  }
  float *dx = nullptr, *dy = nullptr;
  cudaMalloc(&dx, n * sizeof(float));
  cudaMalloc(&dy, n * sizeof(float));
  cudaMemcpy(dx, x, n * sizeof(float), cudaMemcpyHostToDevice);
  cudaMemcpy(dy, y, n * sizeof(float), cudaMemcpyHostToDevice);
  saxpy<<<(n + 255) / 256, 256>>>(n, 2.0f, dx, dy);
  cudaMemcpy(y, dy, n * sizeof(float), cudaMemcpyDeviceToHost);
  std::printf("saxpy: %d CUDA device(s); GPU result y[0]=%.1f for n=%d\n", devices, y[0], n);
  cudaFree(dx);
  cudaFree(dy);
  return 0;
}
