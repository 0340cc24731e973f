// llama-cli stand-in: loads the backends (and a GGUF model when given one), then prints a
// "completion" for the prompt.
#include "common.h"
#include "llama.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

static void usage(const char * argv0) {
    printf("usage: %s [-m MODEL.gguf] [-p PROMPT] [-n N_PREDICT] [--version]\n", argv0);
}

int main(int argc, char ** argv) {
    std::string model_path = common_env("LLAMA_ARG_MODEL", "");
    std::string prompt = "Hello from llama.cpp";
    int n_predict = std::atoi(common_env("LLAMA_ARG_N_PREDICT", "32").c_str());
    for (int i = 1; i < argc; ++i) {
        std::string arg = argv[i];
        bool has_value = i + 1 < argc;
        if (arg == "--version") {
            llama_backend_init();
            common_print_version();
            return 0;
        } else if (arg == "-h" || arg == "--help") {
            usage(argv[0]);
            return 0;
        } else if ((arg == "-m" || arg == "--model") && has_value) {
            model_path = argv[++i];
        } else if ((arg == "-p" || arg == "--prompt") && has_value) {
            prompt = argv[++i];
        } else if ((arg == "-n" || arg == "--n-predict") && has_value) {
            n_predict = std::atoi(argv[++i]);
        } else {
            fprintf(stderr, "error: unknown argument: %s\n", arg.c_str());
            usage(argv[0]);
            return 1;
        }
    }
    llama_backend_init();
    fprintf(stderr, "system_info: %s\n", llama_print_system_info());
    llama_model * model = nullptr;
    if (!model_path.empty()) {
        char err[512];
        model = llama_model_load_from_file(model_path.c_str(), err, sizeof(err));
        if (!model) {
            fprintf(stderr, "error: failed to load model: %s\n", err);
            return 1;
        }
        fprintf(stderr, "model: %s\n", llama_model_desc(model));
    }
    char out[4096];
    llama_generate(model, prompt.c_str(), n_predict, out, sizeof(out));
    printf("%s\n%s\n", prompt.c_str(), out);
    llama_model_free(model);
    return 0;
}
