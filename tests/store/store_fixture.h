// Test images built by hand (layer tars with libarchive, OCI layouts, archives) and a runner
// for the lamina binary against a private store root.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "fixture.h"

namespace lamina::test {

// One tar entry; `raw_huge` writes a header declaring an absurd size with no data after it.
struct TarEntry {
    enum class Kind { File, Dir, Symlink, Hardlink, CharDev } kind = Kind::File;
    std::string path;
    std::string data;  // file content, or symlink/hardlink target
    mode_t mode = 0644;
    unsigned major = 0, minor = 0;
};
TarEntry file(const std::string& path, const std::string& data, mode_t mode = 0644);
TarEntry dir(const std::string& path, mode_t mode = 0755);
TarEntry symlink(const std::string& path, const std::string& target);
TarEntry hardlink(const std::string& path, const std::string& target);
TarEntry whiteout(const std::string& path);  // ".wh." form: path is the deleted file's path
TarEntry opaque(const std::string& dir_path);

// An uncompressed pax tar of entries, in order, with fixed mtimes.
std::string make_tar(const std::vector<TarEntry>& entries);
// The tar up to and with its two end-of-archive blocks, without the zeros that pad it to a
// whole record (libarchive and Python pad to 10 KiB; Go's writer does not). The last entry must
// not end in a block of zeros.
std::string without_record_padding(const std::string& tar);
// A ustar stream whose only entry declares `size` bytes and carries none.
std::string make_huge_entry_tar(const std::string& path, unsigned long long size);
// gzip, zstd, bzip2 or xz of data ("" returns data; "gzip+gzip" compresses twice).
std::string compress(const std::string& data, const std::string& how);

std::string sha256(const std::string& data);

struct Layer {
    std::string tar;          // uncompressed
    std::string compression;  // "", "gzip", "zstd" (or what compress() takes, for hostile blobs)
    std::string labelled;     // the media type's compression when it lies ("none": plain tar)
};

// The two-layer image most store tests use: /etc/motd, data/a and data/b, keep/old; the top layer
// whites out data/a, makes keep opaque with keep/new, and adds etc/two. The bottom layer is gzip.
std::vector<Layer> demo_image(const std::string& top_compression);

struct BuiltImage {
    std::string config_digest;
    std::vector<std::string> diff_ids;
};

// Writes an OCI image layout at dir with one image called name (annotation), one history entry
// per layer. bad_diff_id (index) writes a wrong diff_id for that layer.
BuiltImage write_oci_layout(const std::string& dir, const std::vector<Layer>& layers,
                            const std::string& name, int bad_diff_id = -1);
// tar -cf out -C dir .
void tar_dir(const std::string& dir, const std::string& out);

// Unmounts whatever a test left mounted in the store at root when it ends, whatever happened:
// volumes and binds inside containers first (deepest first), then the unions.
struct StoreGuard {
    std::string root;
    ~StoreGuard();
};

// The stdout of a command that must succeed (a failure is reported with its stderr), without
// trailing newlines.
std::string out_of(const CommandResult& r);

// Runs the lamina binary: `lamina --root ROOT ARGS...`.
class Lamina {
public:
    explicit Lamina(std::string root) : root_(std::move(root)) {}
    CommandResult operator()(const std::vector<std::string>& args, int timeout = 120) const;
    std::vector<std::string> argv(const std::vector<std::string>& args) const;
    const std::string& root() const { return root_; }

private:
    std::string root_;
};

std::string lamina_binary();
bool have_program(const std::string& name);

// Files and dirs (relative paths, sorted) below root with type and content, for comparing trees.
std::string describe_tree(const std::string& root);

// The laminafs daemon serving merged, found by its command line (lamina runs it with merged as
// its last argument); -1 when there is none.
pid_t laminafs_serving(const std::string& merged);

}  // namespace lamina::test
