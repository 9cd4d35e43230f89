// fork/exec with the output collected through temporary files, so a detaching daemon that
// inherits them cannot make us wait for it.
#include "process.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "error.h"
#include "fd.h"

namespace lamina::store {

static std::string slurp(int fd) {
    std::string s;
    ::lseek(fd, 0, SEEK_SET);
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) s.append(buf, static_cast<size_t>(n));
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    return s;
}

ProcessResult run_process(const std::vector<std::string>& argv, const std::string& cwd) {
    Fd out(::open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    Fd err(::open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (!out || !err) throw_errno("cannot create a temporary file in", "/tmp", errno);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid < 0) throw_errno("cannot fork to run", argv[0], errno);
    if (pid == 0) {
        int devnull = ::open("/dev/null", O_RDONLY);
        ::dup2(devnull, 0);
        ::dup2(out.get(), 1);
        ::dup2(err.get(), 2);
        if (!cwd.empty() && ::chdir(cwd.c_str()) != 0) _exit(126);
        ::execvp(args[0], args.data());
        _exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    ProcessResult r;
    r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    r.out = slurp(out.get());
    r.err = slurp(err.get());
    if (r.status == 127 && r.err.empty()) r.err = "cannot run " + argv[0];
    return r;
}

}  // namespace lamina::store
