// Running helper programs (laminafs, fusermount3) and collecting what they print.
#pragma once

#include <string>
#include <vector>

namespace lamina::store {

struct ProcessResult {
    int status = -1;  // exit code, or 128+signal
    std::string out;
    std::string err;
};

// Runs argv without a shell in directory cwd ("" = ours), stdin from /dev/null. A daemon that
// forks and keeps our pipes open is not waited for: output is read until the child exits.
ProcessResult run_process(const std::vector<std::string>& argv, const std::string& cwd = "");

}  // namespace lamina::store
