// Where lamina's programs find one another: beside the running binary, else on PATH. The one
// rule for it, used by the store (laminafs, the lazy fetcher) and by laminafs (its fetcher).
#pragma once

#include <string>

namespace lamina {

// The directory holding the running executable (/proc/self/exe), or "".
std::string self_exe_dir();

// The first executable called name in $PATH (a default path when it is unset), or "".
std::string find_in_path(const std::string& name);

// The program $env names (when env is not null and the variable is set), else the executable
// at beside (relative to the running binary's directory), else name on PATH; "" when it is
// nowhere.
std::string find_program(const char* env, const std::string& beside, const std::string& name);

}  // namespace lamina
