#pragma once

#define MTMD_API __attribute__((visibility("default")))

#ifdef __cplusplus
extern "C" {
#endif

// The marker a prompt uses where an image or audio clip goes.
MTMD_API const char * mtmd_default_marker(void);

#ifdef __cplusplus
}
#endif
