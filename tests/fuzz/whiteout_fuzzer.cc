// libFuzzer target: the whiteout, private-xattr and redirect decoders, in memory and from real
// xattrs on a scratch file. The normal build replays the corpus through it (fuzz_corpus_test).
#include <sys/xattr.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "whiteout.h"

namespace {

using lamina::fuzz::check;
using lamina::fuzz::violated;

// A file and a directory the decoders read their xattrs from, made once per process.
struct Scratch {
    std::string dir;
    std::string file;
    Scratch() {
        char templ[] = "/tmp/lamina-fuzz-whiteout.XXXXXX";
        if (!mkdtemp(templ)) violated("mkdtemp /tmp/lamina-fuzz-whiteout.XXXXXX");
        dir = templ;
        file = dir + "/f";
        FILE* f = fopen(file.c_str(), "w");
        if (!f) violated("cannot create " + file);
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
    check(path.find('\0') == std::string::npos, "a decoded redirect holds a NUL");
    if (path.empty()) return;
    check(path.front() != '/' && path.back() != '/',
          "a decoded redirect starts or ends with '/': " + path);
    size_t at = 0;
    while (at <= path.size()) {
        size_t slash = path.find('/', at);
        if (slash == std::string::npos) slash = path.size();
        std::string_view c(path.data() + at, slash - at);
        check(!c.empty() && c != "." && c != "..",
              "a decoded redirect has an empty, . or .. component: " + path);
        at = slash + 1;
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Scratch scratch;
    std::string_view input(reinterpret_cast<const char*>(data), size);

    if (auto target = lamina::oci_whiteout_target(input)) {
        check(input.starts_with(lamina::kOciWhiteoutPrefix) && !target->empty() &&
                  *target == input.substr(lamina::kOciWhiteoutPrefix.size()),
              "oci_whiteout_target names something else than what follows .wh.");
    }
    check(lamina::is_private_xattr(input) ==
              (input.starts_with("trusted.overlay.") || input.starts_with("user.overlay.")),
          "is_private_xattr disagrees with the trusted./user.overlay. prefixes");

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
        check(stored.empty() || (read && *read == stored),
              "read_redirect does not return the redirect stored");
        if (read) {
            if (auto lower = lamina::redirect_lower_path("a", *read)) check_lower_path(*lower);
        }
    }
    if (lsetxattr(scratch.file.c_str(), "user.overlay.opaque", stored.data(), stored.size(), 0) ==
        0) {
        char opaque = lamina::read_opaque(scratch.file);
        char want = stored == "y" || stored == "x" ? stored[0] : 0;
        check(opaque == want, "read_opaque reads another marker than the one stored");
    }
    lremovexattr(scratch.file.c_str(), "user.overlay.redirect");
    lremovexattr(scratch.file.c_str(), "user.overlay.opaque");
    return 0;
}
