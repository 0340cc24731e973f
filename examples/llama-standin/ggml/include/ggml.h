// ggml stand-in: the base library (version, logging, GGUF header reading).
#pragma once

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define GGML_API __attribute__((visibility("default")))

GGML_API const char * ggml_version(void);

// Log lines go to stderr, like upstream's default logger.
GGML_API void ggml_log(const char * fmt, ...) __attribute__((format(printf, 1, 2)));

// The header of a GGUF file: version, tensor count, metadata, and general.name if present.
struct gguf_info {
    uint32_t version;
    uint64_t n_tensors;
    uint64_t n_kv;
    char     name[128];
    char     architecture[64];
};

// 0 on success; otherwise -1 with a message in err.
GGML_API int gguf_read_info(const char * path, struct gguf_info * info, char * err, size_t err_size);

#ifdef __cplusplus
}
#endif
