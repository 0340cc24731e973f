// llama-server stand-in: an HTTP server with upstream's address settings (--host/--port or
// LLAMA_ARG_HOST/LLAMA_ARG_PORT, default 127.0.0.1:8080) and a few of its endpoints:
//   GET  /health      {"status":"ok"}        (what the image's HEALTHCHECK asks)
//   GET  /v1/models   the loaded model
//   GET  /props       build and backend information
//   POST /completion  {"prompt": "...", "n_predict": N} -> {"content": "..."}
#include "common.h"
#include "llama.h"
#include "mtmd.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

static volatile sig_atomic_t g_stop = 0;

static void on_signal(int) { g_stop = 1; }

static std::string json_escape(const std::string & s) {
    std::string out;
    for (char c : s) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\t': out += "\\t"; break;
            default:
                if ((unsigned char) c < 0x20) {
                    char buf[8];
                    snprintf(buf, sizeof(buf), "\\u%04x", c);
                    out += buf;
                } else {
                    out += c;
                }
        }
    }
    return out;
}

// The string or number value of "key" at the top of a small JSON object (enough for the
// request bodies this server accepts); fallback when absent.
static std::string json_field(const std::string & body, const std::string & key, const std::string & fallback) {
    size_t at = body.find("\"" + key + "\"");
    if (at == std::string::npos) return fallback;
    at = body.find(':', at);
    if (at == std::string::npos) return fallback;
    ++at;
    while (at < body.size() && isspace((unsigned char) body[at])) ++at;
    if (at >= body.size()) return fallback;
    if (body[at] != '"') {
        size_t end = body.find_first_of(",}", at);
        return body.substr(at, end == std::string::npos ? std::string::npos : end - at);
    }
    std::string out;
    for (size_t i = at + 1; i < body.size(); ++i) {
        char c = body[i];
        if (c == '"') return out;
        if (c == '\\' && i + 1 < body.size()) {
            char e = body[++i];
            out += e == 'n' ? '\n' : e == 't' ? '\t' : e;
        } else {
            out += c;
        }
    }
    return fallback;
}

static void respond(int fd, int status, const std::string & body) {
    const char * reason = status == 200 ? "OK" : status == 404 ? "Not Found" : status == 405 ? "Method Not Allowed"
                                                                                                : "Bad Request";
    std::string head = "HTTP/1.1 " + std::to_string(status) + " " + reason +
                       "\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n";
    std::string all = head + body;
    for (size_t sent = 0; sent < all.size();) {
        ssize_t n = send(fd, all.data() + sent, all.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) return;
        sent += (size_t) n;
    }
}

struct server_state {
    llama_model * model = nullptr;
    std::string model_name;
};

static void handle(int fd, const server_state & st) {
    std::string req;
    char buf[4096];
    size_t header_end = std::string::npos;
    while (header_end == std::string::npos && req.size() < (1 << 20)) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) return;
        req.append(buf, (size_t) n);
        header_end = req.find("\r\n\r\n");
    }
    if (header_end == std::string::npos) return respond(fd, 400, "{\"error\":\"request too large\"}");
    std::string method = req.substr(0, req.find(' '));
    size_t path_start = method.size() + 1;
    std::string path = req.substr(path_start, req.find(' ', path_start) - path_start);
    path = path.substr(0, path.find('?'));
    size_t length = 0;
    size_t cl = req.find("Content-Length:");
    if (cl == std::string::npos) cl = req.find("content-length:");
    if (cl != std::string::npos && cl < header_end) length = std::strtoul(req.c_str() + cl + 15, nullptr, 10);
    std::string body = req.substr(header_end + 4);
    while (body.size() < length) {
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) break;
        body.append(buf, (size_t) n);
    }
    fprintf(stderr, "request: %s %s\n", method.c_str(), path.c_str());
    if (path == "/health" || path == "/v1/health") {
        respond(fd, 200, "{\"status\":\"ok\"}");
    } else if (path == "/v1/models" || path == "/models") {
        respond(fd, 200, "{\"object\":\"list\",\"data\":[{\"id\":\"" + json_escape(st.model_name) +
                             "\",\"object\":\"model\",\"owned_by\":\"llamacpp\"}]}");
    } else if (path == "/props") {
        respond(fd, 200, "{\"build_info\":\"b" + std::to_string(llama_build_number()) + "-" +
                             json_escape(llama_build_commit()) + "\",\"model_path\":\"" + json_escape(st.model_name) +
                             "\",\"system_info\":\"" + json_escape(llama_print_system_info()) +
                             "\",\"media_marker\":\"" + json_escape(mtmd_default_marker()) + "\"}");
    } else if (path == "/completion" || path == "/completions") {
        if (method != "POST") return respond(fd, 405, "{\"error\":\"use POST\"}");
        std::string prompt = json_field(body, "prompt", "");
        int n_predict = std::atoi(json_field(body, "n_predict", "32").c_str());
        char out[4096];
        llama_generate(st.model, prompt.c_str(), n_predict, out, sizeof(out));
        respond(fd, 200, "{\"content\":\"" + json_escape(out) + "\",\"stop\":true}");
    } else {
        respond(fd, 404, "{\"error\":{\"code\":404,\"message\":\"File Not Found\",\"type\":\"not_found_error\"}}");
    }
}

static void usage(const char * argv0) {
    printf("usage: %s [--host HOST] [--port PORT] [-m MODEL.gguf] [-mu MODEL_URL] [--version]\n", argv0);
}

int main(int argc, char ** argv) {
    std::string host = common_env("LLAMA_ARG_HOST", "127.0.0.1");
    std::string port = common_env("LLAMA_ARG_PORT", "8080");
    std::string model_path = common_env("LLAMA_ARG_MODEL", "");
    std::string model_url = common_env("LLAMA_ARG_MODEL_URL", "");
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
        } else if (arg == "--host" && has_value) {
            host = argv[++i];
        } else if (arg == "--port" && has_value) {
            port = argv[++i];
        } else if ((arg == "-m" || arg == "--model") && has_value) {
            model_path = argv[++i];
        } else if ((arg == "-mu" || arg == "--model-url") && has_value) {
            model_url = argv[++i];
        } else {
            fprintf(stderr, "error: unknown argument: %s\n", arg.c_str());
            usage(argv[0]);
            return 1;
        }
    }

    llama_backend_init();
    fprintf(stderr, "system_info: %s\n", llama_print_system_info());
    server_state st;
    if (!model_url.empty()) {
        if (model_path.empty()) {  // into the cache folder, as upstream (LLAMA_CACHE)
            std::string cache = common_env("LLAMA_CACHE", common_env("HOME", "/tmp") + "/.cache/llama.cpp") + "/";
            for (size_t at = 1; (at = cache.find('/', at)) != std::string::npos; ++at) {
                mkdir(cache.substr(0, at).c_str(), 0755);  // mkdir -p
            }
            model_path = cache + model_url.substr(model_url.rfind('/') + 1);
        }
        std::string err;
        fprintf(stderr, "main: downloading %s to %s\n", model_url.c_str(), model_path.c_str());
        if (!common_download(model_url, model_path, err)) {
            fprintf(stderr, "error: %s\n", err.c_str());
            return 1;
        }
    }
    if (!model_path.empty()) {
        char err[512];
        st.model = llama_model_load_from_file(model_path.c_str(), err, sizeof(err));
        if (!st.model) {
            fprintf(stderr, "error: failed to load model: %s\n", err);
            return 1;
        }
        fprintf(stderr, "main: model loaded: %s\n", llama_model_desc(st.model));
        st.model_name = model_path;
    } else {
        fprintf(stderr, "main: no model given (-m): serving the stand-in's echo model\n");
        st.model_name = "stand-in";
    }

    addrinfo hints{}, * res = nullptr;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "error: %s:%s: %s\n", host.c_str(), port.c_str(), gai_strerror(rc));
        return 1;
    }
    int srv = socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    int one = 1;
    setsockopt(srv, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (srv < 0 || bind(srv, res->ai_addr, res->ai_addrlen) != 0 || listen(srv, 16) != 0) {
        fprintf(stderr, "error: couldn't bind HTTP server socket, hostname: %s, port: %s: %s\n", host.c_str(),
                port.c_str(), strerror(errno));
        return 1;
    }
    freeaddrinfo(res);

    struct sigaction sa {};
    sa.sa_handler = on_signal;  // no SA_RESTART: accept() returns EINTR and the loop ends
    sigaction(SIGINT, &sa, nullptr);
    sigaction(SIGTERM, &sa, nullptr);
    fprintf(stderr, "main: server is listening on http://%s:%s - starting the main loop\n", host.c_str(), port.c_str());
    while (!g_stop) {
        int fd = accept(srv, nullptr, nullptr);
        if (fd < 0) {
            if (errno == EINTR) continue;
            perror("accept");
            break;
        }
        handle(fd, st);
        close(fd);
    }
    close(srv);
    llama_model_free(st.model);
    fprintf(stderr, "main: cleaning up before exit...\n");
    return 0;
}
