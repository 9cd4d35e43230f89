// Asking the lazy-layer helper to complete a placeholder before its first read: one child per
// file not yet known complete, waited for through a pidfd with a bound, killed past it.
#include "lazy.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>

#include <spdlog/spdlog.h>

#include "unique_fd.h"

extern char** environ;

namespace lamina {

LazyLayers::LazyLayers(const MountOptions& opts)
    : helper_(opts.lazy_fetch),
      layer_paths_(opts.lowerdirs),
      lazy_(opts.lowerdirs.size() + 1, false),
      timeout_s_(static_cast<int>(opts.lazy_timeout)) {
    for (uint32_t n : opts.lazy_layers)
        if (n >= 1 && n < lazy_.size()) lazy_[n] = true;
}

int LazyLayers::ensure_complete(LayerNo layer, const std::string& rel) {
    if (layer >= lazy_.size() || !lazy_[layer]) return 0;
    std::string key = std::to_string(layer) + "/" + rel;
    {
        std::lock_guard lock(mu_);
        if (complete_.count(key)) return 0;
    }
    const std::string& root = layer_paths_[layer - 1];
    std::vector<char*> argv = {const_cast<char*>(helper_.c_str()), const_cast<char*>(root.c_str()),
                               const_cast<char*>(rel.c_str()), nullptr};
    pid_t pid = 0;
    if (int err = posix_spawn(&pid, helper_.c_str(), nullptr, nullptr, argv.data(), environ)) {
        spdlog::error("lazy layer {}: cannot run {}: {}", root, helper_, strerror(err));
        return EIO;
    }
    // Until the child exits or the bound passes: through a pidfd, else by polling.
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    int status = 0;
    bool exited = false, reaped = false;
    if (pidfd) {
        struct pollfd p = {pidfd.get(), POLLIN, 0};
        int n;
        do {
            n = ::poll(&p, 1, timeout_s_ * 1000);
        } while (n < 0 && errno == EINTR);
        exited = n > 0;
    } else {
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s_);
        while (!exited && std::chrono::steady_clock::now() < deadline) {
            exited = ::waitpid(pid, &status, WNOHANG) == pid;
            if (!exited) ::usleep(10000);
        }
        reaped = exited;
    }
    if (!exited) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, &status, 0);
        spdlog::error("lazy layer {}: {} not fetched within {} s", root, rel, timeout_s_);
        return EIO;
    }
    while (!reaped && ::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        spdlog::error("lazy layer {}: fetching {} failed (helper status {})", root, rel, status);
        return EIO;
    }
    std::lock_guard lock(mu_);
    complete_.insert(std::move(key));
    return 0;
}

std::unique_ptr<LazyLayers> make_lazy_layers(const MountOptions& opts) {
    if (opts.lazy_fetch.empty() || opts.lazy_layers.empty()) return nullptr;
    return std::make_unique<LazyLayers>(opts);
}

}  // namespace lamina
