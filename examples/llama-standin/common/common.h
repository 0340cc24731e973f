#pragma once

#include <string>

// The value of environment variable `name` (upstream: every option has a LLAMA_ARG_* twin).
std::string common_env(const char * name, const std::string & fallback);

// "version: N (commit)" and the compiler line, on stderr as upstream prints them.
void common_print_version();

// Downloads url to path; false with a message in err. Needs a build with LLAMA_CURL.
bool common_download(const std::string & url, const std::string & path, std::string & err);
