// Writing a container's writable layer as an OCI layer tar, deterministically.
#pragma once

#include <string>

namespace lamina::store {

// Writes the tree at upper_dir to out_path as an uncompressed pax tar and returns its digest
// (the diffID). Entries are sorted; uid/gid are numeric with no names; mtimes are kept, atime and
// ctime are left out; overlay whiteouts become ".wh.NAME" and opaque directories gain
// ".wh..wh..opq", both with mtime 0. The same tree always gives the same bytes.
std::string write_layer_tar(const std::string& upper_dir, const std::string& out_path);

}  // namespace lamina::store
