// lamina cp: the container side resolved beneath its root with openat2, the copy made by cp(1).
#include "container_copy.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <vector>

#include "cli.h"
#include "error.h"
#include "fsutil.h"
#include "process.h"
#include "streams.h"

namespace lamina::cli {
namespace {

using store::Fd;
using store::StoreError;

// A container path split into its directory and last name; "SRC/." and "/" have the name ".".
struct ContainerPath {
    std::string dir;   // relative to the root, "" for the root
    std::string name;  // "." for the directory itself
};

ContainerPath split_container_path(const std::string& path) {
    std::string p = path;
    bool contents = p.ends_with("/.") || p == "." || p == "/";
    while (p.size() > 1 && p.ends_with("/.")) p.resize(p.size() - 2);
    while (p.size() > 1 && p.ends_with("/")) p.pop_back();
    while (p.starts_with("/")) p.erase(0, 1);
    if (p.empty() || p == ".") return {"", "."};
    auto slash = p.rfind('/');
    ContainerPath out{slash == std::string::npos ? "" : p.substr(0, slash),
                      slash == std::string::npos ? p : p.substr(slash + 1)};
    if (contents) return {out.dir.empty() ? out.name : out.dir + "/" + out.name, "."};
    return out;
}

// Where the descriptor leads, as a path the copy can use (beneath the merged tree).
std::string real_path(const Fd& fd) {
    std::string link = "/proc/self/fd/" + std::to_string(fd.get());
    std::vector<char> buf(PATH_MAX + 1);
    ssize_t n = ::readlink(link.c_str(), buf.data(), buf.size() - 1);
    if (n < 0) throw StoreError("cannot read " + link + ": " + strerror(errno));
    return std::string(buf.data(), static_cast<size_t>(n));
}

class ContainerRoot {
public:
    ContainerRoot(const std::string& merged, const std::string& name) : name_(name) {
        root_ = Fd(::open(merged.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        if (!root_) throw StoreError("cannot open " + merged + ": " + strerror(errno));
    }
    // The host path of rel inside the container, symlinks resolved inside it; "" when rel is
    // not there.
    std::string resolve(const std::string& rel, bool must_exist) const {
        Fd fd = store::open_in_root_dir(root_.get(), rel.empty() ? "." : rel, O_PATH);
        if (!fd) {
            if (errno == ENOENT && !must_exist) return "";
            throw StoreError(name_ + ":/" + rel + ": " + strerror(errno));
        }
        return real_path(fd);
    }
    const std::string& name() const { return name_; }

private:
    std::string name_;
    Fd root_;
};

bool is_directory(const std::string& path) {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// cp -R -T from to: to is made as a copy of from (a directory's content merged into an existing
// directory). Symlinks below from are copied as links; follow_from follows from itself (-H), for
// host sources only: a container's are resolved inside it before they get here.
void run_copy(const std::string& from, const std::string& to, const CopyOptions& o,
              bool follow_from, const std::string& shown_from, const std::string& shown_to) {
    std::vector<std::string> argv = {"cp", "-R", "-T", follow_from ? "-H" : "-P"};
    argv.push_back(o.archive ? "--preserve=mode,ownership,timestamps,links,xattr"
                             : "--preserve=mode,timestamps,links");
    argv.insert(argv.end(), {"--", from, to});
    auto r = store::run_process(argv);
    if (r.status != 0) {
        std::string err = r.err.substr(0, r.err.find('\n'));
        if (err.starts_with("cp: ")) err = err.substr(4);
        throw StoreError("cannot copy " + shown_from + " to " + shown_to + ": " + err);
    }
}

// The host path of a copy's source in the container: resolved all the way for SRC/. and -L,
// else its directory resolved and its last name taken as it is.
std::string source_path(const ContainerRoot& root, const ContainerPath& p, const std::string& src,
                        const CopyOptions& o) {
    std::string from;
    if (p.name == "." || o.follow_link) {
        from = root.resolve(p.name == "." ? p.dir : p.dir + "/" + p.name, true);
    } else {
        from = root.resolve(p.dir, true) + "/" + p.name;
        struct stat st;
        if (::lstat(from.c_str(), &st) != 0)
            throw StoreError("no such file in container " + root.name() + ": " + src);
    }
    if (p.name == "." && !is_directory(from))
        throw StoreError("cannot copy " + root.name() + ":" + src + ": not a directory");
    return from;
}

}  // namespace

void copy_out_of_container(const std::string& merged, const std::string& name,
                           const std::string& src, const std::string& dest, const CopyOptions& o) {
    ContainerRoot root(merged, name);
    ContainerPath p = split_container_path(src);
    std::string from = source_path(root, p, src, o);
    // Under its own name: a followed link's, not its target's.
    std::string to = p.name != "." && is_directory(dest) ? dest + "/" + p.name : dest;
    run_copy(from, to, o, false, name + ":" + src, dest);
}

void copy_out_as_tar(const std::string& merged, const std::string& name, const std::string& src,
                     const CopyOptions& o) {
    ContainerRoot root(merged, name);
    ContainerPath p = split_container_path(src);
    write_tree_tar(source_path(root, p, src, o), "", p.name);
}

void copy_tar_into(const std::string& merged, const std::string& name, const std::string& dest,
                   const CopyOptions& o) {
    ContainerRoot root(merged, name);
    ContainerPath d = split_container_path(dest);
    std::string rel = d.name == "." ? d.dir : (d.dir.empty() ? d.name : d.dir + "/" + d.name);
    std::string to = root.resolve(rel, true);
    if (!is_directory(to))
        throw StoreError("cannot copy to " + name + ":" + dest + ": not a directory");
    unpack_stdin_beneath(to, o.archive, "cannot copy stdin to " + name + ":" + dest);
}

void copy_into_container(const std::string& src, const std::string& merged, const std::string& name,
                         const std::string& dest, const CopyOptions& o) {
    struct stat st;
    std::string source = src;
    bool contents = src.ends_with("/.");
    if ((o.follow_link ? ::stat(src.c_str(), &st) : ::lstat(src.c_str(), &st)) != 0)
        throw StoreError("cannot copy " + src + ": " + strerror(errno));
    ContainerRoot root(merged, name);
    ContainerPath d = split_container_path(dest);
    std::string rel = d.name == "." ? d.dir : (d.dir.empty() ? d.name : d.dir + "/" + d.name);
    std::string to = root.resolve(rel, false);
    std::string base = src;
    while (base.size() > 1 && base.ends_with("/")) base.pop_back();
    base = base.substr(base.rfind('/') + 1);
    if (to.empty()) {
        if (dest.ends_with("/"))
            throw StoreError("cannot copy to " + name + ":" + dest + ": no such directory");
        to = root.resolve(d.dir, true) + "/" + d.name;
    } else if (is_directory(to) && !contents) {
        to += "/" + base;
    }
    run_copy(source, to, o, o.follow_link, src, name + ":" + dest);
}

}  // namespace lamina::cli
