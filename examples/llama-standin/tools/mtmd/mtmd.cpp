#include "mtmd.h"

extern "C" const char * mtmd_default_marker(void) { return "<__media__>"; }
