// The backend registry: linked-in backends, or the best module of each kind found next to
// the executable (GGML_BACKEND_DL), as upstream's ggml_backend_load_best does.
#include "ggml-backend.h"

#include <dirent.h>
#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct entry {
    const ggml_backend_reg * reg;
    std::string path;
};

std::vector<entry> & registry() {
    static std::vector<entry> regs;
    return regs;
}

#ifdef GGML_BACKEND_DL

std::string executable_dir() {
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    if (n <= 0) return ".";
    buf[n] = 0;
    std::string path(buf);
    return path.substr(0, path.rfind('/'));
}

// libggml-NAME.so or libggml-NAME-VARIANT.so (modules have no SONAME version).
bool is_candidate(const std::string & file, const std::string & name) {
    const std::string prefix = "libggml-" + name;
    if (file.compare(0, prefix.size(), prefix) != 0 || file.size() < prefix.size() + 3) return false;
    if (file.compare(file.size() - 3, 3, ".so") != 0) return false;
    char next = file[prefix.size()];
    return next == '.' || next == '-';
}

void load_best(const char * name, const char * display) {
    std::vector<std::string> dirs;
#ifdef GGML_BACKEND_DIR
    dirs.push_back(GGML_BACKEND_DIR);
#endif
    dirs.push_back(executable_dir());
    dirs.push_back(".");
    int best_score = 0;
    void * best = nullptr;
    std::string best_path;
    std::vector<std::string> unusable;
    for (const auto & dir : dirs) {
        DIR * d = opendir(dir.c_str());
        if (!d) continue;
        std::vector<std::string> files;
        while (dirent * e = readdir(d)) {
            if (is_candidate(e->d_name, name)) files.emplace_back(e->d_name);
        }
        closedir(d);
        for (const auto & file : files) {
            std::string path = dir + "/" + file;
            void * handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
            if (!handle) {
                ggml_log("load_backend: failed to load %s: %s\n", path.c_str(), dlerror());
                continue;
            }
            auto score_fn = reinterpret_cast<ggml_backend_score_t>(dlsym(handle, "ggml_backend_score"));
            int score = score_fn ? score_fn() : 1;
            if (score > best_score) {
                if (best) dlclose(best);
                best = handle;
                best_score = score;
                best_path = path;
            } else {
                if (score == 0) unusable.push_back(path);
                dlclose(handle);
            }
        }
        if (best) break;  // the first folder with a usable module wins
    }
    if (!best) {
        for (const auto & path : unusable) ggml_log("load_backend: %s cannot run on this machine\n", path.c_str());
        return;
    }
    auto init = reinterpret_cast<ggml_backend_init_t>(dlsym(best, "ggml_backend_init"));
    if (!init) {
        ggml_log("load_backend: %s has no ggml_backend_init\n", best_path.c_str());
        dlclose(best);
        return;
    }
    registry().push_back({init(), best_path});
    ggml_log("load_backend: loaded %s backend from %s\n", display, best_path.c_str());
}

#else

extern "C" const ggml_backend_reg * ggml_backend_cpu_reg(void);
#ifdef GGML_USE_CUDA
extern "C" const ggml_backend_reg * ggml_backend_cuda_reg(void);
#endif
#ifdef GGML_USE_HIP
extern "C" const ggml_backend_reg * ggml_backend_hip_reg(void);
#endif

#endif

}  // namespace

extern "C" {

void ggml_backend_load_all(void) {
    static std::once_flag once;
    std::call_once(once, [] {
#ifdef GGML_BACKEND_DL
        load_best("cuda", "CUDA");
        load_best("hip", "ROCm");
        load_best("cpu", "CPU");
#else
#ifdef GGML_USE_CUDA
        registry().push_back({ggml_backend_cuda_reg(), ""});
#endif
#ifdef GGML_USE_HIP
        registry().push_back({ggml_backend_hip_reg(), ""});
#endif
        registry().push_back({ggml_backend_cpu_reg(), ""});
#endif
    });
}

size_t ggml_backend_reg_count(void) { return registry().size(); }

const ggml_backend_reg * ggml_backend_reg_get(size_t i) { return i < registry().size() ? registry()[i].reg : nullptr; }

const char * ggml_backend_reg_path(size_t i) { return i < registry().size() ? registry()[i].path.c_str() : ""; }

float ggml_backend_dot(const float * a, const float * b, int n) {
    for (const auto & e : registry()) {
        if (e.reg->n_devices > 0 && e.reg->dot) return e.reg->dot(a, b, n);
    }
    float sum = 0.0f;  // no backend at all: plain C
    for (int i = 0; i < n; ++i) sum += a[i] * b[i];
    return sum;
}

}  // extern "C"
