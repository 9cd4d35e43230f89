// The one error type the store library throws: a single line a user can read.
#pragma once

#include <stdexcept>
#include <string>

namespace lamina::store {

class StoreError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// "WHAT PATH: strerror(err)", the shape of every system-call failure the store reports.
[[noreturn]] void throw_errno(const std::string& what, const std::string& path, int err);

}  // namespace lamina::store
