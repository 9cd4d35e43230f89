// Building a directory's merged lower listing with one getdents pass per layer.
#include "dir_index.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <utility>

#include "dirent_reader.h"
#include "path_util.h"
#include "unique_fd.h"
#include "whiteout.h"

namespace lamina {

namespace {

struct RawEntry {
    std::string name;
    ino_t ino;
    uint8_t dtype;
    bool whiteout;
};

// Reads every entry of an open directory.
int read_entries(int dirfd, std::vector<RawEntry>& out) {
    return for_each_dirent(dirfd, [&](std::string_view name, ino_t ino, uint8_t dtype) {
        out.push_back(RawEntry{std::string(name), ino, dtype, false});
    });
}

uint8_t dtype_of(mode_t mode) {
    return static_cast<uint8_t>(IFTODT(mode));
}

// Marks raw entries that are markers, not names (OCI whiteout files, vanished entries).
constexpr uint8_t kSkip = 0xff;

// The index is still being built here, so its entries may change.
LowerEntry* find_mut(DirIndex& index, std::string_view name) {
    return const_cast<LowerEntry*>(std::as_const(index).find(name));
}

}  // namespace

int build_dir_index(const LayerStack& stack, const std::vector<LayerNo>& layers,
                    const std::string& rel, DirIndex& out) {
    const char* relc = rel_or_dot(rel);
    std::vector<RawEntry> raw;
    std::vector<std::string_view> oci_whiteouts;
    for (LayerNo layer : layers) {
        UniqueFd dir(
            openat(stack.fd(layer), relc, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!dir) {
            if (errno == ENOENT || errno == ENOTDIR) continue;
            return errno;
        }
        out.layers.push_back(layer);
        char opaque = read_opaque_fd(dir.get());
        raw.clear();
        if (int err = read_entries(dir.get(), raw)) return err;

        bool marker_opaque = false;
        oci_whiteouts.clear();
        for (RawEntry& e : raw) {
            if (e.name == kOciOpaqueMarker) {
                marker_opaque = true;
                e.dtype = kSkip;
                continue;
            }
            if (auto target = oci_whiteout_target(e.name)) {
                oci_whiteouts.push_back(*target);
                e.dtype = kSkip;  // the marker file itself is never listed
                continue;
            }
            if (e.dtype == DT_UNKNOWN || e.dtype == DT_CHR ||
                (opaque == 'x' && e.dtype == DT_REG)) {
                struct stat st;
                if (fstatat(dir.get(), e.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
                    e.dtype = kSkip;
                    continue;
                }
                e.dtype = dtype_of(st.st_mode);
                if (is_chardev_whiteout(st)) {
                    e.whiteout = true;
                } else if (opaque == 'x' && S_ISREG(st.st_mode) && st.st_size == 0 &&
                           has_whiteout_xattr(proc_fd_path(dir.get(), e.name))) {
                    e.whiteout = true;
                }
            }
        }
        // Entries of this layer first: a whiteout in the same layer does not hide them.
        for (RawEntry& e : raw) {
            if (e.dtype == kSkip) continue;
            bool is_dir = !e.whiteout && e.dtype == DT_DIR;
            if (LowerEntry* above = find_mut(out, e.name)) {
                if (above->merging) {
                    if (is_dir)
                        above->dir_layers.push_back(layer);
                    else
                        above->merging = false;
                }
                continue;
            }
            LowerEntry& le = out.entries.emplace_back();
            le.name = std::move(e.name);
            le.ino = e.ino;
            le.layer = layer;
            le.dtype = e.dtype;
            le.whiteout = e.whiteout;
            le.merging = is_dir;
            if (is_dir) le.dir_layers.push_back(layer);
            out.by_name.emplace(le.name, static_cast<uint32_t>(out.entries.size() - 1));
        }
        // OCI whiteouts hide the name in the layers below this one.
        for (std::string_view target : oci_whiteouts) {
            if (LowerEntry* above = find_mut(out, target)) {
                above->merging = false;
                continue;
            }
            LowerEntry& le = out.entries.emplace_back();
            le.name.assign(target);
            le.layer = layer;
            le.whiteout = true;
            out.by_name.emplace(le.name, static_cast<uint32_t>(out.entries.size() - 1));
        }
        if (opaque == 'y' || marker_opaque) break;
    }
    for (LowerEntry& le : out.entries) le.merging = false;
    return 0;
}

}  // namespace lamina
