// Asking the lazy-layer fetcher to complete a placeholder before its first read: one fetcher
// process per mount, started on the first ask and again after it ends, answering requests by ID
// over a socket pair; each ask waits with a bound, and a reply nobody waits for is dropped.
#include "lazy.h"

#include <errno.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <future>
#include <thread>

#include <spdlog/spdlog.h>

#include "lazy_protocol.h"
#include "printable.h"
#include "unique_fd.h"

extern char** environ;

namespace lamina {

struct LazyLayers::Fetcher {
    UniqueFd sock;       // laminafs's end; the child has the other as stdin and stdout
    UniqueFd child_end;  // until the child holds it
    pid_t pid = -1;
    std::mutex send_mu;     // one request line at a time
    bool dead = false;      // under LazyLayers::mu_: ended, replies no more
    bool stopping = false;  // under LazyLayers::mu_: the mount goes, nothing to log
    std::thread reader;
    bool said_nonsense = false;  // by the reader thread: one log line per fetcher for those
};

LazyLayers::LazyLayers(const MountOptions& opts)
    : helper_(opts.lazy_fetch),
      layer_paths_(opts.lowerdirs),
      lazy_index_(opts.lowerdirs.size() + 1, -1),
      timeout_s_(static_cast<int>(opts.lazy_timeout)) {
    for (uint32_t n : opts.lazy_layers)
        if (n >= 1 && n < lazy_index_.size() && lazy_index_[n] < 0) {
            lazy_index_[n] = static_cast<int>(lazy_paths_.size());
            lazy_paths_.push_back(layer_paths_[n - 1]);
        }
}

LazyLayers::~LazyLayers() {
    std::shared_ptr<Fetcher> f;
    {
        std::lock_guard lock(mu_);
        f = fetcher_;
        if (f) f->stopping = true;
    }
    if (!f) return;
    // EOF for both: the fetcher exits, the reader thread reaps it.
    ::shutdown(f->sock.get(), SHUT_RDWR);
    if (f->reader.joinable()) f->reader.join();
}

// Started on the first ask rather than at mount: a mount whose lazy files are never opened runs
// nothing, a daemon that forks into the background after the mount is set up is the fetcher's
// parent, and a restart after the fetcher ended is the same path.
std::shared_ptr<LazyLayers::Fetcher> LazyLayers::running_fetcher() {
    if (fetcher_ && !fetcher_->dead) return fetcher_;
    if (fetcher_ && fetcher_->reader.joinable()) fetcher_->reader.join();
    fetcher_.reset();
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        spdlog::error("lazy layers: cannot make a socket pair for {}: {}", helper_,
                      strerror(errno));
        return nullptr;
    }
    auto f = std::make_shared<Fetcher>();
    f->sock.reset(sv[0]);
    f->child_end.reset(sv[1]);
    // A request that cannot be written within the bound (a fetcher that stopped reading) fails.
    struct timeval tv = {timeout_s_, 0};
    ::setsockopt(f->sock.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    std::promise<int> started;
    auto spawned = started.get_future();
    f->reader = std::thread([this, raw = f.get(), started = std::move(started)]() mutable {
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_adddup2(&actions, raw->child_end.get(), 0);
        posix_spawn_file_actions_adddup2(&actions, raw->child_end.get(), 1);
        std::vector<char*> argv = {const_cast<char*>(helper_.c_str()),
                                   const_cast<char*>("--serve")};
        for (const auto& p : lazy_paths_) argv.push_back(const_cast<char*>(p.c_str()));
        argv.push_back(nullptr);
        // A FUSE worker thread blocks every signal, and this thread inherits that from it: the
        // fetcher starts with none blocked and every disposition at its default.
        posix_spawnattr_t attr;
        posix_spawnattr_init(&attr);
        sigset_t none, all;
        sigemptyset(&none);
        sigfillset(&all);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &all);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        int err = posix_spawn(&raw->pid, helper_.c_str(), &actions, &attr, argv.data(), environ);
        posix_spawnattr_destroy(&attr);
        posix_spawn_file_actions_destroy(&actions);
        raw->child_end.reset();
        started.set_value(err);
        if (err == 0) serve_replies(raw);
    });
    if (int err = spawned.get()) {
        f->reader.join();
        spdlog::error("lazy layers: cannot run {}: {}", helper_, strerror(err));
        return nullptr;
    }
    fetcher_ = f;
    return f;
}

void LazyLayers::serve_replies(Fetcher* f) {
    lazy_protocol::LineReader in(f->sock.get());
    std::string line;
    int r;
    while ((r = in.next(line)) > 0) {
        auto reply = lazy_protocol::parse_reply(line);
        if (!reply) {
            if (!f->said_nonsense)
                spdlog::warn(
                    "lazy layers: {} sent a line that is no reply (further ones are "
                    "passed over unlogged): {}",
                    helper_, printable(line, 80));
            f->said_nonsense = true;
            continue;
        }
        std::lock_guard lock(mu_);
        auto it = by_id_.find(reply->id);
        if (it == by_id_.end()) continue;  // its asker gave up, or it was never asked
        auto req = it->second;
        if (!reply->ok)
            spdlog::error("lazy layer {}: fetching {} failed: {}", req->root, req->rel,
                          printable(reply->error));
        finish(*req, reply->ok);
    }
    // Its end. Marked dead first, so that once it is reaped (below) the next ask starts another.
    size_t waiting;
    bool stopping;
    {
        std::lock_guard lock(mu_);
        f->dead = true;
        stopping = f->stopping;
        waiting = by_id_.size();
        while (!by_id_.empty()) {
            auto req = by_id_.begin()->second;
            finish(*req, false);
        }
        replied_.notify_all();  // an ask that found this fetcher gone waits for this
    }
    ::kill(f->pid, SIGKILL);
    int status = 0;
    while (::waitpid(f->pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (stopping) return;
    std::string why = r == -E2BIG ? "sent a line over " + std::to_string(lazy_protocol::kMaxLine) +
                                        " bytes and was stopped"
                      : r < 0 ? std::string("cannot be read: ") + strerror(-r)
                      : WIFSIGNALED(status)
                          ? "was killed by signal " + std::to_string(WTERMSIG(status))
                          : "exited with status " + std::to_string(WEXITSTATUS(status));
    spdlog::error("lazy layers: {} (pid {}) {}; {} waiting opens fail, the next starts it again",
                  helper_, f->pid, why, waiting);
}

void LazyLayers::finish(Request& r, bool ok) {
    r.done = true;
    r.ok = ok;
    if (auto it = by_id_.find(r.id); it != by_id_.end() && it->second.get() == &r) by_id_.erase(it);
    if (auto it = by_key_.find(r.key); it != by_key_.end() && it->second.get() == &r)
        by_key_.erase(it);
    replied_.notify_all();
}

bool LazyLayers::looks_unfilled(int fd) {
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size == 0) return false;
    if (st.st_blocks == 0) return true;
    off_t hole = ::lseek(fd, 0, SEEK_HOLE);
    ::lseek(fd, 0, SEEK_SET);  // where a copy-up reads from
    return hole >= 0 && hole < st.st_size;
}

int LazyLayers::ensure_complete(LayerNo layer, const std::string& rel, int fd) {
    // Most opens find the file filled: decided by fd alone, without the mutex every open of a
    // lazy layer would otherwise queue on, nor the key built for asking.
    if (!is_lazy(layer) || !looks_unfilled(fd)) return 0;
    std::string key = std::to_string(layer) + "/" + rel;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s_);
    std::shared_ptr<Request> req;
    // Twice at most: a fetcher that ended just before the ask (its end not seen yet by its
    // reader thread) refuses the line, and the ask goes to the next one.
    for (int attempt = 0; !req; ++attempt) {
        std::shared_ptr<Fetcher> f;
        std::shared_ptr<Request> mine;
        std::string line;
        {
            std::lock_guard lock(mu_);
            // Filled since the look above (an ask of the same file just answered): nothing to ask.
            if (!looks_unfilled(fd)) return 0;
            if (auto it = by_key_.find(key); it != by_key_.end()) {
                req = it->second;  // asked already: wait for that answer
                break;
            }
            f = running_fetcher();
            if (!f) return EIO;
            mine = std::make_shared<Request>();
            mine->id = next_id_++;
            mine->key = key;
            mine->root = layer_paths_[layer - 1];
            mine->rel = rel;
            by_id_[mine->id] = mine;
            by_key_[mine->key] = mine;
            line =
                lazy_protocol::request_line(mine->id, static_cast<size_t>(lazy_index_[layer]), rel);
        }
        std::unique_lock send_lock(f->send_mu);
        if (lazy_protocol::send_line(f->sock.get(), line)) {
            req = std::move(mine);
            break;
        }
        int err = errno;
        send_lock.unlock();
        // A fetcher that does not take requests is stopped; the next ask starts another.
        ::shutdown(f->sock.get(), SHUT_RDWR);
        std::unique_lock lock(mu_);
        if (!mine->done) finish(*mine, false);
        bool ended = err == EPIPE || err == ECONNRESET;
        if (attempt == 0 && ended && replied_.wait_until(lock, deadline, [&] { return f->dead; }))
            continue;
        spdlog::error("lazy layer {}: cannot ask {} for {}: {}", mine->root, helper_, rel,
                      strerror(err));
        return EIO;
    }
    std::unique_lock lock(mu_);
    if (!replied_.wait_until(lock, deadline, [&] { return req->done; })) {
        spdlog::error("lazy layer {}: {} not fetched within {} s", req->root, rel, timeout_s_);
        finish(*req, false);
        return EIO;
    }
    return req->ok ? 0 : EIO;
}

std::unique_ptr<LazyLayers> make_lazy_layers(const MountOptions& opts) {
    if (opts.lazy_fetch.empty() || opts.lazy_layers.empty()) return nullptr;
    return std::make_unique<LazyLayers>(opts);
}

}  // namespace lamina
