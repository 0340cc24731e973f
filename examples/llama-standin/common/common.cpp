#include "common.h"

#include "llama.h"

#include <cstdio>
#include <cstdlib>

#ifdef LLAMA_USE_CURL
#include <curl/curl.h>
#endif

std::string common_env(const char * name, const std::string & fallback) {
    const char * value = std::getenv(name);
    return value && *value ? value : fallback;
}

void common_print_version() {
    fprintf(stderr, "version: %d (%s)\n", llama_build_number(), llama_build_commit());
    fprintf(stderr, "built with %s for %s\n", llama_build_compiler(), llama_build_target());
}

bool common_download(const std::string & url, const std::string & path, std::string & err) {
#ifdef LLAMA_USE_CURL
    FILE * out = fopen(path.c_str(), "wb");
    if (!out) {
        err = "cannot write " + path;
        return false;
    }
    CURL * curl = curl_easy_init();
    curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
    curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, out);
    CURLcode rc = curl_easy_perform(curl);
    curl_easy_cleanup(curl);
    fclose(out);
    if (rc != CURLE_OK) {
        err = std::string("download failed: ") + curl_easy_strerror(rc);
        std::remove(path.c_str());
        return false;
    }
    return true;
#else
    (void) url;
    (void) path;
    err = "this build has no download support (configure with -DLLAMA_CURL=ON)";
    return false;
#endif
}
