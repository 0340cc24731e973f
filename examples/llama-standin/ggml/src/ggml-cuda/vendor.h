// The CUDA runtime API, or HIP's under the same names (the ROCm backend compiles this
// backend's sources as HIP, as upstream's ggml-hip does).
#pragma once

#if defined(GGML_USE_HIP)
#include <hip/hip_runtime.h>
#define cudaError_t          hipError_t
#define cudaSuccess          hipSuccess
#define cudaGetDeviceCount   hipGetDeviceCount
#define cudaGetErrorString   hipGetErrorString
#define cudaMalloc           hipMalloc
#define cudaFree             hipFree
#define cudaMemcpy           hipMemcpy
#define cudaMemcpyHostToDevice hipMemcpyHostToDevice
#define cudaMemcpyDeviceToHost hipMemcpyDeviceToHost
#define GGML_GPU_NAME        "ROCm"
#define GGML_GPU_ID          "hip"
#else
#include <cuda_runtime.h>
#define GGML_GPU_NAME        "CUDA"
#define GGML_GPU_ID          "cuda"
#endif
