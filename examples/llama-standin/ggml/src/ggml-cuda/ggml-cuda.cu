// The GPU backend: a dot product kernel. Without a device the module scores 0 and the
// loader leaves it out (the CPU backend answers instead).
#include "ggml-backend.h"
#include "vendor.h"

#include <stdio.h>

__global__ void dot_kernel(const float * a, const float * b, float * out, int n) {
    __shared__ float partial[256];
    float sum = 0.0f;
    for (int i = threadIdx.x; i < n; i += blockDim.x) sum += a[i] * b[i];
    partial[threadIdx.x] = sum;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) partial[threadIdx.x] += partial[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) *out = partial[0];
}

static int device_count(void) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        fprintf(stderr, "ggml_%s_init: failed to initialize %s: %s\n", GGML_GPU_ID, GGML_GPU_NAME,
                cudaGetErrorString(err));
        return 0;
    }
    return n;
}

static float gpu_dot(const float * a, const float * b, int n) {
    float *da, *db, *dout, out = 0.0f;
    size_t bytes = (size_t) n * sizeof(float);
    cudaMalloc((void **) &da, bytes);
    cudaMalloc((void **) &db, bytes);
    cudaMalloc((void **) &dout, sizeof(float));
    cudaMemcpy(da, a, bytes, cudaMemcpyHostToDevice);
    cudaMemcpy(db, b, bytes, cudaMemcpyHostToDevice);
    dot_kernel<<<1, 256>>>(da, db, dout, n);
    cudaMemcpy(&out, dout, sizeof(float), cudaMemcpyDeviceToHost);
    cudaFree(da);
    cudaFree(db);
    cudaFree(dout);
    return out;
}

#if defined(GGML_USE_HIP)
#define REG_FN ggml_backend_hip_reg
#else
#define REG_FN ggml_backend_cuda_reg
#endif

extern "C" GGML_API const ggml_backend_reg * REG_FN(void) {
    static ggml_backend_reg reg = {GGML_GPU_NAME, GGML_GPU_NAME " for " GGML_CUDA_ARCHS, -1, gpu_dot};
    if (reg.n_devices < 0) reg.n_devices = device_count();
    return &reg;
}

#ifdef GGML_BACKEND_DL
extern "C" GGML_API const ggml_backend_reg * ggml_backend_init(void) { return REG_FN(); }
extern "C" GGML_API int ggml_backend_score(void) { return REG_FN()->n_devices > 0 ? 100 : 0; }
#endif
