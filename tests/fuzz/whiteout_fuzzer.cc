// libFuzzer target: the whiteout, private-xattr and redirect decoders, in memory and from real
// xattrs on a scratch file.
#include <sys/xattr.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "whiteout.h"

namespace {

// A file and a directory the decoders read their xattrs from, made once per process.
struct Scratch {
    std::string dir;
    std::string file;
    Scratch() {
        char templ[] = "/tmp/lamina-fuzz-whiteout.XXXXXX";
        if (!mkdtemp(templ)) abort();
        dir = templ;
        file = dir + "/f";
        FILE* f = fopen(file.c_str(), "w");
        if (!f) abort();
        fclose(f);
    }
    ~Scratch() {
        unlink(file.c_str());
        rmdir(dir.c_str());
    }
};

// A decoded redirect never leaves the layer: no "." or ".." component, no empty component, no
// leading '/', no NUL.
void check_lower_path(const std::string& path) {
    if (path.find('\0') != std::string::npos) abort();
    if (path.empty()) return;
    if (path.front() == '/' || path.back() == '/') abort();
    size_t at = 0;
    while (at <= path.size()) {
        size_t slash = path.find('/', at);
        if (slash == std::string::npos) slash = path.size();
        std::string_view c(path.data() + at, slash - at);
        if (c.empty() || c == "." || c == "..") abort();
        at = slash + 1;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Scratch scratch;
    std::string_view input(reinterpret_cast<const char*>(data), size);

    if (auto target = lamina::oci_whiteout_target(input)) {
        if (!input.starts_with(lamina::kOciWhiteoutPrefix) || target->empty() ||
            *target != input.substr(lamina::kOciWhiteoutPrefix.size()))
            abort();
    }
    if (lamina::is_private_xattr(input) !=
        (input.starts_with("trusted.overlay.") || input.starts_with("user.overlay.")))
        abort();

    // "PARENT\nREDIRECT": the parent's lower path (a decoded one, as lookup passes) and the value.
    size_t nl = input.find('\n');
    std::string_view parent = nl == std::string_view::npos ? "" : input.substr(0, nl);
    std::string_view value = nl == std::string_view::npos ? input : input.substr(nl + 1);
    if (auto parent_path = lamina::redirect_lower_path("", "/" + std::string(parent))) {
        check_lower_path(*parent_path);
        if (auto lower = lamina::redirect_lower_path(*parent_path, value)) check_lower_path(*lower);
    }

    // The same value read back from disk, as lookup reads it.
    std::string stored(value.substr(0, 2048));
    if (lsetxattr(scratch.file.c_str(), "user.overlay.redirect", stored.data(), stored.size(), 0) ==
        0) {
        auto read = lamina::read_redirect(scratch.file);
        if (!stored.empty() && (!read || *read != stored)) abort();
        if (read) {
            if (auto lower = lamina::redirect_lower_path("a", *read)) check_lower_path(*lower);
        }
    }
    if (lsetxattr(scratch.file.c_str(), "user.overlay.opaque", stored.data(), stored.size(), 0) ==
        0) {
        char opaque = lamina::read_opaque(scratch.file);
        char want = stored == "y" || stored == "x" ? stored[0] : 0;
        if (opaque != want) abort();
    }
    lremovexattr(scratch.file.c_str(), "user.overlay.redirect");
    lremovexattr(scratch.file.c_str(), "user.overlay.opaque");
    return 0;
}
