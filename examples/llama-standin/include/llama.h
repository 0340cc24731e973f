// llama stand-in: build information, backend start-up, GGUF model loading, and a toy
// "generation" (the prompt's words, mirrored) computed through the ggml backends.
#pragma once

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define LLAMA_API __attribute__((visibility("default")))

struct llama_model;

LLAMA_API int          llama_build_number(void);
LLAMA_API const char * llama_build_commit(void);
LLAMA_API const char * llama_build_compiler(void);  // "GNU 12.2.0"
LLAMA_API const char * llama_build_target(void);    // "x86_64-linux-gnu"

// Loads the ggml backends (once) and logs what was loaded, as upstream does.
LLAMA_API void         llama_backend_init(void);
LLAMA_API const char * llama_print_system_info(void);

// NULL on failure, with the reason in err.
LLAMA_API struct llama_model * llama_model_load_from_file(const char * path, char * err, size_t err_size);
LLAMA_API const char *         llama_model_desc(const struct llama_model * model);
LLAMA_API void                 llama_model_free(struct llama_model * model);

// Writes at most n_predict words of "completion" for prompt into out; returns the number
// of words written. model may be NULL.
LLAMA_API int llama_generate(const struct llama_model * model, const char * prompt, int n_predict, char * out,
                             size_t out_size);

#ifdef __cplusplus
}
#endif
