// libFuzzer target: the layer tar importer (layerstore unpack_tar, layer mode, unprivileged), on
// any bytes: it must refuse what it cannot take with a one-line StoreError and never write
// outside the destination. The normal build replays the corpus through it (fuzz_corpus_test).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <string>

#include "error.h"
#include "fuzz_check.h"
#include "unpack.h"

namespace {

namespace fs = std::filesystem;
using lamina::fuzz::check;
using lamina::fuzz::violated;

// The scratch root: the archive, and the destination a few directories down, so that an entry
// climbing out with "../" still lands inside the root, where the walk after each input sees it.
struct Scratch {
    fs::path root;
    fs::path archive;
    fs::path dest;
    Scratch() {
        char templ[] = "/tmp/lamina-fuzz-tar.XXXXXX";
        if (!mkdtemp(templ)) violated("mkdtemp /tmp/lamina-fuzz-tar.XXXXXX");
        root = templ;
        archive = root / "in.tar";
        dest = root / "a/b/c/d/e/f/g/h/out";
    }
    ~Scratch() {
        std::error_code ec;
        fs::remove_all(root, ec);
    }
};

// Walks the whole scratch root (symlinks not followed): everything in it must be the archive,
// a directory on the way to the destination, or inside the destination.
void check_nothing_outside(const Scratch& s) {
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(s.root, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
        const fs::path& p = it->path();
        if (p == s.dest) {
            it.disable_recursion_pending();  // inside is the importer's to fill
            continue;
        }
        bool on_the_way =
            std::mismatch(p.begin(), p.end(), s.dest.begin(), s.dest.end()).first == p.end();
        check(p == s.archive || on_the_way,
              "unpack_tar wrote outside the destination: " + p.string());
    }
    check(!ec, "walking " + s.root.string() + ": " + ec.message());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Scratch scratch;
    if (FILE* f = fopen(scratch.archive.c_str(), "wb")) {
        check(!size || fwrite(data, 1, size, f) == size, "writing " + scratch.archive.string());
        fclose(f);
    } else {
        violated("cannot create " + scratch.archive.string());
    }
    fs::create_directories(scratch.dest);
    lamina::store::UnpackOptions opts;
    opts.mode = lamina::store::UnpackOptions::Mode::Layer;
    opts.privileged = false;
    opts.max_entry_size = 1 << 20;
    try {
        lamina::store::unpack_tar(scratch.archive, scratch.dest, opts);
    } catch (const lamina::store::StoreError& e) {
        std::string why = e.what();
        check(!why.empty() && why.find('\n') == std::string::npos,
              "a refusal is one line of text, not \"" + why + "\"");
    } catch (const std::exception& e) {
        violated(std::string("unpack_tar threw something other than StoreError: ") + e.what());
    }
    check_nothing_outside(scratch);
    std::error_code ec;
    fs::remove_all(scratch.root / "a", ec);
    check(!ec, "removing what was unpacked: " + ec.message());

    try {
        lamina::store::split_entry_path(
            std::string(reinterpret_cast<const char*>(data), std::min<size_t>(size, 4096)));
    } catch (const std::exception&) {
    }
    return 0;
}
