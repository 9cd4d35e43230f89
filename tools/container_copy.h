// `lamina cp`: files between the host and a container's merged tree. Paths inside the container
// are resolved as if its root were "/" (symlinks included), so an image's symlink never leads a
// copy to or from the host's own files.
#pragma once

#include <string>

namespace lamina::cli {

struct CopyOptions {
    bool archive = false;      // -a: keep owners; otherwise the copies are the caller's
    bool follow_link = false;  // -L: a symlink as the source is copied as what it points to
};

// docker cp's rules: a directory goes into an existing directory under its own name, or
// becomes dest; "SRC/." copies what is in SRC.
void copy_out_of_container(const std::string& merged, const std::string& name,
                           const std::string& src, const std::string& dest, const CopyOptions& o);
void copy_into_container(const std::string& src, const std::string& merged, const std::string& name,
                         const std::string& dest, const CopyOptions& o);

// `cp CONTAINER:SRC -`: SRC as a tar on stdout, under its own last name ("." for "SRC/.").
void copy_out_as_tar(const std::string& merged, const std::string& name, const std::string& src,
                     const CopyOptions& o);
// `cp - CONTAINER:DEST`: a tar from stdin unpacked into the directory DEST. No entry may lead
// out of it: ".." and absolute names are refused, and so is any path through a symlink.
void copy_tar_into(const std::string& merged, const std::string& name, const std::string& dest,
                   const CopyOptions& o);

}  // namespace lamina::cli
