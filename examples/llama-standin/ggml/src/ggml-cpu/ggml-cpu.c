// The CPU backend: a dot product the compiler vectorises with the variant's instruction sets,
// spread over OpenMP threads when it is long (hence libgomp at run time, as upstream).
#include "ggml-backend.h"

int ggml_cpu_variant_score(void);

static float cpu_dot(const float * a, const float * b, int n) {
    float sum = 0.0f;
#ifdef _OPENMP
#pragma omp parallel for simd reduction(+ : sum) if (n > 65536)
#endif
    for (int i = 0; i < n; ++i) sum += a[i] * b[i];
    return sum;
}

static const ggml_backend_reg cpu_reg = {
    "CPU",
    GGML_CPU_VARIANT " (" GGML_CPU_FEATURES ")",
    1,
    cpu_dot,
};

GGML_API const ggml_backend_reg * ggml_backend_cpu_reg(void) { return &cpu_reg; }

#ifdef GGML_BACKEND_DL
GGML_API const ggml_backend_reg * ggml_backend_init(void) { return &cpu_reg; }
GGML_API int ggml_backend_score(void) { return ggml_cpu_variant_score(); }
#endif
