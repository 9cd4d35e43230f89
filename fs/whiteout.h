// How the daemon reads the layer format quickly: a directory's marks in one call, redirects resolved.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "overlay_format.h"

namespace lamina {

// The format itself (whiteouts, opaque values, private xattrs, the OCI forms) is defined in
// common/overlay_format.h; what follows are the daemon's ways of reading it on its hot paths.

// A directory's opaque value and (when asked for) redirect, as read_opaque and read_redirect
// give them, from one llistxattr when the directory has none of those names (most have no
// xattrs at all): one system call instead of four on each lookup of a directory.
struct DirMarks {
    char opaque = 0;
    std::optional<std::string> redirect;
};
DirMarks read_dir_marks(const std::string& path, bool want_redirect);
// The same from an open (not O_PATH) directory.
DirMarks read_dir_marks_fd(int fd, bool want_redirect);

// Where a redirect value points, as a path inside the lower layers ("" is the layer root): an
// absolute value ("/a/b") from the root, a relative one a name in the parent's lower directory.
// nullopt for values the kernel refuses too (empty, a NUL byte, a '/' in a relative value) and for
// "." or ".." components, which would lead out of the layer.
std::optional<std::string> redirect_lower_path(std::string_view parent_lower_path,
                                               std::string_view redirect);

// Which prefix the write side uses for opaque and redirect xattrs.
enum class XattrFlavour { Trusted, User };
std::string overlay_xattr(XattrFlavour flavour, std::string_view suffix);

}  // namespace lamina
