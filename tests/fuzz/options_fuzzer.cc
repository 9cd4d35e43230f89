// libFuzzer target: the mount-option parser (-o strings, lowerdir escapes, id mappings, argv).
// The normal build replays the corpus through it (fuzz_corpus_test).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_check.h"
#include "options.h"

namespace {

// What the parser promises: an error is one line, and lowerdir splitting never invents bytes.
void check_one_line(const std::string& err) {
    lamina::fuzz::check(err.find('\n') == std::string::npos, "an error is one line: " + err);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);

    lamina::MountOptions opts;
    check_one_line(lamina::apply_mount_options(input, opts));

    size_t kept = 0;
    for (const auto& layer : lamina::split_lowerdir(input)) kept += layer.size();
    lamina::fuzz::check(kept <= input.size(), "split_lowerdir returned more bytes than it got");

    std::vector<lamina::IdMapRange> ranges;
    // Its errors reach the user through apply_mount_options, which keeps them on one line.
    std::string err = lamina::parse_id_mapping(input, ranges);
    lamina::fuzz::check(!err.empty() || !ranges.empty() || input.empty(),
                        "parse_id_mapping accepted a mapping and returned no range");

    // The command line: NUL-separated arguments after the program name.
    std::vector<std::string> args{"laminafs"};
    for (size_t at = 0; at <= input.size() && args.size() < 16;) {
        size_t end = input.find('\0', at);
        if (end == std::string_view::npos) end = input.size();
        args.emplace_back(input.substr(at, end - at));
        at = end + 1;
    }
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    lamina::MountOptions cli;
    check_one_line(lamina::parse_command_line(static_cast<int>(args.size()), argv.data(), cli));
    return 0;
}
