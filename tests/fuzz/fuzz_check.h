// What a fuzz target does when an input breaks a property it checks: say which, then abort, so
// libFuzzer keeps the input and the corpus replay of the normal build fails naming the property.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>

namespace lamina::fuzz {

[[noreturn]] inline void violated(const std::string& property) {
    std::fprintf(stderr, "fuzz check failed: %s\n", property.c_str());
    std::abort();
}

inline void check(bool holds, const std::string& property) {
    if (!holds) violated(property);
}

}  // namespace lamina::fuzz
