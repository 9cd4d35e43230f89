// laminafs soak: seeded threads change a mount over lower layers for a given time, each in its own
// subtree checked against an in-memory model, while the daemon's descriptors, memory and CPU are
// reported over time. Exits non-zero on any divergence from the model or unbounded descriptors.
//
//   soak [--seconds N | --minutes N] [--threads N] [--seed N] [--check-every SECONDS]
//        [--report-every SECONDS] [--laminafs PATH] [--options MOUNT-OPTIONS] [--dir DIR]
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "rng.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

using lamina::Rng;

struct Config {
    double seconds = 30;
    int threads = 4;
    uint64_t seed = 1;
    double check_every = 5;
    double report_every = 5;
    std::string laminafs;
    std::string options;
    std::string dir;
};

[[noreturn]] void die(const std::string& msg) {
    fprintf(stderr, "soak: %s\n", msg.c_str());
    exit(2);
}

// --- the model: one per thread, for the subtree only that thread changes

// File data is shared by every hard link to it.
struct FileData {
    std::string content;
    std::map<std::string, std::string> xattrs;  // user.soak.* only
};

struct Entry {
    enum Kind { File, Dir, Symlink } kind = File;
    std::shared_ptr<FileData> file;             // File
    std::map<std::string, std::string> xattrs;  // Dir
    std::string target;                         // Symlink
};

using Model = std::map<std::string, Entry>;  // path relative to the subtree root

bool is_below(const std::string& rel, const std::string& dir) {
    return rel.size() > dir.size() && rel.compare(0, dir.size(), dir) == 0 &&
           rel[dir.size()] == '/';
}

std::string random_bytes(Rng& rng, size_t n) {
    std::string s(n, '\0');
    for (auto& c : s) c = static_cast<char>('a' + rng.below(26));
    return s;
}

// --- what the tool watches in the daemon

struct ProcSample {
    long fds = -1;
    long file_fds = -1;
    long rss_kib = -1;
    double cpu_s = -1;
};

ProcSample sample_process(pid_t pid) {
    ProcSample s;
    std::string base = "/proc/" + std::to_string(pid);
    if (DIR* d = opendir((base + "/fd").c_str())) {
        s.fds = s.file_fds = 0;
        while (dirent* e = readdir(d)) {
            if (e->d_name[0] == '.') continue;
            ++s.fds;
            char target[4096];
            ssize_t n = readlink((base + "/fd/" + e->d_name).c_str(), target, sizeof target - 1);
            if (n > 0 && target[0] == '/') ++s.file_fds;
        }
        closedir(d);
    }
    std::ifstream status(base + "/status");
    for (std::string line; std::getline(status, line);) {
        if (line.rfind("VmRSS:", 0) == 0) s.rss_kib = std::stol(line.substr(6));
    }
    std::ifstream stat(base + "/stat");
    std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
    size_t close_paren = text.rfind(')');
    if (close_paren != std::string::npos) {
        std::istringstream fields(text.substr(close_paren + 2));
        std::string field;
        long utime = 0, stime = 0;
        // Fields 3.. follow the command; utime and stime are fields 14 and 15.
        for (int i = 3; fields >> field && i <= 15; ++i) {
            if (i == 14) utime = std::stol(field);
            if (i == 15) stime = std::stol(field);
        }
        s.cpu_s = static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
    }
    return s;
}

// --- the daemon

class Daemon {
public:
    Daemon(const Config& cfg, std::string mount_opts, std::string mnt)
        : cfg_(cfg), opts_(std::move(mount_opts)), mnt_(std::move(mnt)) {}

    void start() {
        log_ = cfg_.dir + "/laminafs.log";
        pid_ = fork();
        if (pid_ < 0) die(std::string("fork: ") + strerror(errno));
        if (pid_ == 0) {
            int log_fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
            if (log_fd >= 0) {
                dup2(log_fd, STDOUT_FILENO);
                dup2(log_fd, STDERR_FILENO);
            }
            execl(cfg_.laminafs.c_str(), cfg_.laminafs.c_str(), "-f", "-o", opts_.c_str(),
                  mnt_.c_str(), static_cast<char*>(nullptr));
            _exit(127);
        }
        auto deadline = Clock::now() + std::chrono::seconds(30);
        while (!mounted()) {
            int status;
            if (waitpid(pid_, &status, WNOHANG) == pid_) die("laminafs exited: " + log_text());
            if (Clock::now() > deadline) die("laminafs did not mount: " + log_text());
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
    }

    // Unmounts and waits for the daemon; returns how it ended ("" when cleanly).
    std::string stop() {
        if (pid_ <= 0) return "";
        std::string cmd = "fusermount3 -u '" + mnt_ + "' 2>/dev/null || umount '" + mnt_ + "'";
        if (system(cmd.c_str()) != 0) fprintf(stderr, "soak: unmount of %s failed\n", mnt_.c_str());
        int status = 0;
        auto deadline = Clock::now() + std::chrono::seconds(30);
        while (waitpid(pid_, &status, WNOHANG) != pid_) {
            if (Clock::now() > deadline) {
                kill(pid_, SIGKILL);
                waitpid(pid_, &status, 0);
                pid_ = -1;
                return "laminafs did not exit after unmount";
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
        pid_ = -1;
        if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
        return "laminafs ended with status " + std::to_string(status) + ": " + log_text();
    }

    bool alive() {
        int status;
        return pid_ > 0 && waitpid(pid_, &status, WNOHANG) == 0;
    }

    bool mounted() const {
        std::ifstream mi("/proc/self/mountinfo");
        for (std::string line; std::getline(mi, line);) {
            std::istringstream f(line);
            std::string id, parent, dev, root, mp;
            f >> id >> parent >> dev >> root >> mp;
            if (mp == mnt_) return true;
        }
        return false;
    }

    pid_t pid() const { return pid_; }
    std::string log_text() const {
        std::ifstream in(log_);
        std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
        if (text.size() > 4000) text = "..." + text.substr(text.size() - 4000);
        return text;
    }

private:
    const Config& cfg_;
    std::string opts_;
    std::string mnt_;
    std::string log_;
    pid_t pid_ = -1;
};

// --- one worker: random operations in subtree t<N>, checked against its model

std::atomic<bool> g_failed{false};
std::atomic<uint64_t> g_ops{0};
std::mutex g_print_mu;

class Worker {
public:
    Worker(int id, uint64_t seed, std::string mnt, Model initial,
           std::map<std::string, std::string> shared)
        : id_(id),
          rng_(seed),
          root_(mnt + "/t" + std::to_string(id)),
          shared_root_(mnt + "/shared"),
          model_(std::move(initial)),
          shared_(std::move(shared)) {}

    void run(Clock::time_point until, double check_every) {
        auto every =
            std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(check_every));
        auto next_check = Clock::now() + every;
        while (Clock::now() < until && !g_failed) {
            step();
            ++ops_;
            g_ops.fetch_add(1, std::memory_order_relaxed);
            if (Clock::now() >= next_check) {
                verify("interval");
                next_check = Clock::now() + every;
            }
        }
    }

    // Compares the merged view of the subtree with the model; reports and flags any difference.
    bool verify(const char* when) {
        ++checks_;
        Model seen;
        std::string problem = scan("", seen);
        if (problem.empty()) problem = compare(seen);
        if (problem.empty()) return true;
        fail(std::string("divergence (") + when + " check): " + problem);
        return false;
    }

    void set_mount(const std::string& mnt) {
        root_ = mnt + "/t" + std::to_string(id_);
        shared_root_ = mnt + "/shared";
    }
    uint64_t ops() const { return ops_; }
    uint64_t checks() const { return checks_; }

private:
    void fail(const std::string& what) {
        std::lock_guard lock(g_print_mu);
        fprintf(stderr, "soak: thread %d after %llu ops: %s\n", id_,
                static_cast<unsigned long long>(ops_), what.c_str());
        if (!log_.empty()) {
            fprintf(stderr, "soak: thread %d's last operations:\n", id_);
            for (const auto& l : log_) fprintf(stderr, "  %s\n", l.c_str());
        }
        g_failed = true;
    }

    void note(const std::string& op) {
        log_.push_back(op);
        if (log_.size() > 12) log_.erase(log_.begin());
    }

    // A syscall result the model did not expect.
    void unexpected(const std::string& op, int err) {
        fail(op + ": unexpected " + (err ? strerror(err) : "success"));
    }

    std::string abs(const std::string& rel) const {
        return rel.empty() ? root_ : root_ + "/" + rel;
    }

    // A random existing entry of the wanted kinds, or "" with ok=false.
    const std::string* pick(unsigned kinds) {
        std::vector<const std::string*> matches;
        for (const auto& [rel, e] : model_) {
            if (kinds & (1u << e.kind)) matches.push_back(&rel);
        }
        if (matches.empty()) return nullptr;
        return matches[rng_.below(matches.size())];
    }
    std::string pick_dir() {
        // The subtree root ("") is always a directory.
        if (rng_.chance(20)) return "";
        const std::string* d = pick(1u << Entry::Dir);
        return d ? *d : "";
    }
    std::string new_name(const std::string& dir) {
        static const char* stems[] = {"f", "d", "n", "x"};
        std::string name;
        do {
            name = std::string(stems[rng_.below(4)]) + std::to_string(rng_.below(1000));
            name = dir.empty() ? name : dir + "/" + name;
        } while (model_.count(name));
        return name;
    }

    void step() {
        unsigned roll = static_cast<unsigned>(rng_.below(100));
        bool crowded = model_.size() > 150;
        if (roll < 5) return read_shared();
        if (roll < 18 && !crowded) return op_create();
        if (roll < 33) return op_write();
        if (roll < 43) return op_rename();
        if (roll < 49 && !crowded) return op_link();
        if (roll < 62) return op_unlink();
        if (roll < 69 && !crowded) return op_mkdir();
        if (roll < 76) return op_rmdir();
        if (roll < 86) return op_setxattr();
        if (roll < 90) return op_removexattr();
        if (roll < 94 && !crowded) return op_symlink();
        return op_truncate();
    }

    void read_shared() {
        if (shared_.empty()) return;
        auto it = shared_.begin();
        std::advance(it, rng_.below(shared_.size()));
        std::string got;
        int err = read_whole(shared_root_ + "/" + it->first, got);
        if (err || got != it->second) fail("shared lower file " + it->first + " reads wrong");
    }

    static int read_whole(const std::string& path, std::string& out) {
        int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) return errno;
        out.clear();
        char buf[65536];
        for (;;) {
            ssize_t n = ::read(fd, buf, sizeof buf);
            if (n < 0) {
                int err = errno;
                ::close(fd);
                return err;
            }
            if (n == 0) break;
            out.append(buf, static_cast<size_t>(n));
        }
        ::close(fd);
        return 0;
    }

    void op_create() {
        std::string rel = new_name(pick_dir());
        std::string data =
            random_bytes(rng_, rng_.below(3) == 0 ? rng_.below(70000) : rng_.below(64));
        note("create " + rel + " (" + std::to_string(data.size()) + " bytes)");
        int fd = ::open(abs(rel).c_str(), O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) return unexpected("create " + rel, errno);
        bool ok = ::write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size());
        int err = errno;
        ::close(fd);
        if (!ok) return unexpected("write " + rel, err);
        auto file = std::make_shared<FileData>();
        file->content = std::move(data);
        model_[rel] = Entry{Entry::File, file, {}, {}};
    }

    // Writes into a file: a lower one is copied up first.
    void op_write() {
        const std::string* p = pick(1u << Entry::File);
        if (!p) return;
        std::string rel = *p;
        FileData& f = *model_[rel].file;
        size_t off = rng_.below(f.content.size() + 1);
        std::string data = random_bytes(rng_, 1 + rng_.below(rng_.chance(10) ? 20000 : 200));
        note("write " + rel + " @" + std::to_string(off) + " +" + std::to_string(data.size()));
        int fd = ::open(abs(rel).c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0) return unexpected("open for write " + rel, errno);
        ssize_t n = ::pwrite(fd, data.data(), data.size(), static_cast<off_t>(off));
        int err = errno;
        ::close(fd);
        if (n != static_cast<ssize_t>(data.size())) return unexpected("pwrite " + rel, err);
        if (f.content.size() < off + data.size()) f.content.resize(off + data.size());
        f.content.replace(off, data.size(), data);
    }

    void op_truncate() {
        const std::string* p = pick(1u << Entry::File);
        if (!p) return;
        std::string rel = *p;
        FileData& f = *model_[rel].file;
        size_t size = rng_.below(f.content.size() + 100);
        note("truncate " + rel + " to " + std::to_string(size));
        if (::truncate(abs(rel).c_str(), static_cast<off_t>(size)) != 0)
            return unexpected("truncate " + rel, errno);
        f.content.resize(size, '\0');
    }

    void op_rename() {
        const std::string* p =
            pick((1u << Entry::File) | (1u << Entry::Dir) | (1u << Entry::Symlink));
        if (!p) return;
        std::string src = *p;
        Entry::Kind kind = model_[src].kind;
        std::string dir = pick_dir();
        if (dir == src || is_below(dir, src)) return;  // into itself: EINVAL, not interesting
        std::string dst;
        // A file sometimes replaces another file.
        const std::string* victim = rng_.chance(30) ? pick(1u << Entry::File) : nullptr;
        // Renaming one name of a file onto another name of it changes nothing: not modelled.
        if (kind != Entry::Dir && victim && *victim != src &&
            (kind != Entry::File || model_[*victim].file != model_[src].file)) {
            dst = *victim;
        } else {
            dst = new_name(dir);
        }
        note("rename " + src + " -> " + dst);
        if (::rename(abs(src).c_str(), abs(dst).c_str()) != 0)
            return unexpected("rename " + src + " -> " + dst, errno);
        Model moved;
        for (auto it = model_.begin(); it != model_.end();) {
            if (it->first == src || is_below(it->first, src)) {
                moved[dst + it->first.substr(src.size())] = std::move(it->second);
                it = model_.erase(it);
            } else {
                ++it;
            }
        }
        model_.erase(dst);
        for (auto& [rel, e] : moved) model_[rel] = std::move(e);
    }

    void op_link() {
        const std::string* p = pick(1u << Entry::File);
        if (!p) return;
        std::string src = *p;
        std::string dst = new_name(pick_dir());
        note("link " + src + " -> " + dst);
        if (::link(abs(src).c_str(), abs(dst).c_str()) != 0)
            return unexpected("link " + src + " -> " + dst, errno);
        model_[dst] = model_[src];
    }

    void op_unlink() {
        const std::string* p = pick((1u << Entry::File) | (1u << Entry::Symlink));
        if (!p) return;
        std::string rel = *p;
        note("unlink " + rel);
        if (::unlink(abs(rel).c_str()) != 0) return unexpected("unlink " + rel, errno);
        model_.erase(rel);
    }

    void op_mkdir() {
        std::string rel = new_name(pick_dir());
        note("mkdir " + rel);
        if (::mkdir(abs(rel).c_str(), 0755) != 0) return unexpected("mkdir " + rel, errno);
        model_[rel] = Entry{Entry::Dir, nullptr, {}, {}};
    }

    void op_rmdir() {
        const std::string* p = pick(1u << Entry::Dir);
        if (!p) return;
        std::string rel = *p;
        bool empty = true;
        for (const auto& [other, e] : model_) {
            if (is_below(other, rel)) {
                empty = false;
                break;
            }
        }
        note("rmdir " + rel + (empty ? "" : " (not empty)"));
        int rc = ::rmdir(abs(rel).c_str());
        if (!empty) {
            if (rc == 0 || (errno != ENOTEMPTY && errno != EEXIST))
                return unexpected("rmdir of non-empty " + rel, rc == 0 ? 0 : errno);
            return;
        }
        if (rc != 0) return unexpected("rmdir " + rel, errno);
        model_.erase(rel);
    }

    std::map<std::string, std::string>& xattrs_of(Entry& e) {
        return e.kind == Entry::File ? e.file->xattrs : e.xattrs;
    }

    // Changing an xattr of a lower entry copies it up.
    void op_setxattr() {
        const std::string* p = pick((1u << Entry::File) | (1u << Entry::Dir));
        if (!p) return;
        std::string rel = *p;
        std::string name = "user.soak." + std::to_string(rng_.below(4));
        std::string value = random_bytes(rng_, 1 + rng_.below(40));
        note("setxattr " + rel + " " + name);
        if (lsetxattr(abs(rel).c_str(), name.c_str(), value.data(), value.size(), 0) != 0)
            return unexpected("setxattr " + rel + " " + name, errno);
        xattrs_of(model_[rel])[name] = value;
    }

    void op_removexattr() {
        const std::string* p = pick((1u << Entry::File) | (1u << Entry::Dir));
        if (!p) return;
        std::string rel = *p;
        std::string name = "user.soak." + std::to_string(rng_.below(4));
        auto& xattrs = xattrs_of(model_[rel]);
        bool has = xattrs.count(name) > 0;
        note("removexattr " + rel + " " + name);
        int rc = lremovexattr(abs(rel).c_str(), name.c_str());
        if (has ? rc != 0 : (rc == 0 || errno != ENODATA))
            return unexpected("removexattr " + rel + " " + name, rc == 0 ? 0 : errno);
        xattrs.erase(name);
    }

    void op_symlink() {
        std::string rel = new_name(pick_dir());
        std::string target = "target-" + random_bytes(rng_, 1 + rng_.below(30));
        note("symlink " + rel);
        if (::symlink(target.c_str(), abs(rel).c_str()) != 0)
            return unexpected("symlink " + rel, errno);
        model_[rel] = Entry{Entry::Symlink, nullptr, {}, target};
    }

    static std::map<std::string, std::string> read_xattrs(const std::string& path) {
        std::map<std::string, std::string> out;
        char names[4096];
        ssize_t n = llistxattr(path.c_str(), names, sizeof names);
        for (ssize_t i = 0; i < n; i += static_cast<ssize_t>(strlen(names + i)) + 1) {
            std::string name = names + i;
            if (name.rfind("user.soak.", 0) != 0) continue;
            char value[256];
            ssize_t len = lgetxattr(path.c_str(), name.c_str(), value, sizeof value);
            if (len >= 0) out[name] = std::string(value, static_cast<size_t>(len));
        }
        return out;
    }

    // Reads the subtree through the mount into `seen`.
    std::string scan(const std::string& rel, Model& seen) {
        DIR* d = opendir(abs(rel).c_str());
        if (!d) return "opendir " + abs(rel) + ": " + strerror(errno);
        std::vector<std::string> names;
        while (dirent* e = readdir(d)) {
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) names.push_back(e->d_name);
        }
        closedir(d);
        for (const auto& name : names) {
            std::string child = rel.empty() ? name : rel + "/" + name;
            if (seen.count(child)) return "readdir lists " + child + " twice";
            struct stat st;
            if (lstat(abs(child).c_str(), &st) != 0)
                return "lstat " + child + " (listed): " + strerror(errno);
            Entry e;
            if (S_ISDIR(st.st_mode)) {
                e.kind = Entry::Dir;
                e.xattrs = read_xattrs(abs(child));
                seen[child] = e;
                if (auto err = scan(child, seen); !err.empty()) return err;
            } else if (S_ISLNK(st.st_mode)) {
                e.kind = Entry::Symlink;
                char target[4096];
                ssize_t n = readlink(abs(child).c_str(), target, sizeof target);
                if (n < 0) return "readlink " + child + ": " + strerror(errno);
                e.target.assign(target, static_cast<size_t>(n));
                seen[child] = e;
            } else if (S_ISREG(st.st_mode)) {
                e.kind = Entry::File;
                e.file = std::make_shared<FileData>();
                if (int err = read_whole(abs(child), e.file->content))
                    return "read " + child + ": " + strerror(err);
                if (static_cast<size_t>(st.st_size) != e.file->content.size())
                    return "size of " + child + " is " + std::to_string(st.st_size) + ", read " +
                           std::to_string(e.file->content.size());
                e.file->xattrs = read_xattrs(abs(child));
                seen[child] = e;
            } else {
                return "unexpected file type at " + child;
            }
        }
        return "";
    }

    std::string compare(const Model& seen) {
        static const char* kinds[] = {"file", "directory", "symlink"};
        for (const auto& [rel, want] : model_) {
            auto it = seen.find(rel);
            if (it == seen.end()) return rel + " is missing";
            const Entry& got = it->second;
            if (got.kind != want.kind)
                return rel + " is a " + kinds[got.kind] + ", expected a " + kinds[want.kind];
            if (want.kind == Entry::File) {
                if (got.file->content != want.file->content)
                    return rel + " has other content (" + std::to_string(got.file->content.size()) +
                           " bytes, expected " + std::to_string(want.file->content.size()) + ")";
                if (got.file->xattrs != want.file->xattrs) return rel + " has other xattrs";
            } else if (want.kind == Entry::Dir) {
                if (got.xattrs != want.xattrs) return rel + " has other xattrs";
            } else if (got.target != want.target) {
                return rel + " points elsewhere";
            }
        }
        for (const auto& [rel, got] : seen) {
            if (!model_.count(rel)) return rel + " exists but should not";
        }
        return "";
    }

    int id_;
    Rng rng_;
    std::string root_;
    std::string shared_root_;
    Model model_;
    std::map<std::string, std::string> shared_;
    std::vector<std::string> log_;
    uint64_t ops_ = 0;
    uint64_t checks_ = 0;
};

// --- the lower layers: each thread's subtree starts with merged lower content it copies up

void write_layer_file(const std::string& path, const std::string& data) {
    fs::create_directories(fs::path(path).parent_path());
    std::ofstream(path, std::ios::binary) << data;
}

// Writes t<id>/ into two lower layers (directories merge, the top layer's files win) and the
// matching model.
Model make_lower_subtree(const std::string& l1, const std::string& l2, int id, Rng& rng) {
    Model model;
    std::string sub = "t" + std::to_string(id);
    auto add_dir = [&](const std::string& rel) { model[rel] = Entry{Entry::Dir, nullptr, {}, {}}; };
    auto add_file = [&](const std::string& layer, const std::string& rel, size_t size) {
        std::string data = random_bytes(rng, size);
        write_layer_file(layer + "/" + sub + "/" + rel, data);
        auto f = std::make_shared<FileData>();
        f->content = data;
        model[rel] = Entry{Entry::File, f, {}, {}};
    };
    for (const char* d : {"a", "a/b", "c"}) {
        fs::create_directories(l2 + "/" + sub + "/" + d);
        add_dir(d);
    }
    fs::create_directories(l1 + "/" + sub + "/a");
    fs::create_directories(l1 + "/" + sub + "/e/f");
    add_dir("e");
    add_dir("e/f");
    for (int i = 0; i < 6; ++i) add_file(l2, "a/low" + std::to_string(i), rng.below(5000));
    for (int i = 0; i < 4; ++i) add_file(l2, "a/b/deep" + std::to_string(i), rng.below(300));
    add_file(l2, "c/big", 200000);
    // The same names in the top layer hide the bottom ones.
    for (int i = 0; i < 3; ++i) add_file(l1, "a/low" + std::to_string(i), rng.below(100));
    for (int i = 0; i < 4; ++i) add_file(l1, "e/f/top" + std::to_string(i), rng.below(2000));
    add_file(l1, "top", 10);
    std::string link_target = "a/low1";
    fs::create_symlink(link_target, l1 + "/" + sub + "/lnk");
    model["lnk"] = Entry{Entry::Symlink, nullptr, {}, link_target};
    fs::create_directories(l1 + "/" + sub);
    return model;
}

std::map<std::string, std::string> make_shared_lower(const std::string& l2, Rng& rng) {
    std::map<std::string, std::string> shared;
    for (int i = 0; i < 20; ++i) {
        std::string name = "s" + std::to_string(i);
        shared[name] = random_bytes(rng, rng.below(30000));
        write_layer_file(l2 + "/shared/" + name, shared[name]);
    }
    return shared;
}

void print_sample(const char* when, double t, pid_t pid) {
    ProcSample s = sample_process(pid);
    std::lock_guard lock(g_print_mu);
    printf("soak: %-8s t=%6.1fs ops=%-9llu fds=%ld file_fds=%ld rss_kib=%ld cpu_s=%.1f\n", when, t,
           static_cast<unsigned long long>(g_ops.load()), s.fds, s.file_fds, s.rss_kib, s.cpu_s);
    fflush(stdout);
}

Config parse_args(int argc, char** argv) {
    Config cfg;
    if (const char* bin = getenv("LAMINAFS_BIN")) cfg.laminafs = bin;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) die(a + " needs a value");
            return argv[++i];
        };
        if (a == "--seconds") {
            cfg.seconds = std::stod(value());
        } else if (a == "--minutes") {
            cfg.seconds = std::stod(value()) * 60;
        } else if (a == "--threads") {
            cfg.threads = std::stoi(value());
        } else if (a == "--seed") {
            cfg.seed = std::stoull(value());
        } else if (a == "--check-every") {
            cfg.check_every = std::stod(value());
        } else if (a == "--report-every") {
            cfg.report_every = std::stod(value());
        } else if (a == "--laminafs") {
            cfg.laminafs = value();
        } else if (a == "--options") {
            cfg.options = value();
        } else if (a == "--dir") {
            cfg.dir = value();
        } else if (a == "-h" || a == "--help") {
            printf(
                "usage: soak [--seconds N | --minutes N] [--threads N] [--seed N]\n"
                "            [--check-every S] [--report-every S] [--laminafs PATH]\n"
                "            [--options MOUNT-OPTIONS] [--dir DIR]\n");
            exit(0);
        } else {
            die("unknown argument " + a);
        }
    }
    if (const char* s = getenv("LAMINA_SOAK_SECONDS"); s && *s) cfg.seconds = std::stod(s);
    if (cfg.laminafs.empty()) die("no laminafs binary: pass --laminafs or set LAMINAFS_BIN");
    if (cfg.threads < 1 || cfg.threads > 64) die("--threads must be 1..64");
    return cfg;
}

}  // namespace

int main(int argc, char** argv) {
    Config cfg = parse_args(argc, argv);
    if (geteuid() != 0 || access("/dev/fuse", R_OK | W_OK) != 0) {
        printf("soak: needs root and /dev/fuse; skipped\n");
        return 77;  // meson's "skipped"
    }
    bool own_dir = cfg.dir.empty();
    if (own_dir) {
        const char* tmp = getenv("TMPDIR");
        std::string templ = std::string(tmp && *tmp ? tmp : "/tmp") + "/lamina-soak.XXXXXX";
        if (!mkdtemp(templ.data())) die("mkdtemp: " + std::string(strerror(errno)));
        cfg.dir = templ;
    }
    std::string l1 = cfg.dir + "/l1", l2 = cfg.dir + "/l2", upper = cfg.dir + "/upper",
                work = cfg.dir + "/work", mnt = cfg.dir + "/mnt";
    for (const auto& d : {l1, l2, upper, work, mnt}) fs::create_directories(d);

    printf("soak: seed=%llu threads=%d seconds=%.0f dir=%s\n",
           static_cast<unsigned long long>(cfg.seed), cfg.threads, cfg.seconds, cfg.dir.c_str());
    Rng setup(cfg.seed);
    auto shared = make_shared_lower(l2, setup);
    std::vector<std::unique_ptr<Worker>> workers;
    for (int t = 0; t < cfg.threads; ++t) {
        Model model = make_lower_subtree(l1, l2, t, setup);
        workers.push_back(std::make_unique<Worker>(t, cfg.seed * 1000003 + static_cast<uint64_t>(t),
                                                   mnt, std::move(model), shared));
    }

    std::string opts = "lowerdir=" + l1 + ":" + l2 + ",upperdir=" + upper + ",workdir=" + work;
    if (!cfg.options.empty()) opts += "," + cfg.options;
    Daemon daemon(cfg, opts, mnt);
    daemon.start();

    auto start = Clock::now();
    auto elapsed = [&] { return std::chrono::duration<double>(Clock::now() - start).count(); };
    ProcSample base = sample_process(daemon.pid());
    print_sample("start", 0, daemon.pid());

    auto until = start + std::chrono::duration_cast<Clock::duration>(
                             std::chrono::duration<double>(cfg.seconds));
    std::vector<std::thread> threads;
    for (auto& w : workers)
        threads.emplace_back([&w, until, &cfg] { w->run(until, cfg.check_every); });

    std::mutex report_mu;
    std::condition_variable report_cv;
    bool done = false;
    std::thread reporter([&] {
        std::unique_lock lock(report_mu);
        while (!report_cv.wait_for(lock, std::chrono::duration<double>(cfg.report_every),
                                   [&] { return done; })) {
            print_sample("running", elapsed(), daemon.pid());
            if (!daemon.alive()) {
                fprintf(stderr, "soak: laminafs died: %s\n", daemon.log_text().c_str());
                g_failed = true;
                return;
            }
        }
    });
    for (auto& t : threads) t.join();
    {
        std::lock_guard lock(report_mu);
        done = true;
    }
    report_cv.notify_all();
    reporter.join();

    bool ok = !g_failed;
    if (ok) {
        for (auto& w : workers) ok = w->verify("final") && ok;
    }
    // The kernel forgets what it can; the daemon must then hold no more descriptors than at start.
    sync();
    std::ofstream("/proc/sys/vm/drop_caches") << "2";
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    ProcSample end = sample_process(daemon.pid());
    print_sample("end", elapsed(), daemon.pid());
    if (end.file_fds > base.file_fds + 2) {
        fprintf(stderr, "soak: descriptors on files grew from %ld to %ld\n", base.file_fds,
                end.file_fds);
        ok = false;
    }
    if (std::string how = daemon.stop(); !how.empty()) {
        fprintf(stderr, "soak: %s\n", how.c_str());
        ok = false;
    }
    // What was written must still be there after a remount.
    if (ok) {
        Daemon again(cfg, opts, mnt);
        again.start();
        for (auto& w : workers) ok = w->verify("after remount") && ok;
        if (std::string how = again.stop(); !how.empty()) {
            fprintf(stderr, "soak: %s\n", how.c_str());
            ok = false;
        }
    }
    uint64_t total = 0, checks = 0;
    for (auto& w : workers) {
        total += w->ops();
        checks += w->checks();
    }
    printf("soak: %s: %llu operations and %llu model checks in %.1f s by %d threads, seed %llu\n",
           ok ? "clean" : "FAILED", static_cast<unsigned long long>(total),
           static_cast<unsigned long long>(checks), elapsed(), cfg.threads,
           static_cast<unsigned long long>(cfg.seed));
    if (own_dir && ok) fs::remove_all(cfg.dir);
    return ok ? 0 : 1;
}
