// Finding lamina's programs: beside the running binary, else on PATH.
#include "program_path.h"

#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

namespace lamina {

std::string self_exe_dir() {
    char buf[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return "";
    std::string p(buf, static_cast<size_t>(n));
    auto slash = p.rfind('/');
    return slash == std::string::npos ? "." : p.substr(0, slash);
}

std::string find_in_path(const std::string& name) {
    const char* path = getenv("PATH");
    std::string p = path ? path : "/usr/local/bin:/usr/bin:/bin";
    size_t pos = 0;
    while (pos <= p.size()) {
        size_t colon = p.find(':', pos);
        if (colon == std::string::npos) colon = p.size();
        std::string cand = p.substr(pos, colon - pos) + "/" + name;
        if (colon > pos && ::access(cand.c_str(), X_OK) == 0) return cand;
        pos = colon + 1;
    }
    return "";
}

std::string find_program(const char* env, const std::string& beside, const std::string& name) {
    if (const char* e = env ? getenv(env) : nullptr; e && *e) return e;
    if (std::string dir = self_exe_dir(); !dir.empty()) {
        std::string path = dir + "/" + beside;
        if (::access(path.c_str(), X_OK) == 0) return path;
    }
    return find_in_path(name);
}

}  // namespace lamina
