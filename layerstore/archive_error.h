// Owners of libarchive handles, and libarchive's error text, never NULL: archive_error_string() returns NULL when libarchive set
// no message (seen on a gzip stream whose tar could not be opened), and "text" + NULL crashes.
// When a system call failed, the system's reason instead: libarchive's own words for it ("Write
// error", "Failed to open 'PATH'") drop the errno and name the caller's scratch file.
#pragma once

#include <archive.h>
#include <errno.h>
#include <string.h>

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
    int e = archive_errno(a);
    // libarchive's own codes for bad data and misuse are EILSEQ, EINVAL and -1, not a system's.
    if (e > 0 && e != EILSEQ && e != EINVAL) return strerror(e);
    const char* s = archive_error_string(a);
    return s ? s : fallback;
}

}  // namespace lamina::store
