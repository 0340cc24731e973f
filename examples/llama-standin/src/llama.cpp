#include "llama.h"

#include "ggml-backend.h"

#include <cstdio>
#include <cstring>
#include <sstream>
#include <string>
#include <vector>

struct llama_model {
    std::string path;
    gguf_info info;
    std::string desc;
};

extern "C" {

int llama_build_number(void) { return LLAMA_BUILD_NUMBER; }
const char * llama_build_commit(void) { return LLAMA_BUILD_COMMIT; }
const char * llama_build_compiler(void) { return LLAMA_COMPILER; }
const char * llama_build_target(void) { return LLAMA_BUILD_TARGET; }

void llama_backend_init(void) { ggml_backend_load_all(); }

const char * llama_print_system_info(void) {
    static std::string text;
    std::ostringstream out;
    for (size_t i = 0; i < ggml_backend_reg_count(); ++i) {
        const ggml_backend_reg * reg = ggml_backend_reg_get(i);
        out << (i ? " | " : "") << reg->name << " : " << reg->description << " (" << reg->n_devices << " device"
            << (reg->n_devices == 1 ? "" : "s") << ")";
    }
    text = out.str();
    return text.c_str();
}

llama_model * llama_model_load_from_file(const char * path, char * err, size_t err_size) {
    auto * model = new llama_model;
    model->path = path;
    if (gguf_read_info(path, &model->info, err, err_size) != 0) {
        delete model;
        return nullptr;
    }
    std::ostringstream desc;
    desc << (model->info.name[0] ? model->info.name : "unnamed") << " (" << (model->info.architecture[0] ? model->info.architecture : "unknown")
         << ", GGUF v" << model->info.version << ", " << model->info.n_tensors << " tensors)";
    model->desc = desc.str();
    return model;
}

const char * llama_model_desc(const llama_model * model) { return model ? model->desc.c_str() : "no model"; }

void llama_model_free(llama_model * model) { delete model; }

// The prompt's words in reverse order: a stand-in for a language model, but the "logits"
// (each word's length weighted by its position) go through the loaded backend's dot product.
int llama_generate(const llama_model * model, const char * prompt, int n_predict, char * out, size_t out_size) {
    (void) model;
    std::vector<std::string> words;
    std::istringstream in(prompt ? prompt : "");
    for (std::string w; in >> w;) words.push_back(w);
    std::vector<float> len(words.size()), pos(words.size());
    for (size_t i = 0; i < words.size(); ++i) {
        len[i] = (float) words[i].size();
        pos[i] = (float) (i + 1);
    }
    float score = ggml_backend_dot(len.data(), pos.data(), (int) words.size());
    std::string text;
    int n = 0;
    for (auto it = words.rbegin(); it != words.rend() && n < n_predict; ++it, ++n) text += (n ? " " : "") + *it;
    snprintf(out, out_size, "%s", text.c_str());
    if (n > 0) ggml_log("llama_generate: %d words, score %.1f\n", n, score);
    return n;
}

}  // extern "C"
