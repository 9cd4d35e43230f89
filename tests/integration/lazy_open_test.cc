// laminafs's side of lazy layers (fs/lazy.cc), with a scripted fetcher in place of
// lamina-lazy-fetch --serve: the first open of a file in a lazy lower asks the fetcher and reads
// only once it answered OK; a failure or silence gives EIO and a log line within the bound; files
// of other layers and files already complete are never asked for, stat never is; opens of one
// file at once ask once; a fetcher that dies or talks nonsense is replaced on the next open, and
// it goes when laminafs does.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "fixture.h"

namespace lamina::test {
namespace {

// A fetcher (common/lazy_protocol.h) that logs its start ("start PID") to starts.log and each
// request (LAYER PATH) to calls.log, then does what the file named by the path's basename says
// in behaviour/: "fill" writes the real content into the placeholder and answers OK, "slowfill"
// the same after half a second, "fail" answers ERR, "hang" never answers, "garble" sends lines
// that are no reply or answer no request before its ERR, "flood" a line of 20000 bytes; a file
// without instructions is complete already (OK). Each request is served in the background, as
// the real fetcher serves several at once.
void write_helper(const std::string& dir) {
    write_file(dir + "/helper",
               "#!/bin/bash\n"
               "[ \"$1\" = --serve ] || exit 2\n"
               "echo \"start $$\" >> " +
                   dir +
                   "/starts.log\n"
                   "layers=(\"${@:2}\")\n"
                   "while read -r id idx path; do\n"
                   "(\n"
                   "layer=${layers[$idx]}\n"
                   "echo \"$layer $path\" >> " +
                   dir +
                   "/calls.log\n"
                   "b=$(basename \"$path\")\n"
                   "case \"$(cat " +
                   dir +
                   "/behaviour/$b 2>/dev/null)\" in\n"
                   "fill) printf 'real %s\\n' \"$b\" > \"$layer/$path\"; echo \"$id OK\" ;;\n"
                   "slowfill) sleep 0.5; printf 'real %s\\n' \"$b\" > \"$layer/$path\"; "
                   "echo \"$id OK\" ;;\n"
                   "fail) echo \"$id ERR no such luck\" ;;\n"
                   "hang) exec >/dev/null 2>&1; sleep 5 ;;\n"
                   "garble) echo 'no reply at all'; echo \"$((id + 1000)) OK\"; echo \"$id ERR "
                   "garbled\" ;;\n"
                   "flood) head -c 20000 /dev/zero | tr '\\0' x; echo ;;\n"
                   "*) echo \"$id OK\" ;;\n"
                   "esac\n"
                   ") &\n"
                   "done\n",
               0755);
}

std::pair<std::string, int> read_through(const std::string& path) {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return {"", errno};
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    int err = n < 0 ? errno : 0;
    ::close(fd);
    return {n > 0 ? std::string(buf, static_cast<size_t>(n)) : "", err};
}

size_t lines(const std::string& text) {
    return static_cast<size_t>(std::count(text.begin(), text.end(), '\n'));
}

// Gone or a zombie: what remains of a process whose parent died.
bool process_gone(pid_t pid) {
    std::ifstream status("/proc/" + std::to_string(pid) + "/status");
    std::string line;
    while (std::getline(status, line))
        if (line.starts_with("State:")) return line.find('Z') != std::string::npos;
    return true;
}

// Each file's name and behaviour.
using Files = std::vector<std::pair<std::string, std::string>>;

struct LazyMount {
    TempDir dir{"lazy-open"};
    std::string top = dir.path() + "/top", lazy = dir.path() + "/lazy", mnt = dir.path() + "/mnt";

    // Placeholders (holes of the right size, as a lazy pull leaves them: a reader must never
    // see them) of the named files, each with its behaviour.
    explicit LazyMount(const Files& files) {
        for (const auto& d : {top, lazy, mnt, dir.path() + "/behaviour", dir.path() + "/upper",
                              dir.path() + "/work"})
            make_dirs(d);
        write_file(top + "/plain", "plain\n");
        for (const auto& [name, behaviour] : files) {
            write_file(lazy + "/" + name, "");
            EXPECT_EQ(::truncate((lazy + "/" + name).c_str(),
                                 static_cast<off_t>(strlen("real \n") + name.size())),
                      0);
            write_file(dir.path() + "/behaviour/" + name, behaviour);
        }
        write_helper(dir.path());
    }
    std::string options(const std::string& helper) const {
        return "lowerdir=" + top + ":" + lazy + ",upperdir=" + dir.path() +
               "/upper,workdir=" + dir.path() + "/work,lazy_fetch=" + helper +
               ",lazy_layers=2,lazy_timeout=1";
    }
    std::string text_of(const std::string& name) const {
        std::string path = dir.path() + "/" + name;
        return access(path.c_str(), F_OK) == 0 ? read_file(path) : "";
    }
    std::string calls() const { return text_of("calls.log"); }
    std::vector<pid_t> starts() const {
        std::vector<pid_t> pids;
        std::istringstream in(text_of("starts.log"));
        for (std::string word; in >> word;)
            if (word != "start") pids.push_back(static_cast<pid_t>(std::stol(word)));
        return pids;
    }
};

TEST(LazyOpen, first_open_asks_the_fetcher_and_failures_are_eio_within_the_bound) {
    REQUIRE_FUSE();
    LazyMount m(Files{{"good", "fill"}, {"bad", "fail"}, {"slow", "hang"}, {"later", "fill"}});
    // A file of holes the fetcher finds complete (a sparse file as the image has it).
    write_file(m.lazy + "/new\nline\\", "");
    ASSERT_EQ(::truncate((m.lazy + "/new\nline\\").c_str(), 9), 0);
    const std::string& mnt = m.mnt;
    ForegroundLaminafs fs(m.options(m.dir.path() + "/helper"), mnt, m.dir.path() + "/laminafs.log");
    ASSERT_EQ(fs.start(), "");

    // stat and listing never fetch; a file of a layer that is not lazy never asks; the fetcher
    // is not even started.
    struct stat st;
    ASSERT_EQ(::stat((mnt + "/good").c_str(), &st), 0);
    EXPECT_EQ(st.st_size, 10);
    EXPECT_EQ(read_through(mnt + "/plain").first, "plain\n");
    EXPECT_EQ(m.calls(), "");
    EXPECT_TRUE(m.starts().empty());

    // The first open asks the fetcher, started with the lazy layer's path, for the file; then
    // the content.
    EXPECT_EQ(read_through(mnt + "/good"), std::make_pair(std::string("real good\n"), 0));
    EXPECT_EQ(m.calls(), m.lazy + " good\n");
    // Known complete from then on: not asked again.
    EXPECT_EQ(read_through(mnt + "/good").first, "real good\n");
    EXPECT_EQ(lines(m.calls()), 1u);

    // A fetch that fails: EIO, and a line in the daemon's log; the next open asks again.
    EXPECT_EQ(read_through(mnt + "/bad").second, EIO);
    EXPECT_EQ(read_through(mnt + "/bad").second, EIO);
    EXPECT_EQ(lines(m.calls()), 3u);
    EXPECT_NE(fs.log_text().find("fetching bad failed: no such luck"), std::string::npos)
        << fs.log_text();

    // A fetcher that does not answer: EIO after the bound (1 s), not a hang.
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(read_through(mnt + "/slow").second, EIO);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
    EXPECT_NE(fs.log_text().find("slow not fetched within 1 s"), std::string::npos)
        << fs.log_text();

    // A name with a newline (and a backslash) goes on one line, escaped. The file looks
    // unfilled (all holes), so each open asks; the fetcher's OK says its zeros are its content.
    EXPECT_EQ(read_through(mnt + "/new\nline\\").first, std::string(9, '\0'));
    EXPECT_NE(m.calls().find(m.lazy + " new\\nline\\\\\n"), std::string::npos) << m.calls();

    // Copy-up of a lazy file asks first too; the upper copy holds the fetched bytes.
    ASSERT_EQ(::chmod((mnt + "/later").c_str(), 0600), 0) << strerror(errno);
    EXPECT_EQ(read_file(m.dir.path() + "/upper/later"), "real later\n");
    EXPECT_NE(m.calls().find(m.lazy + " later\n"), std::string::npos) << m.calls();
    // All of it by one fetcher.
    EXPECT_EQ(m.starts().size(), 1u);
    fs.stop();
}

TEST(LazyOpen, opens_of_one_file_at_once_ask_once) {
    REQUIRE_FUSE();
    LazyMount m(Files{{"shared", "slowfill"}});
    ForegroundLaminafs fs(m.options(m.dir.path() + "/helper"), m.mnt,
                          m.dir.path() + "/laminafs.log");
    ASSERT_EQ(fs.start(), "");
    std::vector<std::pair<std::string, int>> got(4);
    std::vector<std::thread> readers;
    for (auto& g : got) readers.emplace_back([&] { g = read_through(m.mnt + "/shared"); });
    for (auto& t : readers) t.join();
    for (const auto& g : got) EXPECT_EQ(g, std::make_pair(std::string("real shared\n"), 0));
    EXPECT_EQ(m.calls(), m.lazy + " shared\n");
    fs.stop();
}

TEST(LazyOpen, a_fetcher_that_dies_or_talks_nonsense_is_replaced_on_the_next_open) {
    REQUIRE_FUSE();
    LazyMount m(Files{{"one", "fill"},
                      {"two", "fill"},
                      {"three", "fill"},
                      {"garbled", "garble"},
                      {"flooded", "flood"}});
    ForegroundLaminafs fs(m.options(m.dir.path() + "/helper"), m.mnt,
                          m.dir.path() + "/laminafs.log");
    ASSERT_EQ(fs.start(), "");
    EXPECT_EQ(read_through(m.mnt + "/one").first, "real one\n");
    auto pids = m.starts();
    ASSERT_EQ(pids.size(), 1u);

    // Killed: one log line, and the next open starts another that answers.
    ASSERT_EQ(::kill(pids[0], SIGKILL), 0);
    EXPECT_TRUE(
        poll_until([&] { return fs.log_text().find("killed by signal 9") != std::string::npos; },
                   std::chrono::seconds(5)))
        << fs.log_text();
    EXPECT_EQ(read_through(m.mnt + "/two"), std::make_pair(std::string("real two\n"), 0));
    EXPECT_EQ(m.starts().size(), 2u);

    // Lines that are no reply, or answer nothing asked, are passed over: the answer counts.
    EXPECT_EQ(read_through(m.mnt + "/garbled").second, EIO);
    EXPECT_NE(fs.log_text().find("fetching garbled failed: garbled"), std::string::npos)
        << fs.log_text();
    EXPECT_EQ(m.starts().size(), 2u);

    // A line without end: that fetcher is stopped, the open fails at once, the next recovers.
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(read_through(m.mnt + "/flooded").second, EIO);
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(900));
    // (The line comes once that fetcher is reaped, after the open was failed.)
    EXPECT_TRUE(
        poll_until([&] { return fs.log_text().find("sent a line over") != std::string::npos; },
                   std::chrono::seconds(5)))
        << fs.log_text();
    EXPECT_EQ(read_through(m.mnt + "/three"), std::make_pair(std::string("real three\n"), 0));
    EXPECT_EQ(m.starts().size(), 3u);
    EXPECT_EQ(fs.exit_report(), "");

    // laminafs killed: its fetcher goes too (end of its input).
    pid_t last = m.starts().back();
    fs.kill_now();
    EXPECT_TRUE(poll_until([&] { return process_gone(last); }, std::chrono::seconds(5)));
}

TEST(LazyOpen, a_fetcher_that_cannot_start_gives_eio_and_a_log_line) {
    REQUIRE_FUSE();
    LazyMount m(Files{{"good", "fill"}});
    ForegroundLaminafs fs(m.options(m.dir.path() + "/no-such-helper"), m.mnt,
                          m.dir.path() + "/laminafs.log");
    ASSERT_EQ(fs.start(), "");
    EXPECT_EQ(read_through(m.mnt + "/good").second, EIO);
    EXPECT_EQ(read_through(m.mnt + "/good").second, EIO);
    EXPECT_NE(fs.log_text().find("cannot run " + m.dir.path() + "/no-such-helper"),
              std::string::npos)
        << fs.log_text();
    EXPECT_EQ(read_through(m.mnt + "/plain").first, "plain\n");
    fs.stop();
}

}  // namespace
}  // namespace lamina::test
