#include "ggml.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char * ggml_version(void) { return GGML_VERSION; }

void ggml_log(const char * fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
}

static int read_exact(FILE * f, void * buf, size_t n) { return fread(buf, 1, n, f) == n ? 0 : -1; }

// GGUF: "GGUF", u32 version, u64 tensor count, u64 metadata count, then key/value pairs
// (u64 length + key, u32 type, value). Only string values are read; the walk stops at the
// first value of another type, which is enough for general.name and general.architecture.
int gguf_read_info(const char * path, struct gguf_info * info, char * err, size_t err_size) {
    memset(info, 0, sizeof(*info));
    FILE * f = fopen(path, "rb");
    if (!f) {
        snprintf(err, err_size, "cannot open %s", path);
        return -1;
    }
    char magic[4];
    int rc = -1;
    if (read_exact(f, magic, 4) || memcmp(magic, "GGUF", 4) != 0) {
        snprintf(err, err_size, "%s is not a GGUF file", path);
        goto done;
    }
    if (read_exact(f, &info->version, 4) || read_exact(f, &info->n_tensors, 8) || read_exact(f, &info->n_kv, 8)) {
        snprintf(err, err_size, "%s: truncated GGUF header", path);
        goto done;
    }
    for (uint64_t i = 0; i < info->n_kv; ++i) {
        uint64_t klen, vlen;
        uint32_t type;
        char key[256];
        if (read_exact(f, &klen, 8) || klen >= sizeof(key) || read_exact(f, key, klen)) break;
        key[klen] = 0;
        if (read_exact(f, &type, 4) || type != 8 /* string */ || read_exact(f, &vlen, 8)) break;
        char value[256];
        size_t keep = vlen < sizeof(value) ? (size_t) vlen : sizeof(value) - 1;
        if (read_exact(f, value, keep)) break;
        value[keep] = 0;
        if (vlen > keep && fseek(f, (long) (vlen - keep), SEEK_CUR) != 0) break;
        // Longer values are cut to the field's size.
        if (strcmp(key, "general.name") == 0) {
            snprintf(info->name, sizeof(info->name), "%.*s", (int) sizeof(info->name) - 1, value);
        }
        if (strcmp(key, "general.architecture") == 0) {
            snprintf(info->architecture, sizeof(info->architecture), "%.*s", (int) sizeof(info->architecture) - 1, value);
        }
    }
    rc = 0;
done:
    fclose(f);
    return rc;
}
