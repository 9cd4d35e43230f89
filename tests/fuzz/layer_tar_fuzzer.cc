// libFuzzer target: the layer tar importer (layerstore unpack_tar, layer mode, unprivileged), on
// any bytes: it must refuse what it cannot take with a StoreError and never write outside the
// destination.
#include <dirent.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <set>
#include <string>

#include "unpack.h"

namespace {

namespace fs = std::filesystem;

struct Scratch {
    std::string base;
    Scratch() {
        char templ[] = "/tmp/lamina-fuzz-tar.XXXXXX";
        if (!mkdtemp(templ)) abort();
        base = templ;
    }
    ~Scratch() {
        std::error_code ec;
        fs::remove_all(base, ec);
    }
};

std::set<std::string> names_in(const std::string& dir) {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(dir)) names.insert(e.path().filename());
    return names;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    static Scratch scratch;
    std::string archive = scratch.base + "/in.tar";
    std::string dest = scratch.base + "/out";
    if (FILE* f = fopen(archive.c_str(), "wb")) {
        if (size && fwrite(data, 1, size, f) != size) abort();
        fclose(f);
    } else {
        abort();
    }
    fs::create_directory(dest);
    lamina::store::UnpackOptions opts;
    opts.mode = lamina::store::UnpackOptions::Mode::Layer;
    opts.privileged = false;
    opts.max_entry_size = 1 << 20;
    try {
        lamina::store::unpack_tar(archive, dest, opts);
    } catch (const std::exception&) {
        // Refused: fine, as long as nothing escaped.
    }
    // Nothing may appear beside the destination.
    if (names_in(scratch.base) != std::set<std::string>{"in.tar", "out"}) abort();
    std::error_code ec;
    fs::remove_all(dest, ec);
    if (ec) abort();

    try {
        lamina::store::split_entry_path(
            std::string(reinterpret_cast<const char*>(data), std::min<size_t>(size, 4096)));
    } catch (const std::exception&) {
    }
    return 0;
}
