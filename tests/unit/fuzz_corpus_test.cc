// Every input of a libFuzzer corpus (tests/fuzz/NAME_corpus), replayed through its target's
// LLVMFuzzerTestOneInput under the normal g++ build, so the checks each target makes (one-line
// refusals, nothing unpacked outside the destination, redirects that stay in the layer) hold for
// the corpus in every CI run. Inputs that once crashed a target live there as regression cases.
// meson builds this once per target, linked with tests/fuzz/NAME_fuzzer.cc; LAMINA_FUZZ_CORPUS
// names the corpus. A broken check aborts, naming the input (below) and the check (fuzz_check.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

namespace fs = std::filesystem;

fs::path corpus_dir() {
    const char* root = std::getenv("LAMINA_SOURCE_ROOT");
    const char* corpus = std::getenv("LAMINA_FUZZ_CORPUS");
    return fs::path(root ? root : ".") / "tests/fuzz" / (corpus ? corpus : "");
}

std::vector<uint8_t> read_bytes(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(FuzzCorpus, every_input_passes_the_targets_checks) {
    ASSERT_NE(std::getenv("LAMINA_FUZZ_CORPUS"), nullptr) << "LAMINA_FUZZ_CORPUS is not set";
    fs::path dir = corpus_dir();
    ASSERT_TRUE(fs::is_directory(dir)) << dir << " is missing (LAMINA_SOURCE_ROOT unset?)";
    std::vector<fs::path> inputs;
    for (const auto& entry : fs::directory_iterator(dir))
        if (entry.is_regular_file()) inputs.push_back(entry.path());
    std::sort(inputs.begin(), inputs.end());
    ASSERT_FALSE(inputs.empty()) << dir << " holds no input";
    for (const auto& input : inputs) {
        std::vector<uint8_t> bytes = read_bytes(input);
        // Said before the call: a broken check aborts the process, and this names the input.
        std::fprintf(stderr, "replaying %s (%zu bytes)\n", input.c_str(), bytes.size());
        EXPECT_EQ(LLVMFuzzerTestOneInput(bytes.data(), bytes.size()), 0) << input;
    }
    std::printf("%zu inputs of %s replayed\n", inputs.size(), dir.c_str());
}

}  // namespace
