// ggml stand-in: the backend registry. Backends (CPU variants, CUDA, HIP) are linked into
// libggml or, with GGML_BACKEND_DL, loaded at run time from libggml-NAME[-VARIANT].so files
// next to the executable: for each kind the loader keeps the file whose score is highest
// on this machine (a CPU variant scores 0 when the CPU lacks one of its instruction sets).
#pragma once

#include "ggml.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ggml_backend_reg {
    const char * name;         // "CPU", "CUDA", "ROCm"
    const char * description;  // e.g. "x86-64 haswell: SSE42 AVX F16C FMA AVX2 BMI2"
    int          n_devices;    // devices the backend can use here
    float     (* dot)(const float * a, const float * b, int n);
} ggml_backend_reg;

// What a backend module exports (GGML_BACKEND_DL).
typedef const ggml_backend_reg * (*ggml_backend_init_t)(void);
typedef int (*ggml_backend_score_t)(void);

GGML_API void                     ggml_backend_load_all(void);
GGML_API size_t                   ggml_backend_reg_count(void);
GGML_API const ggml_backend_reg * ggml_backend_reg_get(size_t i);
GGML_API const char *             ggml_backend_reg_path(size_t i);  // "" when linked in

// A dot product on the first backend with a device (the CPU backend at least).
GGML_API float ggml_backend_dot(const float * a, const float * b, int n);

#ifdef __cplusplus
}
#endif
