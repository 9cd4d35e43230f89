// Every input of the tar importer's fuzz corpus (tests/fuzz/layer_tar_corpus), replayed through
// unpack_tar with the options the fuzzer uses: each must unpack or be refused with a StoreError,
// never crash. Inputs that once crashed the importer live there as regression cases.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "error.h"
#include "unpack.h"

namespace {

namespace fs = std::filesystem;

fs::path corpus_dir() {
    const char* root = std::getenv("LAMINA_SOURCE_ROOT");
    return fs::path(root ? root : ".") / "tests/fuzz/layer_tar_corpus";
}

TEST(UnpackCorpus, every_input_unpacks_or_is_refused_cleanly) {
    fs::path dir = corpus_dir();
    ASSERT_TRUE(fs::is_directory(dir)) << dir << " is missing (LAMINA_SOURCE_ROOT unset?)";
    char templ[] = "/tmp/lamina-unpack-corpus.XXXXXX";
    ASSERT_NE(mkdtemp(templ), nullptr);
    fs::path scratch = templ;
    int inputs = 0, refused = 0;
    for (const auto& entry : fs::directory_iterator(dir)) {
        if (!entry.is_regular_file()) continue;
        ++inputs;
        fs::path dest = scratch / ("out" + std::to_string(inputs));
        fs::create_directory(dest);
        lamina::store::UnpackOptions opts;
        opts.mode = lamina::store::UnpackOptions::Mode::Layer;
        opts.privileged = false;
        opts.max_entry_size = 1 << 20;
        try {
            lamina::store::unpack_tar(entry.path(), dest, opts);
        } catch (const lamina::store::StoreError& e) {
            ++refused;
            EXPECT_NE(std::string(e.what()), "") << entry.path();
            EXPECT_EQ(std::string(e.what()).find('\n'), std::string::npos)
                << "a refusal is one line: " << e.what();
        }
    }
    std::error_code ec;
    fs::remove_all(scratch, ec);
    EXPECT_GE(inputs, 2) << "the corpus holds the two crash reproducers at least";
    std::printf("%d corpus inputs: %d unpacked, %d refused\n", inputs, inputs - refused, refused);
}

}  // namespace
