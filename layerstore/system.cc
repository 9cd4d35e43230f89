// `lamina system df`, `system prune`, `info`, and the squashed bottom layer of very deep images.
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/vfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <map>
#include <set>

#include "db.h"
#include "digest.h"
#include "error.h"
#include "fsutil.h"
#include "internal.h"
#include "lock.h"
#include "overlay_names.h"
#include "process.h"
#include "store.h"

namespace lamina::store {

DiskUsage Store::disk_usage() {
    DiskUsage du;
    du.image_details = images();
    auto conts = containers(true);
    std::set<std::string> used_images;
    for (const auto& c : conts) used_images.insert(c.record.image_id);
    std::map<std::string, int64_t> layer_size;
    for (const auto& l : layers()) {
        layer_size[l.id] = l.size;
        du.layers_size += l.size;
    }
    du.layers = static_cast<int>(layer_size.size());
    std::set<std::string> active_layers;
    for (const auto& s : du.image_details) {
        ++du.images;
        if (used_images.count(s.image.id)) {
            ++du.images_active;
            for (const auto& l : s.image.layers) active_layers.insert(l.chain_id);
        }
    }
    du.images_size = du.layers_size;
    for (const auto& [id, size] : layer_size)
        if (!active_layers.count(id)) du.images_reclaimable += size;
    for (const auto& c : conts) {
        ++du.containers;
        du.containers_size += c.size;
        if (c.mounted) {
            ++du.containers_active;
        } else {
            du.containers_reclaimable += c.size;
        }
    }
    Stmt st(*db_, "SELECT COALESCE(SUM(size), 0) FROM blobs");
    if (st.step()) du.blobs_size = st.integer(0);
    du.downloads_size = kept_downloads_size();
    return du;
}

PruneReport Store::prune(bool all_unused_images) {
    Layout l{root_};
    PruneReport report;
    {
        // Kept partial downloads go first: on a full disk SQLite needs room for what follows.
        StoreLock lock(l.lock(), StoreLock::Mode::Exclusive);
        report.downloads_reclaimed = remove_kept_downloads();
        report.reclaimed += report.downloads_reclaimed;
    }
    auto conts = prune_containers();
    report.containers = conts.containers;
    report.reclaimed += conts.reclaimed;
    auto imgs = prune_images(all_unused_images);
    report.images = imgs.images;
    report.reclaimed += imgs.reclaimed;
    return report;
}

PruneReport Store::prune_images(bool all_unused) {
    PruneReport report;
    int64_t before = 0;
    for (const auto& layer : layers()) before += layer.size;
    for (const auto& s : images()) {
        if (s.containers > 0) continue;
        if (!s.image.names.empty() && !all_unused) continue;
        // Every name goes, then the image.
        for (size_t i = 0; i + 1 < s.image.names.size(); ++i) remove_image(s.image.names[i], false);
        remove_image(s.image.id, false);
        report.images.push_back(s.image.id);
    }
    Layout l{root_};
    StoreLock lock(l.lock(), StoreLock::Mode::Exclusive);
    recover();
    delete_unreferenced();
    int64_t after = 0;
    for (const auto& layer : layers()) after += layer.size;
    report.reclaimed += before - after;
    return report;
}

namespace {

std::string fs_type_name(long type) {
    switch (static_cast<unsigned long>(type)) {
        case 0xEF53:
            return "extfs";
        case 0x58465342:
            return "xfs";
        case 0x9123683E:
            return "btrfs";
        case 0x01021994:
            return "tmpfs";
        case 0x794C7630:
            return "overlayfs";
        case 0x2FC12FC1:
            return "zfs";
        case 0xF2F52010:
            return "f2fs";
        case 0x6969:
            return "nfs";
        case 0x65735546:
            return "fuse";
        default: {
            char buf[32];
            snprintf(buf, sizeof buf, "unknown (0x%lx)", static_cast<unsigned long>(type));
            return buf;
        }
    }
}

}  // namespace

StoreInfo Store::info() {
    Layout l{root_};
    StoreInfo info;
    info.root = root_;
    try {
        info.laminafs_path = laminafs_binary();
        auto r = run_process({info.laminafs_path, "--version"});
        info.driver_version =
            r.status == 0 ? r.out.substr(0, r.out.find('\n')) : "unknown (" + r.err + ")";
    } catch (const StoreError& e) {
        info.driver_version = std::string("not found: ") + e.what();
    }
    struct statfs sfs;
    if (::statfs(root_.c_str(), &sfs) == 0) info.backing_filesystem = fs_type_name(sfs.f_type);
    {
        StoreLock lock(l.lock(), StoreLock::Mode::Shared);
        std::string probe = l.tmp() + "/probe-" + random_hex(12);
        if (::mknod(probe.c_str(), S_IFCHR | 0600, makedev(0, 0)) == 0)
            info.kernel_whiteouts = true;
        ::unlink(probe.c_str());
        if (::mkdir(probe.c_str(), 0700) == 0) {
            info.trusted_xattrs = ::setxattr(probe.c_str(), kOpaqueXattrs[0], &kOpaque, 1, 0) == 0;
            info.user_xattrs = ::setxattr(probe.c_str(), kOpaqueXattrs[1], &kOpaque, 1, 0) == 0;
            ::rmdir(probe.c_str());
        }
    }
    auto count = [&](const char* sql) {
        Stmt st(*db_, sql);
        return st.step() ? static_cast<int>(st.integer(0)) : 0;
    };
    info.images = count("SELECT COUNT(*) FROM images");
    info.layers = count("SELECT COUNT(*) FROM layers");
    for (const auto& c : containers(false)) {
        ++info.containers;
        if (c.mounted) ++info.containers_mounted;
    }
    return info;
}

namespace {

std::vector<std::string> names_in(int dirfd) {
    std::vector<std::string> names;
    int d2 = ::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR* d = d2 >= 0 ? ::fdopendir(d2) : nullptr;
    if (!d) {
        if (d2 >= 0) ::close(d2);
        return names;
    }
    while (struct dirent* de = ::readdir(d))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) names.emplace_back(de->d_name);
    ::closedir(d);
    return names;
}

// Applies one layer onto dst as the overlay would show it: whiteouts remove, opaque
// directories replace, everything else is hard-linked (layers are never written through).
void apply_layer(int src, int dst) {
    for (const auto& n : names_in(src)) {
        struct stat st;
        if (::fstatat(src, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
        if (n == kOciOpaqueMarker) continue;
        if (auto target = oci_whiteout_target(n)) {
            remove_tree_at(dst, std::string(*target));
            continue;
        }
        if (is_whiteout_at(src, n, st)) {
            remove_tree_at(dst, n);
            continue;
        }
        struct stat dst_st;
        bool exists = ::fstatat(dst, n.c_str(), &dst_st, AT_SYMLINK_NOFOLLOW) == 0;
        if (S_ISDIR(st.st_mode)) {
            Fd s(::openat(src, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            bool opaque = is_opaque_at(src, n) || (s && has_oci_opaque_marker(s.get()));
            if (exists && (!S_ISDIR(dst_st.st_mode) || opaque)) {
                remove_tree_at(dst, n);
                exists = false;
            }
            if (!exists && ::mkdirat(dst, n.c_str(), st.st_mode & 07777) != 0)
                throw_errno("cannot create", n, errno);
            ::fchownat(dst, n.c_str(), st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW);
            ::fchmodat(dst, n.c_str(), st.st_mode & 07777, 0);
            Fd d(::openat(dst, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
            if (s && d) apply_layer(s.get(), d.get());
            struct timespec ts[2] = {st.st_atim, st.st_mtim};
            ::utimensat(dst, n.c_str(), ts, AT_SYMLINK_NOFOLLOW);
            continue;
        }
        if (exists) remove_tree_at(dst, n);
        if (::linkat(src, n.c_str(), dst, n.c_str(), 0) != 0) throw_errno("cannot link", n, errno);
    }
}

}  // namespace

// The lowest `count` layers of img merged into one directory, cached by the chain ID of the top
// one, so an image deeper than laminafs's 128 lowers still mounts. Called under the store lock.
std::string Store::squash_lowest(const ImageRecord& img, size_t count) {
    Layout l{root_};
    std::string key = img.layers[count - 1].chain_id;
    {
        Stmt st(*db_, "SELECT link FROM squashes WHERE id = ?");
        st.bind(1, key);
        if (st.step()) return st.text(0);
    }
    std::string staging = make_staging_dir(l, "squash");
    make_dirs(staging + "/diff", 0755);
    {
        Fd dst(::open((staging + "/diff").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        for (size_t i = 0; i < count; ++i) {
            Fd src(::open(layer_dir(img.layers[i].chain_id).c_str(),
                          O_RDONLY | O_DIRECTORY | O_CLOEXEC));
            if (!src) throw_errno("cannot open layer", layer_dir(img.layers[i].chain_id), errno);
            apply_layer(src.get(), dst.get());
        }
    }
    std::string link = new_link_name();
    std::string dest = l.squashes() + "/" + digest_hex(key);
    if (::rename(staging.c_str(), dest.c_str()) != 0)
        throw_errno("cannot move squashed layer into", dest, errno);
    std::string target = "../squash/" + digest_hex(key) + "/diff";
    if (::symlink(target.c_str(), (l.links() + "/" + link).c_str()) != 0)
        throw_errno("cannot create link", l.links() + "/" + link, errno);
    Transaction tx(*db_);
    Stmt(*db_, "INSERT INTO squashes(id, link, layers, created) VALUES(?, ?, ?, ?)")
        .bind(1, key)
        .bind(2, link)
        .bind(3, static_cast<int64_t>(count))
        .bind(4, now_seconds())
        .run();
    tx.commit();
    return link;
}

}  // namespace lamina::store
