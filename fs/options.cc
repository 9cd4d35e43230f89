// Mount options: the command line, the -o string and the checks a layer set must pass.
#include "options.h"
#include "lazy_record.h"
#include "printable.h"
#include "program_path.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cxxopts.hpp>
#include <exception>
#include <initializer_list>
#include <utility>

namespace lamina {

namespace {

std::string quoted(std::string_view s) {
    return "'" + std::string(s) + "'";
}

// Splits the -o string on commas that are not escaped. "\," becomes ','; every other
// backslash pair is kept as it is, for lowerdir's own "\:" and "\\" escapes.
std::vector<std::string> split_option_items(std::string_view optstr) {
    std::vector<std::string> items(1);
    for (size_t i = 0; i < optstr.size(); ++i) {
        char c = optstr[i];
        if (c == '\\' && i + 1 < optstr.size()) {
            if (optstr[i + 1] != ',') items.back() += c;
            items.back() += optstr[++i];
        } else if (c == ',') {
            items.emplace_back();
        } else {
            items.back() += c;
        }
    }
    return items;
}

// Removes backslash escapes from a single path value (upperdir=, workdir=).
std::string unescape_path(std::string_view value) {
    std::string out;
    for (size_t i = 0; i < value.size(); ++i) {
        if (value[i] == '\\' && i + 1 < value.size()) ++i;
        out += value[i];
    }
    return out;
}

bool parse_u32(std::string_view text, uint32_t& out) {
    if (text.empty()) return false;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out, 10);
    return ec == std::errc() && end == text.data() + text.size();
}

// Options mount(8), mount.fuse3 and fstab hand to every helper; they mean nothing to us.
bool is_ignored_option(std::string_view name, bool has_value) {
    static constexpr std::string_view kFlags[] = {
        "defaults",   "auto",     "noauto",     "user",       "users",         "nouser",
        "owner",      "group",    "nofail",     "_netdev",    "sync",          "async",
        "dirsync",    "lazytime", "nolazytime", "norelatime", "nostrictatime", "iversion",
        "noiversion", "mand",     "nomand",     "loud",       "silent",
    };
    static constexpr std::string_view kValued[] = {
        "comment",
        "context",
        "fscontext",
        "defcontext",
        "rootcontext",
        // The kernel's own FUSE options, which mount(8) hands back from /proc/mounts on a
        // remount; laminafs sets them itself when it mounts.
        "user_id",
        "group_id",
        "max_read",
        "blksize",
        "rootmode",
        "fd",
    };
    if (name.starts_with("x-")) return true;
    if (!has_value) {
        for (auto flag : kFlags) {
            if (name == flag) return true;
        }
        return false;
    }
    for (auto valued : kValued) {
        if (name == valued) return true;
    }
    return false;
}

std::string apply_lowerdir(std::string_view value, MountOptions& opts) {
    auto layers = split_lowerdir(value);
    for (size_t i = 0; i < layers.size(); ++i) {
        if (!layers[i].empty()) continue;
        if (layers.size() == 1) return "lowerdir: empty path";
        if (i > 0 && i + 1 < layers.size()) {
            return "lowerdir " + quoted(value) + ": '::' (data-only lower layers) is not supported";
        }
        return "lowerdir " + quoted(value) + ": empty layer path";
    }
    opts.lowerdirs = std::move(layers);
    return "";
}

// A "name" item: a flag with no value.
std::string apply_flag(std::string_view name, MountOptions& opts) {
    if (name == "ro") {
        opts.read_only = true;
    } else if (name == "rw") {
        opts.read_only = false;
    } else if (name == "userxattr") {
        opts.userxattr = true;
    } else if (name == "allow_other") {
        opts.allow_other = true;
    } else if (name == "allow_root") {
        opts.allow_root = true;
    } else if (name == "default_permissions") {
        opts.default_permissions = true;
    } else if (name == "noatime") {
        opts.noatime = true;
    } else if (name == "atime" || name == "relatime" || name == "strictatime") {
        opts.noatime = false;
        opts.strictatime = name == "strictatime";
    } else if (name == "nodiratime") {
        opts.nodiratime = true;
    } else if (name == "diratime") {
        opts.nodiratime = false;
    } else if (name == "remount") {
        opts.remount = true;
    } else if (name == "nodev") {
        opts.nodev = true;
    } else if (name == "dev") {
        opts.nodev = false;
    } else if (name == "nosuid") {
        opts.nosuid = true;
    } else if (name == "suid") {
        opts.nosuid = false;
    } else if (name == "noexec") {
        opts.noexec = true;
    } else if (name == "exec") {
        opts.noexec = false;
    } else if (name == "squash_to_root") {
        opts.squash_to_root = true;
    } else if (name == "static_nlink") {
        opts.static_nlink = true;
    } else if (name == "noacl") {
        opts.noacl = true;
    } else if (name == "passthrough") {
        opts.passthrough = Want::On;
    } else if (name == "nopassthrough") {
        opts.passthrough = Want::Off;
    } else if (name == "io_uring") {
        opts.io_uring = Want::On;
    } else if (name == "noio_uring") {
        opts.io_uring = Want::Off;
    } else if (name == "volatile") {
        opts.volatile_mount = true;
    } else if (!is_ignored_option(name, false)) {
        return "unknown mount option " + quoted(name);
    }
    return "";
}

// A value that is one of a few words: out takes the matching choice; else one line naming the
// option and the words it takes.
template <class T>
std::string apply_choice(std::string_view name, std::string_view value,
                         std::initializer_list<std::pair<std::string_view, T>> choices, T& out) {
    std::string words;
    size_t i = 0;
    for (const auto& [word, choice] : choices) {
        if (value == word) {
            out = choice;
            return "";
        }
        words += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + std::string(word);
        ++i;
    }
    return std::string(name) + "=" + std::string(value) + ": expected " + words;
}

std::string apply_log_level(std::string_view value, MountOptions& opts) {
    static constexpr std::string_view kLevels[] = {"trace", "debug", "info",
                                                   "warn",  "error", "off"};
    for (auto level : kLevels) {
        if (value == level) {
            opts.log_level = std::string(value);
            return "";
        }
    }
    return "log_level=" + std::string(value) + ": expected trace, debug, info, warn, error or off";
}

// A "name=N" item with N from 0 to max, or the error saying what was expected.
std::string apply_number(std::string_view name, std::string_view value, uint32_t max,
                         std::string_view expected, uint32_t& out) {
    uint32_t n = 0;
    if (!parse_u32(value, n) || n > max)
        return std::string(name) + "=" + std::string(value) + ": expected " + std::string(expected);
    out = n;
    return "";
}

// lazy_fetch=/abs/fetcher, lazy_layers=N[:N...] (lower numbers, 1 the top) or none,
// lazy_timeout=S.
std::string apply_lazy(std::string_view name, std::string_view value, MountOptions& opts) {
    if (name == "lazy_timeout") {
        std::string err =
            apply_number(name, value, 3600, "seconds from 1 to 3600", opts.lazy_timeout);
        if (err.empty() && opts.lazy_timeout == 0)
            return "lazy_timeout=0: expected seconds from 1 to 3600";
        return err;
    }
    if (name == "lazy_fetch") {
        if (value.empty() || value[0] != '/')
            return "lazy_fetch=" + std::string(value) + ": expected an absolute path";
        opts.lazy_fetch = std::string(value);
        return "";
    }
    opts.lazy_layers.clear();
    opts.lazy_detect = value != "none";
    if (!opts.lazy_detect) return "";
    for (size_t pos = 0; pos <= value.size();) {
        size_t colon = std::min(value.find(':', pos), value.size());
        uint32_t n = 0;
        if (!parse_u32(value.substr(pos, colon - pos), n) || n < 1 || n > kMaxLowerLayers)
            return "lazy_layers=" + std::string(value) +
                   ": expected lower layer numbers, 1:2:5, or none";
        opts.lazy_layers.push_back(n);
        pos = colon + 1;
    }
    return "";
}

// A "name=value" item.
std::string apply_valued(std::string_view name, std::string_view value, MountOptions& opts) {
    auto needs_value = [&]() { return "mount option " + quoted(name) + " needs a value"; };
    if (name == "lowerdir") return apply_lowerdir(value, opts);
    if (name == "upperdir" || name == "workdir") {
        if (value.empty()) return needs_value();
        (name == "upperdir" ? opts.upperdir : opts.workdir) = unescape_path(value);
        return "";
    }
    if (name == "redirect_dir") {
        return apply_choice<RedirectDir>(name, value,
                                         {{"on", RedirectDir::On},
                                          {"follow", RedirectDir::Follow},
                                          {"nofollow", RedirectDir::NoFollow},
                                          {"off", RedirectDir::Off}},
                                         opts.redirect_dir);
    }
    if (name == "lazy_fetch" || name == "lazy_layers" || name == "lazy_timeout")
        return apply_lazy(name, value, opts);
    if (name == "log_level") return apply_log_level(value, opts);
    if (name == "log_file") {
        if (value.empty()) return needs_value();
        opts.log_file = unescape_path(value);
        return "";
    }
    if (name == "threads")
        return apply_number(name, value, 1024, "a number from 0 to 1024", opts.threads);
    if (name == "readahead")
        return apply_number(name, value, 65536, "KiB from 0 to 65536", opts.readahead_kib);
    if (name == "dir_cache_entries")
        return apply_number(name, value, UINT32_MAX, "a number", opts.dir_cache_entries);
    if (name == "handle_cache")
        return apply_number(name, value, 1u << 24, "a number from 0 to 16777216",
                            opts.handle_cache);
    if (name == "fsname" || name == "source") {
        if (value.empty()) return needs_value();
        opts.source = std::string(value);
        return "";
    }
    if (name == "uidmapping" || name == "gidmapping") {
        bool uid = name == "uidmapping";
        std::vector<IdMapRange> ranges;
        if (auto err = parse_id_mapping(value, ranges); !err.empty()) {
            return std::string(name) + ": " + err;
        }
        (uid ? opts.uidmapping : opts.gidmapping) = std::string(value);
        (uid ? opts.uid_map : opts.gid_map) = std::move(ranges);
        return "";
    }
    if (name == "squash_to_uid" || name == "squash_to_gid") {
        uint32_t id = 0;
        if (!parse_u32(value, id)) {
            return std::string(name) + "=" + std::string(value) + ": expected a number";
        }
        (name == "squash_to_uid" ? opts.squash_to_uid : opts.squash_to_gid) = id;
        return "";
    }
    if (name == "xino") {
        return apply_choice<Xino>(
            name, value, {{"on", Xino::On}, {"off", Xino::Off}, {"auto", Xino::Auto}}, opts.xino);
    }
    if (name == "passthrough" || name == "io_uring") {
        return apply_choice<Want>(name, value,
                                  {{"on", Want::On}, {"off", Want::Off}, {"auto", Want::Auto}},
                                  name == "passthrough" ? opts.passthrough : opts.io_uring);
    }
    if (name == "fsync")
        return apply_choice<bool>(name, value, {{"0", false}, {"1", true}}, opts.fsync);
    if (name == "nfs_export")
        return apply_choice<bool>(name, value, {{"on", true}, {"off", false}}, opts.nfs_export);
    if (name == "index" || name == "metacopy") {
        if (value != "off")
            return std::string(name) + "=" + std::string(value) + " is not supported";
        return "";
    }
    if (is_ignored_option(name, true)) return "";
    MountOptions scratch;
    if (apply_flag(name, scratch).empty())
        return "mount option " + quoted(name) + " takes no value";
    return "unknown mount option " + quoted(name);
}

std::string errno_message(std::string_view what, std::string_view path, int err) {
    return std::string(what) + " " + quoted(path) + ": " + strerror(err);
}

// realpath plus "is a directory we can search". Returns "" or the error; path becomes absolute.
std::string resolve_directory(std::string_view what, std::string& path) {
    char resolved[PATH_MAX];
    if (!realpath(path.c_str(), resolved)) return errno_message(what, path, errno);
    struct stat st;
    if (stat(resolved, &st) != 0) return errno_message(what, path, errno);
    if (!S_ISDIR(st.st_mode)) return errno_message(what, path, ENOTDIR);
    if (access(resolved, X_OK) != 0) return errno_message(what, path, errno);
    path = resolved;
    return "";
}

}  // namespace

bool is_inside(const std::string& path, const std::string& dir) {
    if (dir == "/") return path.size() > 1 && path[0] == '/';
    return path.size() > dir.size() && path.compare(0, dir.size(), dir) == 0 &&
           path[dir.size()] == '/';
}

namespace {

// A resolved layer directory, as the overlap check compares it.
struct NamedDir {
    std::string_view what;  // "lowerdir", "upperdir", "workdir"
    const std::string& path;
    struct stat st;
};

// How two resolved directories overlap: "" when they are separate subtrees. One directory
// reached by two paths (a bind mount) is the same directory, as the kernel's per-inode traps
// see it. Nesting is seen along the paths, within one filesystem as the kernel sees it: a layer
// on a filesystem mounted inside another layer is apart from it (lowerdir=/:/dev/shm/x), since
// each layer is reached through a clone of its own mount only.
std::string overlap(const NamedDir& a, const NamedDir& b) {
    if (a.path == b.path || (a.st.st_dev == b.st.st_dev && a.st.st_ino == b.st.st_ino))
        return "is the same directory as";
    if (a.st.st_dev != b.st.st_dev) return "";
    if (is_inside(a.path, b.path)) return "is inside";
    if (is_inside(b.path, a.path)) return "contains";
    return "";
}

// Every layer, the upper and the work dir must be separate subtrees. The kernel refuses a lower
// that is, holds or lies inside another layer or the upper or work dir (ELOOP, "conflicting" or
// "overlapping lowerdir path") and nested upper and work dirs; an upper or work dir inside a
// lower it mounts, then fails lookups there with ELOOP. laminafs refuses all of them at start:
// each would show the overlay's own private state through the merged tree.
std::string check_overlapping_layers(const MountOptions& opts) {
    std::vector<NamedDir> dirs;
    dirs.reserve(opts.lowerdirs.size() + 2);
    if (!opts.workdir.empty()) dirs.push_back({"workdir", opts.workdir, {}});
    if (!opts.upperdir.empty()) dirs.push_back({"upperdir", opts.upperdir, {}});
    for (const auto& lower : opts.lowerdirs) dirs.push_back({"lowerdir", lower, {}});
    for (auto& d : dirs) {
        if (stat(d.path.c_str(), &d.st) != 0) return errno_message(d.what, d.path, errno);
    }
    for (size_t i = 0; i < dirs.size(); ++i) {
        for (size_t j = i + 1; j < dirs.size(); ++j) {
            if (auto how = overlap(dirs[i], dirs[j]); !how.empty()) {
                return std::string(dirs[i].what) + " " + quoted(dirs[i].path) + " " + how + " " +
                       std::string(dirs[j].what) + " " + quoted(dirs[j].path);
            }
        }
    }
    return "";
}

// The layer-set checks the kernel makes in ovl_fill_super, phrased for the user.
std::string check_upper_and_work(MountOptions& opts) {
    if (opts.upperdir.empty() && opts.workdir.empty()) return "";
    if (opts.workdir.empty()) return "upperdir " + quoted(opts.upperdir) + " given without workdir";
    if (opts.upperdir.empty()) return "workdir " + quoted(opts.workdir) + " given without upperdir";
    if (auto err = resolve_directory("upperdir", opts.upperdir); !err.empty()) return err;
    if (auto err = resolve_directory("workdir", opts.workdir); !err.empty()) return err;
    if (auto err = check_overlapping_layers(opts); !err.empty()) return err;
    struct stat upper_st, work_st;
    if (stat(opts.upperdir.c_str(), &upper_st) != 0) {
        return errno_message("upperdir", opts.upperdir, errno);
    }
    if (stat(opts.workdir.c_str(), &work_st) != 0) {
        return errno_message("workdir", opts.workdir, errno);
    }
    if (upper_st.st_dev != work_st.st_dev) {
        return "workdir " + quoted(opts.workdir) + " is on another filesystem than upperdir " +
               quoted(opts.upperdir);
    }
    if (access(opts.upperdir.c_str(), W_OK) != 0) {
        return errno_message("upperdir", opts.upperdir, errno);
    }
    if (access(opts.workdir.c_str(), W_OK) != 0) {
        return errno_message("workdir", opts.workdir, errno);
    }
    return "";
}

// cxxopts quotes names with U+2018/U+2019; a terminal in the C locale shows those as junk.
std::string ascii_quotes(std::string text) {
    for (std::string_view curly : {"\u2018", "\u2019"}) {
        for (size_t at = text.find(curly); at != std::string::npos; at = text.find(curly, at)) {
            text.replace(at, curly.size(), "'");
        }
    }
    return text;
}

cxxopts::Options make_cli(std::string_view program) {
    cxxopts::Options cli(std::string(program),
                         "lamina: an overlay (union) filesystem in user space");
    cli.custom_help("[-f] [-d] [-o OPTIONS]...");
    cli.positional_help("[SOURCE] MOUNTPOINT");
    // clang-format off
    cli.add_options()
        ("f", "stay in the foreground")
        ("d", "debug: foreground, log every operation")
        ("h,help", "show this help")
        ("V,version", "show the version")
        ("o", "mount options, comma separated (repeatable): lowerdir=DIR[:DIR...], "
              "upperdir=DIR, workdir=DIR, ro, redirect_dir=on|follow|nofollow|off, userxattr, "
              "allow_other, log_level=LEVEL, threads=N, fsname=NAME, ...",
         cxxopts::value<std::string>(), "OPTIONS");
    cli.add_options("positional")
        ("first", "", cxxopts::value<std::string>())
        ("second", "", cxxopts::value<std::string>());
    // clang-format on
    cli.parse_positional({"first", "second"});
    return cli;
}

}  // namespace

std::vector<std::string> split_lowerdir(std::string_view value) {
    std::vector<std::string> layers(1);
    for (size_t i = 0; i < value.size(); ++i) {
        char c = value[i];
        if (c == '\\' && i + 1 < value.size()) {
            layers.back() += value[++i];
        } else if (c == ':') {
            layers.emplace_back();
        } else {
            layers.back() += c;
        }
    }
    return layers;
}

std::string parse_id_mapping(std::string_view value, std::vector<IdMapRange>& ranges) {
    const std::string expected =
        quoted(value) + ": expected CONTAINER:HOST:SIZE[:CONTAINER:HOST:SIZE...]";
    std::vector<uint32_t> numbers;
    // containers/storage writes "uidmapping=:0:1000:1:..." (a separator before the first range).
    size_t start = value.starts_with(':') && value.size() > 1 ? 1 : 0;
    while (true) {
        size_t colon = value.find(':', start);
        std::string_view field = value.substr(
            start, colon == std::string_view::npos ? std::string_view::npos : colon - start);
        uint32_t n = 0;
        if (!parse_u32(field, n)) return expected;
        numbers.push_back(n);
        if (colon == std::string_view::npos) break;
        start = colon + 1;
    }
    if (numbers.size() % 3 != 0) return expected;
    ranges.clear();
    for (size_t i = 0; i < numbers.size(); i += 3) {
        IdMapRange range{numbers[i], numbers[i + 1], numbers[i + 2]};
        uint64_t limit = uint64_t{1} << 32;
        if (range.size == 0 || range.container + uint64_t{range.size} > limit ||
            range.host + uint64_t{range.size} > limit) {
            return quoted(value) + ": range " + std::to_string(range.container) + ":" +
                   std::to_string(range.host) + ":" + std::to_string(range.size) +
                   " is empty or runs past 2^32";
        }
        ranges.push_back(range);
    }
    return "";
}

// Errors echo what the user gave; what it holds (a newline, an escape sequence) must neither
// break the one line nor reach the terminal raw. The line itself is not cut.
static std::string one_line(const std::string& error) {
    return printable(error, std::string::npos);
}

std::string apply_mount_options(std::string_view optstr, MountOptions& opts) {
    for (const auto& item : split_option_items(optstr)) {
        if (item.empty()) continue;
        size_t eq = item.find('=');
        std::string err = eq == std::string::npos
                              ? apply_flag(item, opts)
                              : apply_valued(std::string_view(item).substr(0, eq),
                                             std::string_view(item).substr(eq + 1), opts);
        if (!err.empty()) return one_line(err);
    }
    return "";
}

std::string usage_text(std::string_view program) {
    return make_cli(program).help({""});
}

std::string parse_command_line(int argc, char** argv, MountOptions& opts) {
    std::string program = argc > 0 && argv[0] ? argv[0] : "laminafs";
    auto cli = make_cli(program);
    std::vector<std::string> option_strings;
    std::string first, second;
    try {
        auto result = cli.parse(argc, argv);
        if (!result.unmatched().empty()) {
            return one_line("unexpected argument " + quoted(result.unmatched().front()) +
                            " (usage: " + program + " [-o OPTIONS] [SOURCE] MOUNTPOINT)");
        }
        opts.foreground = result.count("f") > 0;
        opts.debug = result.count("d") > 0;
        opts.show_help = result.count("help") > 0;
        opts.show_version = result.count("version") > 0;
        // Every -o in order, read raw: cxxopts' own vector values would split on commas.
        for (const auto& kv : result.arguments()) {
            if (kv.key() == "o") option_strings.push_back(kv.value());
        }
        if (result.count("first")) first = result["first"].as<std::string>();
        if (result.count("second")) second = result["second"].as<std::string>();
    } catch (const std::exception& e) {
        return one_line("command line: " + ascii_quotes(e.what()));
    }
    if (opts.debug) {
        opts.foreground = true;
        opts.log_level = "debug";
    }
    if (second.empty()) {
        opts.mountpoint = first;
    } else {
        // mount.fuse3's form: SOURCE MOUNTPOINT; the source names the mount in /proc/mounts.
        opts.source = first;
        opts.mountpoint = second;
    }
    for (const auto& optstr : option_strings) {
        if (auto err = apply_mount_options(optstr, opts); !err.empty()) return err;
    }
    if (opts.show_help || opts.show_version) return "";
    if (opts.mountpoint.empty()) {
        return "missing mountpoint (usage: " + program + " [-o OPTIONS] [SOURCE] MOUNTPOINT)";
    }
    return "";
}

std::string validate_mount_options(MountOptions& opts) {
    if (opts.lowerdirs.empty()) return "no lowerdir given (use -o lowerdir=DIR[:DIR...])";
    if (opts.lowerdirs.size() > kMaxLowerLayers) {
        return "too many lower layers: " + std::to_string(opts.lowerdirs.size()) + " (at most " +
               std::to_string(kMaxLowerLayers) + ")";
    }
    for (auto& lower : opts.lowerdirs) {
        if (auto err = resolve_directory("lowerdir", lower); !err.empty()) return err;
    }
    if (auto err = check_upper_and_work(opts); !err.empty()) return err;
    if (opts.upperdir.empty()) {
        if (auto err = check_overlapping_layers(opts); !err.empty()) return err;
        opts.read_only = true;
    }
    if (opts.mountpoint.empty()) return "missing mountpoint";
    if (auto err = resolve_directory("mountpoint", opts.mountpoint); !err.empty()) return err;
    return find_lazy_layers(opts);
}

std::string find_lazy_layers(MountOptions& opts) {
    for (uint32_t n : opts.lazy_layers) {
        if (n > opts.lowerdirs.size())
            return "lazy_layers: layer " + std::to_string(n) + " is past the last lower layer (" +
                   std::to_string(opts.lowerdirs.size()) + ")";
    }
    if (opts.lazy_detect) {
        // Only the record beside a layer is read, never anything inside it: whoever mounts chose
        // the lowerdir, and the record lies outside the tree the mount shows.
        for (size_t i = 0; i < opts.lowerdirs.size(); ++i) {
            std::string layer = lazy_record::layer_of_tree(opts.lowerdirs[i]);
            auto n = static_cast<uint32_t>(i + 1);
            if (layer.empty() || !lazy_record::is_lazy(layer)) continue;
            if (std::find(opts.lazy_layers.begin(), opts.lazy_layers.end(), n) ==
                opts.lazy_layers.end())
                opts.lazy_layers.push_back(n);
        }
    }
    std::sort(opts.lazy_layers.begin(), opts.lazy_layers.end());
    if (opts.lazy_layers.empty() || !opts.lazy_fetch.empty()) return "";
    // Absolute: the daemon runs it after detaching into "/" (a PATH entry may be relative).
    char resolved[PATH_MAX];
    std::string found = find_program(nullptr, "lamina-lazy-fetch", "lamina-lazy-fetch");
    if (!found.empty() && realpath(found.c_str(), resolved)) {
        opts.lazy_fetch = resolved;
        return "";
    }
    uint32_t first = *std::min_element(opts.lazy_layers.begin(), opts.lazy_layers.end());
    return "lowerdir " + quoted(opts.lowerdirs[first - 1]) +
           " is a lazy layer and no fetcher was found (lamina-lazy-fetch beside laminafs or on "
           "PATH): give lazy_fetch=, or lazy_layers=none to read its placeholders as they are";
}

}  // namespace lamina
