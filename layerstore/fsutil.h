// File-system helpers the store needs: whole-file reads, atomic writes, tree removal and sizes.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "fd.h"

namespace lamina::store {

// The whole file; StoreError when it holds more than max_bytes (a list a user names may be
// /dev/zero).
std::string read_file(const std::string& path, size_t max_bytes = SIZE_MAX);
// rel below the directory root with every symlink resolved as if root were "/" (openat2 with
// RESOLVE_IN_ROOT, magic links refused): an image's symlinks never lead outside it. flags are
// open's (O_CLOEXEC is added unless inheritable); an empty Fd with errno set on failure.
Fd open_in_root_dir(int root, const std::string& rel, uint64_t flags, bool inheritable = false);
// path beneath the directory root, no symlink followed on the way or at the end, nothing outside
// it reached (openat2 RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS); O_CLOEXEC added. Empty on failure,
// errno set.
Fd open_beneath(int root, const std::string& path, int flags);
// Writes data to path through a temporary file, fsync and rename, so readers see old or new.
void write_file_atomic(const std::string& path, const std::string& data);
// mkdir -p with the given mode for the directories it creates.
void make_dirs(const std::string& path, mode_t mode = 0755);
// rm -rf that never follows a symlink; a missing path is fine.
void remove_tree(const std::string& path);
// rm -rf of name inside the directory dirfd, never following symlinks.
void remove_tree_at(int dirfd, const std::string& name);
// The names in directory rel under dirfd (AT_FDCWD for a plain path), sorted, without "." and
// "..". False with errno set when it cannot be read.
bool sorted_names_at(int dirfd, const std::string& rel, std::vector<std::string>& names);
// Bytes of regular-file content under path, each inode counted once (Docker's layer size).
uint64_t tree_size(const std::string& path);
// n random lowercase hex digits from getrandom(2).
std::string random_hex(size_t n);
// Seconds since the epoch.
int64_t now_seconds();
bool path_exists(const std::string& path);

}  // namespace lamina::store
