// Owners of libarchive handles, and libarchive's error text, never NULL: archive_error_string() returns NULL when libarchive set
// no message (seen on a gzip stream whose tar could not be opened), and "text" + NULL crashes.
#pragma once

#include <archive.h>

#include <memory>
#include <string>

namespace lamina::store {

struct ArchiveReadFree {
    void operator()(archive* a) const { archive_read_free(a); }
};
struct ArchiveWriteFree {
    void operator()(archive* a) const { archive_write_free(a); }
};
using ReadArchive = std::unique_ptr<archive, ArchiveReadFree>;
using WriteArchive = std::unique_ptr<archive, ArchiveWriteFree>;

inline std::string archive_error_text(archive* a, const char* fallback = "unknown archive error") {
    const char* s = archive_error_string(a);
    return s ? s : fallback;
}

}  // namespace lamina::store
