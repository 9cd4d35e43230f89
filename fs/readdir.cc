// Merged readdir: the upper listing over the lower index, without whiteouts or duplicates.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <unordered_set>

#include "dir_index.h"
#include "dirent_reader.h"
#include "overlay.h"
#include "path_util.h"

namespace lamina {

namespace {

constexpr uint64_t kDotKey = 1;
constexpr uint64_t kDotDotKey = 2;

// A name's READDIR offset: 62 bits of its hash, above the keys of "." and "..", so offsets stay
// positive. Two names of one hash would both be listed, but a reply that ends between them
// would skip the second: at 62 bits, about one directory in 10^10 of a million entries.
uint64_t name_key(std::string_view name) {
    return (XXH3_64bits(name.data(), name.size()) >> 2) + 3;
}

}  // namespace

int Overlay::listing_for(Node* dir, uint64_t off, std::shared_ptr<const DirListing>& out) {
    if (!dir->is_dir()) return ENOTDIR;
    if (off != 0) {
        std::lock_guard guard(listings_mu_);
        if (dir->listing && dir->listing->name_changes == dir->name_changes.load()) {
            out = dir->listing;
            return 0;
        }
    }
    auto listing = std::make_shared<DirListing>();
    {
        // Names change only under the exclusive lock: the count and the listing agree.
        std::shared_lock lock(tree_);
        listing->name_changes = dir->name_changes.load();
        if (int err = list_merged_locked(dir, listing->entries)) return err;
    }
    for (auto& e : listing->entries)
        e.key = e.name == "." ? kDotKey : e.name == ".." ? kDotDotKey : name_key(e.name);
    std::sort(listing->entries.begin(), listing->entries.end(),
              [](const MergedEntry& a, const MergedEntry& b) {
                  return a.key != b.key ? a.key < b.key : a.name < b.name;
              });
    std::lock_guard guard(listings_mu_);
    dir->listing = listing;
    out = std::move(listing);
    return 0;
}

void Overlay::drop_listing(Node* dir, const DirListing* listing) {
    std::lock_guard guard(listings_mu_);
    if (dir->listing.get() == listing) dir->listing.reset();
}

std::vector<MergedEntry>::const_iterator DirListing::resume_after(uint64_t off) const {
    return std::upper_bound(entries.begin(), entries.end(), off,
                            [](uint64_t key, const MergedEntry& e) { return key < e.key; });
}

int Overlay::fsyncdir(Node* dir, bool datasync) {
    // fsync=0, or nothing of it was written.
    if (!opts_.fsync || !dir->in_upper) return 0;
    UniqueFd fd;
    {
        std::shared_lock lock(tree_);
        UniqueFd scratch;
        int upper_fd;
        if (int err = upper_dir_fd(dir, scratch, upper_fd)) return err;
        fd.reset(openat(upper_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    }
    if (!fd) return errno;
    int rc = datasync ? fdatasync(fd.get()) : ::fsync(fd.get());
    return rc == 0 ? 0 : errno;
}

int Overlay::list_merged_locked(Node* node, std::vector<MergedEntry>& entries, bool for_caller) {
    entries.clear();
    uint64_t parent_ino = node->parent ? node->parent->ino : node->ino;
    entries.push_back(MergedEntry{".", node->ino, DT_DIR});
    entries.push_back(MergedEntry{"..", parent_ino, DT_DIR});

    if (node->unlinked) return 0;  // a removed directory still open lists as empty
    std::unordered_set<std::string> upper_names;
    if (node->in_upper) {
        UniqueFd scratch;
        int upper_fd;
        if (int err = upper_dir_fd(node, scratch, upper_fd)) return err;
        UniqueFd dir(open_maybe_noatime(
            O_RDONLY | O_DIRECTORY | O_CLOEXEC |
                (for_caller ? stack_.noatime_flag(kUpperLayer, true) : O_NOATIME),
            [&](int f) { return openat(upper_fd, ".", f); }));
        if (!dir) return errno;
        bool xattr_whiteouts =
            readdir_hides_xattr_whiteouts(read_dir_marks_fd(dir.get(), false).opaque);
        int err = for_each_dirent(dir.get(), [&](std::string_view name, ino_t d_ino,
                                                 uint8_t dtype) {
            bool whiteout = false;
            if (dtype == DT_CHR || dtype == DT_UNKNOWN || (xattr_whiteouts && dtype == DT_REG)) {
                std::string sname(name);
                struct stat st;
                if (fstatat(dir.get(), sname.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return;
                whiteout = is_chardev_whiteout(st) ||
                           (xattr_whiteouts && is_whiteout(st, proc_fd_path(dir.get(), sname)));
                dtype = static_cast<uint8_t>(IFTODT(st.st_mode));
            }
            upper_names.emplace(name);
            if (whiteout) return;
            uint64_t ino = make_ino(kUpperLayer, d_ino);
            table_.find_ino(node, name, ino);
            entries.push_back(MergedEntry{std::string(name), ino, dtype});
        });
        if (err) return err;
    }
    if (!node->opaque && !node->lowers.empty()) {
        auto index = dir_index(node);
        for (const LowerEntry& e : index->entries) {
            if (e.whiteout || upper_names.contains(e.name)) continue;
            uint64_t ino = make_ino(e.layer, e.ino);
            table_.find_ino(node, e.name, ino);
            entries.push_back(MergedEntry{e.name, ino, e.dtype});
        }
    }
    return 0;
}

}  // namespace lamina
