// libarchive's error text, never NULL: archive_error_string() returns NULL when libarchive set
// no message (seen on a gzip stream whose tar could not be opened), and "text" + NULL crashes.
#pragma once

#include <archive.h>

#include <string>

namespace lamina::store {

inline std::string archive_error_text(archive* a, const char* fallback = "unknown archive error") {
    const char* s = archive_error_string(a);
    return s ? s : fallback;
}

}  // namespace lamina::store
