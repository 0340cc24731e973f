// hip-vector-add: a smoke test for AMD GPU nodes. Adds two vectors on GPU 0 and checks the
// sums on the CPU; prints the architectures the binary carries code objects for, and the
// device's. Without a GPU it says so and exits 0 (1 with --require-gpu).
#include <hip/hip_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#ifndef OFFLOAD_ARCHS
#define OFFLOAD_ARCHS "unknown"
#endif

__global__ void vector_add(const float * a, const float * b, float * c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

#define CHECK(call)                                                                              \
    do {                                                                                         \
        hipError_t err_ = (call);                                                                \
        if (err_ != hipSuccess) {                                                                \
            fprintf(stderr, "hip-vector-add: %s failed: %s\n", #call, hipGetErrorString(err_)); \
            return 1;                                                                            \
        }                                                                                        \
    } while (0)

int main(int argc, char ** argv) {
    bool require_gpu = false;
    int n = 1 << 20;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--require-gpu") == 0) {
            require_gpu = true;
        } else {
            n = atoi(argv[i]);
        }
    }
    printf("hip-vector-add: code objects for %s\n", OFFLOAD_ARCHS);

    std::vector<float> a(n), b(n), c(n, 0.0f);
    for (int i = 0; i < n; ++i) {
        a[i] = 0.5f * i;
        b[i] = 2.0f * i + 1.0f;
    }
    int devices = 0;
    hipError_t err = hipGetDeviceCount(&devices);
    if (err != hipSuccess || devices == 0) {
        printf("hip-vector-add: no AMD GPU visible (%s)\n", err != hipSuccess ? hipGetErrorString(err) : "0 devices");
        return require_gpu ? 1 : 0;
    }
    hipDeviceProp_t prop;
    CHECK(hipGetDeviceProperties(&prop, 0));
    printf("hip-vector-add: device 0 of %d: %s (%s)\n", devices, prop.name, prop.gcnArchName);

    float *da, *db, *dc;
    size_t bytes = (size_t) n * sizeof(float);
    CHECK(hipMalloc((void **) &da, bytes));
    CHECK(hipMalloc((void **) &db, bytes));
    CHECK(hipMalloc((void **) &dc, bytes));
    CHECK(hipMemcpy(da, a.data(), bytes, hipMemcpyHostToDevice));
    CHECK(hipMemcpy(db, b.data(), bytes, hipMemcpyHostToDevice));
    int threads = 256;
    hipLaunchKernelGGL(vector_add, dim3((n + threads - 1) / threads), dim3(threads), 0, 0, da, db, dc, n);
    CHECK(hipGetLastError());  // hipErrorNoBinaryForGpu: no code object for this device's architecture
    CHECK(hipMemcpy(c.data(), dc, bytes, hipMemcpyDeviceToHost));
    CHECK(hipFree(da));
    CHECK(hipFree(db));
    CHECK(hipFree(dc));

    int wrong = 0;
    for (int i = 0; i < n; ++i) wrong += std::fabs(c[i] - (a[i] + b[i])) > 1e-3f;
    printf("hip-vector-add: %d of %d sums %s\n", n - wrong, n, wrong ? "correct: FAILED" : "correct");
    return wrong ? 1 : 0;
}
