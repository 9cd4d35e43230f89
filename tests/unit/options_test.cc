// Mount option parsing and layer-set validation: what mount(8), mount.fuse3 and podman pass us.
#include "options.h"

#include <ftw.h>
#include <gtest/gtest.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "needs.h"
#include "scoped_env.h"

using lamina::MountOptions;
using lamina::test::ScopedEnv;

namespace {

int remove_entry(const char* path, const struct stat*, int, struct FTW*) {
    remove(path);
    return 0;
}

// A temp directory (under base, default $TMPDIR or /tmp) removed with its contents.
class ScratchDir {
public:
    explicit ScratchDir(std::string base = "") {
        if (base.empty()) {
            const char* tmp = getenv("TMPDIR");
            base = tmp && *tmp ? tmp : "/tmp";
        }
        std::string templ = base + "/options_test.XXXXXX";
        std::vector<char> buf(templ.begin(), templ.end());
        buf.push_back('\0');
        if (!mkdtemp(buf.data())) {
            ADD_FAILURE() << "mkdtemp " << templ << ": " << strerror(errno);
            return;
        }
        char resolved[PATH_MAX];
        path_ = realpath(buf.data(), resolved) ? resolved : buf.data();
    }
    ~ScratchDir() {
        if (!path_.empty()) nftw(path_.c_str(), remove_entry, 32, FTW_DEPTH | FTW_PHYS);
    }
    ScratchDir(const ScratchDir&) = delete;
    ScratchDir& operator=(const ScratchDir&) = delete;

    const std::string& path() const { return path_; }
    // Creates (if needed) and returns the subdirectory rel.
    std::string dir(const std::string& rel) const {
        std::string p = path_ + "/" + rel;
        if (mkdir(p.c_str(), 0755) != 0 && errno != EEXIST) {
            ADD_FAILURE() << "mkdir " << p << ": " << strerror(errno);
        }
        return p;
    }

private:
    std::string path_;
};

// Restores the working directory on scope exit.
class CwdGuard {
public:
    CwdGuard() {
        char buf[PATH_MAX];
        if (getcwd(buf, sizeof buf)) saved_ = buf;
    }
    ~CwdGuard() {
        if (!saved_.empty() && chdir(saved_.c_str()) != 0) ADD_FAILURE() << "chdir back failed";
    }

private:
    std::string saved_;
};

std::string parse_args(std::vector<std::string> args, MountOptions& opts) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    return lamina::parse_command_line(static_cast<int>(args.size()), argv.data(), opts);
}

std::string apply_opts(const std::string& optstr, MountOptions& opts) {
    return lamina::apply_mount_options(optstr, opts);
}

void expect_one_line(const std::string& err) {
    EXPECT_FALSE(err.empty());
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
}

// Options with a valid lower/upper/work/mountpoint set inside dir.
MountOptions valid_set(const ScratchDir& dir) {
    MountOptions opts;
    opts.lowerdirs = {dir.dir("lower")};
    opts.upperdir = dir.dir("upper");
    opts.workdir = dir.dir("work");
    opts.mountpoint = dir.dir("mnt");
    return opts;
}

// --- lowerdir splitting and -o escaping ---

TEST(Options, LowerdirSplitsOnColonTopLayerFirst) {
    EXPECT_EQ(lamina::split_lowerdir("/a:/b:/c"), (std::vector<std::string>{"/a", "/b", "/c"}));
}

TEST(Options, LowerdirEscapedColonStaysInName) {
    EXPECT_EQ(lamina::split_lowerdir(R"(/a\:b:/c)"), (std::vector<std::string>{"/a:b", "/c"}));
}

TEST(Options, LowerdirEscapedBackslashIsOneBackslash) {
    EXPECT_EQ(lamina::split_lowerdir(R"(/a\\:/b)"), (std::vector<std::string>{"/a\\", "/b"}));
    EXPECT_EQ(lamina::split_lowerdir(R"(/a\\\:b)"), (std::vector<std::string>{"/a\\:b"}));
}

TEST(Options, LowerdirEscapesSurviveTheOptionString) {
    MountOptions opts;
    ASSERT_EQ(apply_opts(R"(lowerdir=/x\:y:/z\\,ro)", opts), "");
    EXPECT_EQ(opts.lowerdirs, (std::vector<std::string>{"/x:y", "/z\\"}));
    EXPECT_TRUE(opts.read_only);
}

TEST(Options, EscapedCommaStaysInValue) {
    MountOptions opts;
    ASSERT_EQ(apply_opts(R"(lowerdir=/a\,b:/c,upperdir=/u\,v,workdir=/w)", opts), "");
    EXPECT_EQ(opts.lowerdirs, (std::vector<std::string>{"/a,b", "/c"}));
    EXPECT_EQ(opts.upperdir, "/u,v");
    EXPECT_EQ(opts.workdir, "/w");
}

TEST(Options, LowerdirDataOnlySeparatorRefused) {
    MountOptions opts;
    std::string err = apply_opts("lowerdir=/a::/b", opts);
    expect_one_line(err);
    EXPECT_NE(err.find("'::'"), std::string::npos) << err;
}

TEST(Options, LowerdirEmptyLayerRefused) {
    MountOptions opts;
    expect_one_line(apply_opts("lowerdir=/a:", opts));
    expect_one_line(apply_opts("lowerdir=:/a", opts));
    expect_one_line(apply_opts("lowerdir=", opts));
}

TEST(Options, LaterLowerdirReplacesEarlier) {
    MountOptions opts;
    ASSERT_EQ(apply_opts("lowerdir=/a:/b", opts), "");
    ASSERT_EQ(apply_opts("lowerdir=/c", opts), "");
    EXPECT_EQ(opts.lowerdirs, (std::vector<std::string>{"/c"}));
}

// --- which options are accepted ---

TEST(Options, TrailingCommaAndEmptyItemsIgnored) {
    MountOptions opts;
    ASSERT_EQ(apply_opts("lowerdir=/a:/b,upperdir=/u,workdir=/w,", opts), "");
    EXPECT_EQ(opts.lowerdirs, (std::vector<std::string>{"/a", "/b"}));
    EXPECT_EQ(opts.upperdir, "/u");
    EXPECT_EQ(opts.workdir, "/w");
    EXPECT_EQ(apply_opts(",,ro,,", opts), "");
    EXPECT_EQ(apply_opts("", opts), "");
}

TEST(Options, MountHelperOptionsAccepted) {
    MountOptions opts;
    EXPECT_EQ(
        apply_opts("defaults,auto,noauto,user,users,nouser,owner,group,nofail,_netdev,"
                   "x-systemd.automount,x-systemd.requires=foo.mount,comment=systemd.automount,"
                   "sync,async,dirsync,lazytime,nolazytime,"
                   "context=system_u:object_r:container_file_t:s0,rw,dev,suid,exec,atime",
                   opts),
        "");
    EXPECT_FALSE(opts.read_only);
}

TEST(Options, KernelOverlayFlagsSetTheirFields) {
    MountOptions opts;
    ASSERT_EQ(apply_opts("lowerdir=/l,ro,userxattr,allow_other,allow_root,default_permissions,"
                         "noatime,nodev,nosuid,noexec,redirect_dir=nofollow,log_level=trace,"
                         "threads=4,fsname=myfs",
                         opts),
              "");
    EXPECT_TRUE(opts.read_only);
    EXPECT_TRUE(opts.userxattr);
    EXPECT_TRUE(opts.allow_other);
    EXPECT_TRUE(opts.allow_root);
    EXPECT_TRUE(opts.default_permissions);
    EXPECT_TRUE(opts.noatime);
    EXPECT_TRUE(opts.nodev);
    EXPECT_TRUE(opts.nosuid);
    EXPECT_TRUE(opts.noexec);
    EXPECT_EQ(opts.redirect_dir, lamina::RedirectDir::NoFollow);
    EXPECT_EQ(opts.log_level, "trace");
    EXPECT_EQ(opts.threads, 4u);
    EXPECT_EQ(opts.source, "myfs");

    ASSERT_EQ(apply_opts("rw,relatime,dev,suid,exec,redirect_dir=off,source=other", opts), "");
    EXPECT_FALSE(opts.read_only);
    EXPECT_FALSE(opts.noatime);
    EXPECT_FALSE(opts.nodev);
    EXPECT_FALSE(opts.nosuid);
    EXPECT_FALSE(opts.noexec);
    EXPECT_EQ(opts.redirect_dir, lamina::RedirectDir::Off);
    EXPECT_EQ(opts.source, "other");
}

TEST(Options, PodmanOptionsAcceptedAndStored) {
    MountOptions opts;
    ASSERT_EQ(apply_opts("uidmapping=0:1000:1:1:100000:65536,gidmapping=0:1000:1,squash_to_uid=7,"
                         "squash_to_gid=8,squash_to_root,static_nlink,noacl,xino=off,fsync=0,"
                         "index=off,metacopy=off,volatile",
                         opts),
              "");
    EXPECT_EQ(opts.uidmapping, "0:1000:1:1:100000:65536");
    ASSERT_EQ(opts.uid_map.size(), 2u);
    EXPECT_EQ(opts.uid_map[1].container, 1u);
    EXPECT_EQ(opts.uid_map[1].host, 100000u);
    EXPECT_EQ(opts.uid_map[1].size, 65536u);
    EXPECT_EQ(opts.gidmapping, "0:1000:1");
    ASSERT_EQ(opts.gid_map.size(), 1u);
    EXPECT_EQ(opts.squash_to_uid, 7u);
    EXPECT_EQ(opts.squash_to_gid, 8u);
    EXPECT_TRUE(opts.squash_to_root);
    EXPECT_TRUE(opts.static_nlink);
    EXPECT_TRUE(opts.noacl);
    EXPECT_EQ(opts.xino, lamina::Xino::Off);
    EXPECT_FALSE(opts.fsync);
    EXPECT_TRUE(opts.volatile_mount);
}

TEST(Options, MalformedUidmappingRefused) {
    for (const char* bad : {"0:1000", "0:1000:1:2", "a:b:c", "0:-1:1", "", "0::1", "0:1000:1:",
                            "0:1000:0", "4294967295:0:2", " 0:1:1", "0:1:99999999999"}) {
        MountOptions opts;
        std::string err = apply_opts(std::string("uidmapping=") + bad, opts);
        expect_one_line(err);
        EXPECT_NE(err.find("uidmapping"), std::string::npos) << err;
    }
    MountOptions opts;
    expect_one_line(apply_opts("gidmapping=1:2", opts));
}

TEST(Options, UnknownOptionRefusedNamingIt) {
    MountOptions opts;
    EXPECT_EQ(apply_opts("lowerdir=/a,frobnicate,ro", opts), "unknown mount option 'frobnicate'");
    EXPECT_EQ(apply_opts("frob=1", opts), "unknown mount option 'frob'");
}

TEST(Options, FlagGivenAValueRefused) {
    MountOptions opts;
    std::string err = apply_opts("ro=1", opts);
    expect_one_line(err);
    EXPECT_NE(err.find("'ro'"), std::string::npos) << err;
}

TEST(Options, BadValuesRefusedNamingTheOption) {
    for (const char* bad : {"redirect_dir=maybe", "log_level=loud", "threads=x", "threads=-1",
                            "xino=sometimes", "fsync=2", "index=on", "metacopy=on",
                            "squash_to_uid=root", "upperdir=", "workdir=", "passthrough=yes"}) {
        MountOptions opts;
        std::string err = apply_opts(bad, opts);
        expect_one_line(err);
        std::string name(bad, std::string_view(bad).find('='));
        EXPECT_NE(err.find(name), std::string::npos) << bad << " -> " << err;
    }
}

// Both fast paths are on by default where they can be had (auto), and each can be asked for
// (on: warn when unavailable) or refused (off), as a bare word or with a value.
TEST(Options, FastPathsAreAutoUnlessSetOtherwise) {
    for (const char* name : {"passthrough", "io_uring"}) {
        SCOPED_TRACE(name);
        MountOptions opts;
        lamina::Want& want =
            std::string_view(name) == "passthrough" ? opts.passthrough : opts.io_uring;
        EXPECT_EQ(want, lamina::Want::Auto);
        ASSERT_EQ(apply_opts(name, opts), "");
        EXPECT_EQ(want, lamina::Want::On);
        ASSERT_EQ(apply_opts(std::string("no") + name, opts), "");
        EXPECT_EQ(want, lamina::Want::Off);
        ASSERT_EQ(apply_opts(std::string(name) + "=auto", opts), "");
        EXPECT_EQ(want, lamina::Want::Auto);
        ASSERT_EQ(apply_opts(std::string(name) + "=off", opts), "");
        EXPECT_EQ(want, lamina::Want::Off);
        ASSERT_EQ(apply_opts(std::string(name) + "=on", opts), "");
        EXPECT_EQ(want, lamina::Want::On);
        std::string err = apply_opts(std::string(name) + "=maybe", opts);
        EXPECT_NE(err.find("expected on, off or auto"), std::string::npos) << err;
    }
}

TEST(Options, DirCacheEntriesSetsTheListingCacheLimit) {
    MountOptions opts;
    EXPECT_EQ(opts.dir_cache_entries, 1'000'000u);
    ASSERT_EQ(apply_opts("dir_cache_entries=0", opts), "");
    EXPECT_EQ(opts.dir_cache_entries, 0u);
    ASSERT_EQ(apply_opts("dir_cache_entries=50000", opts), "");
    EXPECT_EQ(opts.dir_cache_entries, 50000u);
    for (const char* bad :
         {"dir_cache_entries=", "dir_cache_entries=-1", "dir_cache_entries=lots"}) {
        std::string err = apply_opts(bad, opts);
        EXPECT_NE(err.find("dir_cache_entries"), std::string::npos) << bad << " -> " << err;
    }
}

TEST(Options, NfsExportAndHandleCacheSetHowLongFileHandlesLast) {
    MountOptions opts;
    EXPECT_TRUE(opts.nfs_export);
    EXPECT_EQ(opts.handle_cache, 16384u);
    ASSERT_EQ(apply_opts("nfs_export=off,handle_cache=0", opts), "");
    EXPECT_FALSE(opts.nfs_export);
    EXPECT_EQ(opts.handle_cache, 0u);
    ASSERT_EQ(apply_opts("nfs_export=on,handle_cache=100000", opts), "");
    EXPECT_TRUE(opts.nfs_export);
    EXPECT_EQ(opts.handle_cache, 100000u);
    for (const char* bad : {"nfs_export=yes", "nfs_export", "handle_cache=-1",
                            "handle_cache=99999999", "handle_cache="}) {
        std::string err = apply_opts(bad, opts);
        EXPECT_FALSE(err.empty()) << bad;
        EXPECT_EQ(err.find('\n'), std::string::npos) << err;
    }
}

TEST(Options, ReadaheadTakesKibibytes) {
    MountOptions opts;
    EXPECT_EQ(opts.readahead_kib, 1024u);
    ASSERT_EQ(apply_opts("readahead=0", opts), "");
    EXPECT_EQ(opts.readahead_kib, 0u);
    ASSERT_EQ(apply_opts("readahead=8192", opts), "");
    EXPECT_EQ(opts.readahead_kib, 8192u);
    for (const char* bad : {"readahead=", "readahead=-1", "readahead=1M", "readahead=70000"}) {
        std::string err = apply_opts(bad, opts);
        EXPECT_NE(err.find("readahead="), std::string::npos) << bad << " -> " << err;
    }
}

// Found by options_fuzzer: an option name with a newline made a two-line error.
TEST(Options, ErrorsStayOneLineWhateverTheInputHolds) {
    MountOptions opts;
    std::string err = apply_opts("sqsquas\n\no_gidopy=on", opts);
    expect_one_line(err);
    EXPECT_NE(err.find("\\x0a"), std::string::npos) << err;
    err = apply_opts("threads=1\r\n2", opts);
    expect_one_line(err);
    EXPECT_EQ(err.find('\r'), std::string::npos) << err;
}

// --- the command line ---

TEST(Options, ArgvOptionsThenMountpoint) {
    MountOptions opts;
    ASSERT_EQ(parse_args({"laminafs", "-o", "lowerdir=/a:/b", "/mnt/x"}, opts), "");
    EXPECT_EQ(opts.mountpoint, "/mnt/x");
    EXPECT_EQ(opts.lowerdirs, (std::vector<std::string>{"/a", "/b"}));
    EXPECT_EQ(opts.source, "laminafs");
    EXPECT_FALSE(opts.foreground);
    EXPECT_FALSE(opts.debug);
}

TEST(Options, ArgvSourceMountpointThenOptionsLikeMountFuse) {
    MountOptions opts;
    ASSERT_EQ(parse_args({"laminafs", "mysrc", "/mnt/x", "-o", "rw,lowerdir=/a"}, opts), "");
    EXPECT_EQ(opts.source, "mysrc");
    EXPECT_EQ(opts.mountpoint, "/mnt/x");
    EXPECT_EQ(opts.lowerdirs, (std::vector<std::string>{"/a"}));
}

TEST(Options, ArgvFsnameOptionOverridesSource) {
    MountOptions opts;
    ASSERT_EQ(parse_args({"laminafs", "src", "/m", "-o", "lowerdir=/a,fsname=named"}, opts), "");
    EXPECT_EQ(opts.source, "named");
}

TEST(Options, ArgvDebugImpliesForegroundAndDebugLogs) {
    MountOptions opts;
    ASSERT_EQ(parse_args({"laminafs", "-f", "-d", "-o", "lowerdir=/a", "/m"}, opts), "");
    EXPECT_TRUE(opts.foreground);
    EXPECT_TRUE(opts.debug);
    EXPECT_EQ(opts.log_level, "debug");

    MountOptions only_d;
    ASSERT_EQ(parse_args({"laminafs", "-d", "-o", "lowerdir=/a", "/m"}, only_d), "");
    EXPECT_TRUE(only_d.foreground);
}

TEST(Options, ArgvGroupedAndAttachedShortOptions) {
    MountOptions opts;
    ASSERT_EQ(parse_args({"laminafs", "-fd", "-olowerdir=/a", "/m"}, opts), "");
    EXPECT_TRUE(opts.foreground);
    EXPECT_TRUE(opts.debug);
    EXPECT_EQ(opts.lowerdirs, (std::vector<std::string>{"/a"}));
}

TEST(Options, ArgvRepeatedDashOAccumulates) {
    MountOptions opts;
    ASSERT_EQ(parse_args({"laminafs", "-o", "lowerdir=/a", "-o", "upperdir=/u,workdir=/w", "/m",
                          "-o", "ro"},
                         opts),
              "");
    EXPECT_EQ(opts.lowerdirs, (std::vector<std::string>{"/a"}));
    EXPECT_EQ(opts.upperdir, "/u");
    EXPECT_EQ(opts.workdir, "/w");
    EXPECT_TRUE(opts.read_only);
}

TEST(Options, ArgvDashOKeepsCommasAndEscapes) {
    MountOptions opts;
    ASSERT_EQ(parse_args({"laminafs", "-o", R"(lowerdir=/a\,b:/c\:d,)", "/m,n"}, opts), "");
    EXPECT_EQ(opts.lowerdirs, (std::vector<std::string>{"/a,b", "/c:d"}));
    EXPECT_EQ(opts.mountpoint, "/m,n");
}

TEST(Options, ArgvVersionAndHelpNeedNoMountpoint) {
    MountOptions v;
    ASSERT_EQ(parse_args({"laminafs", "--version"}, v), "");
    EXPECT_TRUE(v.show_version);
    MountOptions short_v;
    ASSERT_EQ(parse_args({"laminafs", "-V"}, short_v), "");
    EXPECT_TRUE(short_v.show_version);
    MountOptions h;
    ASSERT_EQ(parse_args({"laminafs", "-h"}, h), "");
    EXPECT_TRUE(h.show_help);
    EXPECT_NE(lamina::usage_text("laminafs").find("MOUNTPOINT"), std::string::npos);
}

TEST(Options, ArgvMistakesRefusedInOneLine) {
    MountOptions a, b, c, d;
    expect_one_line(parse_args({"laminafs", "-o", "lowerdir=/a"}, a));
    expect_one_line(parse_args({"laminafs", "s", "/m", "extra"}, b));
    std::string unknown_flag = parse_args({"laminafs", "-z", "/m"}, c);
    expect_one_line(unknown_flag);
    EXPECT_NE(unknown_flag.find("'z'"), std::string::npos) << unknown_flag;
    EXPECT_EQ(parse_args({"laminafs", "-o", "lowerdir=/a,nope", "/m"}, d),
              "unknown mount option 'nope'");
}

// --- validation against the filesystem ---

TEST(Options, ValidSetResolvesAndStaysWritable) {
    ScratchDir dir;
    MountOptions opts = valid_set(dir);
    ASSERT_EQ(lamina::validate_mount_options(opts), "");
    EXPECT_FALSE(opts.read_only);
}

TEST(Options, NoLowerdirRefused) {
    ScratchDir dir;
    MountOptions opts = valid_set(dir);
    opts.lowerdirs.clear();
    std::string err = lamina::validate_mount_options(opts);
    expect_one_line(err);
    EXPECT_NE(err.find("lowerdir"), std::string::npos) << err;
}

TEST(Options, Accepts128LowerLayersRefuses129) {
    ScratchDir dir;
    MountOptions opts;
    opts.mountpoint = dir.dir("mnt");
    for (int i = 0; i < 129; ++i) opts.lowerdirs.push_back(dir.dir("l" + std::to_string(i)));

    MountOptions too_many = opts;
    EXPECT_EQ(lamina::validate_mount_options(too_many), "too many lower layers: 129 (at most 128)");

    opts.lowerdirs.pop_back();
    EXPECT_EQ(lamina::validate_mount_options(opts), "");
    EXPECT_EQ(opts.lowerdirs.size(), 128u);
}

TEST(Options, RelativePathsResolvedAgainstCwd) {
    ScratchDir dir;
    for (const char* d : {"l1", "l2", "u", "w", "m"}) dir.dir(d);
    CwdGuard cwd;
    ASSERT_EQ(chdir(dir.path().c_str()), 0);
    MountOptions opts;
    ASSERT_EQ(parse_args({"laminafs", "-o", "lowerdir=l1:./l2,upperdir=u,workdir=w/", "m"}, opts),
              "");
    ASSERT_EQ(lamina::validate_mount_options(opts), "");
    EXPECT_EQ(opts.lowerdirs, (std::vector<std::string>{dir.path() + "/l1", dir.path() + "/l2"}));
    EXPECT_EQ(opts.upperdir, dir.path() + "/u");
    EXPECT_EQ(opts.workdir, dir.path() + "/w");
    EXPECT_EQ(opts.mountpoint, dir.path() + "/m");
}

TEST(Options, MissingLowerdirNamesPathAndReason) {
    ScratchDir dir;
    MountOptions opts = valid_set(dir);
    std::string missing = dir.path() + "/x/y";
    opts.lowerdirs.push_back(missing);
    EXPECT_EQ(lamina::validate_mount_options(opts),
              "lowerdir '" + missing + "': No such file or directory");
}

TEST(Options, LowerdirThatIsAFileRefused) {
    ScratchDir dir;
    MountOptions opts = valid_set(dir);
    std::string file = dir.path() + "/file";
    std::ofstream(file) << "x";
    opts.lowerdirs = {file};
    EXPECT_EQ(lamina::validate_mount_options(opts), "lowerdir '" + file + "': Not a directory");
}

TEST(Options, NoUpperdirMeansReadOnly) {
    ScratchDir dir;
    MountOptions opts;
    opts.lowerdirs = {dir.dir("a"), dir.dir("b")};
    opts.mountpoint = dir.dir("mnt");
    ASSERT_EQ(lamina::validate_mount_options(opts), "");
    EXPECT_TRUE(opts.read_only);
}

TEST(Options, UpperdirWithoutWorkdirRefused) {
    ScratchDir dir;
    MountOptions opts = valid_set(dir);
    opts.workdir.clear();
    std::string err = lamina::validate_mount_options(opts);
    expect_one_line(err);
    EXPECT_NE(err.find("workdir"), std::string::npos) << err;

    MountOptions work_only = valid_set(dir);
    work_only.upperdir.clear();
    err = lamina::validate_mount_options(work_only);
    expect_one_line(err);
    EXPECT_NE(err.find("upperdir"), std::string::npos) << err;
}

TEST(Options, UpperdirInsideLowerdirRefused) {
    ScratchDir dir;
    MountOptions opts = valid_set(dir);
    opts.upperdir = dir.dir("lower/upper");
    EXPECT_EQ(lamina::validate_mount_options(opts),
              "upperdir '" + opts.upperdir + "' is inside lowerdir '" + dir.path() + "/lower'");
}

TEST(Options, UpperdirContainingOrEqualToLowerdirRefused) {
    ScratchDir dir;
    MountOptions contains = valid_set(dir);
    contains.lowerdirs = {dir.dir("upper/sub")};
    std::string err = lamina::validate_mount_options(contains);
    expect_one_line(err);
    EXPECT_NE(err.find("contains lowerdir"), std::string::npos) << err;

    MountOptions same = valid_set(dir);
    same.lowerdirs.push_back(same.upperdir);
    err = lamina::validate_mount_options(same);
    expect_one_line(err);
    EXPECT_NE(err.find("upperdir"), std::string::npos) << err;
}

TEST(Options, WorkdirInsideUpperdirRefused) {
    ScratchDir dir;
    MountOptions opts = valid_set(dir);
    opts.workdir = dir.dir("upper/work");
    std::string err = lamina::validate_mount_options(opts);
    expect_one_line(err);
    EXPECT_NE(err.find("inside upperdir"), std::string::npos) << err;

    MountOptions reverse = valid_set(dir);
    reverse.upperdir = dir.dir("work/upper");
    err = lamina::validate_mount_options(reverse);
    expect_one_line(err);
    EXPECT_NE(err.find("workdir"), std::string::npos) << err;
}

TEST(Options, WorkdirOnAnotherFilesystemRefused) {
    struct stat shm, tmp;
    if (stat("/dev/shm", &shm) != 0 || stat("/tmp", &tmp) != 0) {
        SKIP_NEEDING("separate-shm") << "needs /dev/shm and /tmp";
    }
    if (shm.st_dev == tmp.st_dev)
        SKIP_NEEDING("separate-shm") << "/dev/shm and /tmp share a filesystem";
    ScratchDir on_tmp("/tmp");
    ScratchDir on_shm("/dev/shm");
    MountOptions opts = valid_set(on_tmp);
    opts.workdir = on_shm.dir("work");
    EXPECT_EQ(lamina::validate_mount_options(opts),
              "workdir '" + opts.workdir + "' is on another filesystem than upperdir '" +
                  opts.upperdir + "'");
}

TEST(Options, MountpointMissingRefused) {
    ScratchDir dir;
    MountOptions opts = valid_set(dir);
    opts.mountpoint = dir.path() + "/nope";
    EXPECT_EQ(lamina::validate_mount_options(opts),
              "mountpoint '" + opts.mountpoint + "': No such file or directory");
}

TEST(Options, LazyLayersNameTheirHelperLayersAndBound) {
    MountOptions opts;
    EXPECT_EQ(opts.lazy_timeout, 30u);
    ASSERT_EQ(
        apply_opts("lazy_fetch=/usr/bin/lamina-lazy-fetch,lazy_layers=1:3,lazy_timeout=5", opts),
        "");
    EXPECT_EQ(opts.lazy_fetch, "/usr/bin/lamina-lazy-fetch");
    EXPECT_EQ(opts.lazy_layers, (std::vector<uint32_t>{1, 3}));
    EXPECT_EQ(opts.lazy_timeout, 5u);
    // none: no lazy layer, named or found.
    ASSERT_EQ(apply_opts("lazy_layers=none", opts), "");
    EXPECT_TRUE(opts.lazy_layers.empty());
    EXPECT_FALSE(opts.lazy_detect);
    ASSERT_EQ(apply_opts("lazy_layers=2", opts), "");
    EXPECT_TRUE(opts.lazy_detect);
    for (const char* bad : {"lazy_fetch=relative/helper", "lazy_layers=0", "lazy_layers=1::2",
                            "lazy_layers=top", "lazy_layers=129", "lazy_layers=",
                            "lazy_layers=none:1", "lazy_timeout=0", "lazy_timeout=3601"}) {
        std::string err = apply_opts(bad, opts);
        expect_one_line(err);
        std::string name(bad, std::string_view(bad).find('='));
        EXPECT_NE(err.find(name), std::string::npos) << bad << " -> " << err;
    }
}

// A store layer's tree, STORE/layers/NAME/diff, lazy when its record's source.json is there.
std::string store_layer(const ScratchDir& dir, const std::string& name, bool lazy) {
    dir.dir("layers");
    std::string layer = dir.dir("layers/" + name);
    if (lazy) {
        dir.dir("layers/" + name + "/lazy");
        std::ofstream(layer + "/lazy/source.json") << "{}";
    }
    return dir.dir("layers/" + name + "/diff");
}

TEST(Options, LazyStoreLayersAreFoundByTheRecordBesideTheirTree) {
    ScratchDir dir;
    std::string bin = dir.dir("bin");
    std::string fetcher = bin + "/lamina-lazy-fetch";
    std::ofstream(fetcher) << "#!/bin/sh\n";
    ASSERT_EQ(chmod(fetcher.c_str(), 0755), 0);
    ScopedEnv path("PATH", bin);
    std::string top = store_layer(dir, "top", true), middle = store_layer(dir, "middle", false),
                bottom = store_layer(dir, "bottom", true);
    // A lazy/source.json inside a layer, or beside a tree not called diff, makes nothing lazy.
    std::string other = dir.dir("other");
    dir.dir("other/lazy");
    std::ofstream(other + "/lazy/source.json") << "{}";
    dir.dir("layers/middle/diff/lazy");
    std::ofstream(middle + "/lazy/source.json") << "{}";

    MountOptions opts;
    opts.lowerdirs = {top, middle, other, bottom};
    opts.mountpoint = dir.dir("mnt");
    ASSERT_EQ(lamina::validate_mount_options(opts), "");
    EXPECT_EQ(opts.lazy_layers, (std::vector<uint32_t>{1, 4}));
    EXPECT_EQ(opts.lazy_fetch, fetcher);  // on PATH (none beside this test's binary)

    // Named ones are kept beside those found; a lazy_fetch= given is kept as it is.
    MountOptions named;
    ASSERT_EQ(apply_opts("lowerdir=" + top + ":" + middle + ":" + bottom +
                             ",lazy_layers=2,lazy_fetch=/opt/fetch",
                         named),
              "");
    named.mountpoint = opts.mountpoint;
    ASSERT_EQ(lamina::validate_mount_options(named), "");
    EXPECT_EQ(named.lazy_layers, (std::vector<uint32_t>{1, 2, 3}));
    EXPECT_EQ(named.lazy_fetch, "/opt/fetch");

    // none: no layer is lazy and no fetcher is looked for.
    MountOptions none;
    ASSERT_EQ(apply_opts("lowerdir=" + top + ",lazy_layers=none", none), "");
    none.mountpoint = opts.mountpoint;
    ScopedEnv no_path("PATH", dir.dir("empty"));
    ASSERT_EQ(lamina::validate_mount_options(none), "");
    EXPECT_TRUE(none.lazy_layers.empty());
    EXPECT_EQ(none.lazy_fetch, "");

    // No fetcher to be found: refused in one line naming the lazy layer.
    MountOptions lost;
    lost.lowerdirs = {middle, bottom};
    lost.mountpoint = opts.mountpoint;
    std::string err = lamina::validate_mount_options(lost);
    expect_one_line(err);
    EXPECT_EQ(err.find("lowerdir '" + bottom + "' is a lazy layer and no fetcher was found"), 0u)
        << err;
    // Nor for a layer named lazy, and a number past the last lower is refused.
    MountOptions named_lost;
    named_lost.lowerdirs = {middle};
    named_lost.lazy_layers = {1};
    named_lost.mountpoint = opts.mountpoint;
    EXPECT_NE(lamina::validate_mount_options(named_lost).find("no fetcher"), std::string::npos);
    MountOptions past;
    past.lowerdirs = {middle};
    past.lazy_layers = {2};
    past.lazy_fetch = "/opt/fetch";
    past.mountpoint = opts.mountpoint;
    EXPECT_EQ(lamina::validate_mount_options(past),
              "lazy_layers: layer 2 is past the last lower layer (1)");
}

}  // namespace
