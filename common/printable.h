// Untrusted text (names from layers, archives and registries, what the user typed) made safe to
// show in a one-line message on a terminal. The one rule for it, used by the daemon, the store
// and the tools.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace lamina {

// Keeps printable ASCII and well-formed UTF-8 of printable characters. Shows every other byte as
// \xNN: C0 controls (a newline would split the line, ESC starts terminal sequences), DEL, C1
// controls (U+0080 to U+009F: some terminals obey U+009B as ESC [), the bidirectional controls
// that can make text read otherwise than it is, and bytes that are not UTF-8. At most max bytes
// of text are shown, then "...".
std::string printable(std::string_view text, size_t max = 256);

}  // namespace lamina
