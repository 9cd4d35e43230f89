// Archives through pipes: stdin spooled to an unnamed file for the readers that need a path,
// files copied to stdout, and a directory tree written as a tar stream (export).
#pragma once

#include <string>

#include "unique_fd.h"

namespace lamina::cli {

// stdin copied into an unnamed file in dir (O_TMPFILE, or a file unlinked at once): nothing is
// left behind however the process ends. path() names it for as long as the object lives.
class SpooledStdin {
public:
    explicit SpooledStdin(const std::string& dir);
    const std::string& path() const { return path_; }
    // message with the spooled file's name replaced by "stdin", what the user gave.
    std::string as_given(std::string message) const;

private:
    UniqueFd fd_;
    std::string path_;
};

// A directory in dir for one command's scratch files, removed with everything in it.
class ScratchDir {
public:
    explicit ScratchDir(const std::string& dir);
    ~ScratchDir();
    ScratchDir(const ScratchDir&) = delete;
    ScratchDir& operator=(const ScratchDir&) = delete;
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

void copy_file_to_stdout(const std::string& path);

// Writes the tree below root as a pax tar, names relative to root, to out ("" for stdout); with
// top, root itself is an entry of that name and the rest are below it (root may be a file).
// Mount points below root are entries but not descended into (as docker export leaves volumes
// out).
void write_tree_tar(const std::string& root, const std::string& out, const std::string& top = "");

// Unpacks the tar on stdin into the directory dir: modes, times, xattrs and ACLs, owners only
// with keep_owners. An entry named with ".." or an absolute path, or reached through a symlink,
// is refused (libarchive's secure extraction). Errors start with what.
void unpack_stdin_beneath(const std::string& dir, bool keep_owners, const std::string& what);

}  // namespace lamina::cli
