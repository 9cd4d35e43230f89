// Opening the layer stack named by the mount options.
#include "layers.h"

#include <fcntl.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

namespace lamina {

namespace {

std::string open_layer(const std::string& path, const char* what, Layer& out) {
    auto failed = [&](const char* why) { return std::string(what) + " '" + path + "': " + why; };
    int fd = ::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return failed(std::strerror(errno));
    out.fd.reset(fd);
    struct stat st;
    if (fstat(fd, &st) != 0) return failed(std::strerror(errno));
    out.dev = st.st_dev;
    out.path = path;
    // The xattr calls reach the layer through /proc/self/fd (proc_fd_path); without /proc they
    // would fail on the first copy-up, so say so now.
    struct stat via_proc;
    if (stat(proc_fd_path(fd, "").c_str(), &via_proc) != 0 || via_proc.st_dev != st.st_dev ||
        via_proc.st_ino != st.st_ino)
        return failed("cannot reach it through /proc/self/fd (is /proc mounted?)");
    return "";
}

// True when the mount fd lies on is idmapped: /proc/self/mountinfo names it in the mount's own
// options. Read at start, while the mount is still attached (a detached one is not listed).
bool on_idmapped_mount(int fd) {
    struct statx stx;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &stx) != 0 || !(stx.stx_mask & STATX_MNT_ID))
        return false;
    std::ifstream in("/proc/self/mountinfo");
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream fields(line);
        uint64_t id = 0;
        std::string parent, devno, root, mountpoint, options;
        if (!(fields >> id >> parent >> devno >> root >> mountpoint >> options)) continue;
        if (id == stx.stx_mnt_id)
            return ("," + options + ",").find(",idmapped,") != std::string::npos;
    }
    return false;
}

}  // namespace

std::string LayerStack::open(const MountOptions& opts) {
    layers_.clear();
    layers_.resize(opts.lowerdirs.size() + 1);
    has_upper_ = !opts.upperdir.empty();
    if (has_upper_) {
        if (auto err = open_layer(opts.upperdir, "upperdir", layers_[0]); !err.empty()) return err;
        if (auto err = open_layer(opts.workdir, "workdir", work_); !err.empty()) return err;
    }
    for (size_t i = 0; i < opts.lowerdirs.size(); ++i) {
        if (auto err = open_layer(opts.lowerdirs[i], "lowerdir", layers_[i + 1]); !err.empty())
            return err;
        if (!opts.uid_map.empty() || !opts.gid_map.empty())
            layers_[i + 1].idmapped = on_idmapped_mount(layers_[i + 1].fd.get());
    }
    return "";
}

namespace {

int remove_entry(const char* path, const struct stat*, int type, struct FTW*) {
    (type == FTW_DP ? ::rmdir(path) : ::unlink(path));
    return 0;
}

}  // namespace

std::string LayerStack::prepare_work_dir() {
    std::string work = work_.path + "/work";
    if (mkdirat(work_.fd.get(), "work", 0700) != 0 && errno != EEXIST)
        return "workdir '" + work_.path + "': " + std::strerror(errno);
    // Leftovers of copy-ups a crash interrupted: never visible, safe to drop.
    nftw(proc_fd_path(work_.fd.get(), "work").c_str(), remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    if (mkdirat(work_.fd.get(), "work", 0700) != 0 && errno != EEXIST)
        return "workdir '" + work + "': " + std::strerror(errno);
    // Held from here on: copy-ups and whiteouts are made in this very directory.
    work_dir_.reset(openat(work_.fd.get(), "work", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!work_dir_) return "workdir '" + work + "': " + std::strerror(errno);
    return "";
}

std::string LayerStack::proc_path(LayerNo n, std::string_view rel) const {
    return proc_fd_path(layers_[n].fd.get(), rel);
}

std::string LayerStack::work_proc_path(std::string_view rel) const {
    return proc_fd_path(work_dir_.get(), rel);
}

}  // namespace lamina
