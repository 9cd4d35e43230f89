// A store whose filesystem is full: rm, rmi and system prune still work (the store keeps a
// reserve file it drops for them), and where even that room is gone every command fails in one
// line and leaves the store as it was.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>

#include "needs.h"
#include "store_fixture.h"

namespace lamina::test {
namespace {

// Fills the filesystem file is on to the last block.
void fill(const std::string& file) {
    run_shell("dd if=/dev/zero of='" + file + "' bs=4k 2>/dev/null; sync");
}

// The store's containers by name, sorted (ps lists those made in one second by ID).
std::string container_names(Lamina& lamina) {
    std::string names = out_of(lamina({"ps", "-a", "--format", "{{.Names}}"})) + "\n";
    std::vector<std::string> lines;
    for (size_t pos = 0, nl; (nl = names.find('\n', pos)) != std::string::npos; pos = nl + 1)
        lines.push_back(names.substr(pos, nl - pos + 1));
    std::sort(lines.begin(), lines.end());
    std::string out;
    for (const auto& l : lines) out += l;
    return out;
}

TEST(FullDisk, rm_rmi_and_prune_work_on_a_full_disk_and_nothing_breaks_the_store) {
    if (geteuid() != 0) SKIP_NEEDING("tmpfs") << "mounting a small tmpfs needs root";
    TempDir tmp("lamina-full");
    std::string fs = tmp / "fs";
    make_dirs(fs);
    ASSERT_EQ(run_command({"mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", fs}).status, 0);
    MountGuard guard(fs);
    write_file(tmp / "root.tar", make_tar({dir("etc"), file("etc/x", "x")}));
    Lamina lamina(fs + "/store");
    out_of(lamina({"import", tmp / "root.tar", "img:1"}));
    out_of(lamina({"tag", "img:1", "img:2"}));
    out_of(lamina({"create", "--name", "c1", "img:1"}));
    out_of(lamina({"create", "--name", "c2", "img:1"}));
    out_of(lamina({"create", "--name", "c3", "img:1"}));
    ASSERT_EQ(access((fs + "/store/space.reserve").c_str(), F_OK), 0);

    fill(fs + "/filler");
    auto r = lamina({"rm", "c1"});
    EXPECT_EQ(r.status, 0) << r.err;
    r = lamina({"rmi", "img:2"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(container_names(lamina), "c2\nc3\n");
    std::string before = out_of(lamina({"images", "-q", "--no-trunc"}));

    // The reserve is spent: every command, reads too, fails in one line until space is freed.
    fill(fs + "/filler2");
    for (std::vector<std::string> args :
         {std::vector<std::string>{"images"}, {"rm", "c2"}, {"system", "prune", "-f"}}) {
        r = lamina(args);
        EXPECT_EQ(r.status, 1) << args[0] << ": " << r.out;
        EXPECT_NE(r.err.find("the store's filesystem is full"), std::string::npos) << r.err;
        EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
    }
    ASSERT_EQ(unlink((fs + "/filler2").c_str()), 0);
    EXPECT_EQ(out_of(lamina({"images", "-q", "--no-trunc"})), before) << "the store is as it was";
    EXPECT_EQ(container_names(lamina), "c2\nc3\n");
    r = lamina({"system", "prune", "-f"});
    EXPECT_EQ(r.status, 0) << r.err;
    EXPECT_EQ(out_of(lamina({"ps", "-aq"})), "");
    EXPECT_EQ(out_of(lamina({"images", "--format", "{{.Repository}}:{{.Tag}}"})), "img:1");
}

}  // namespace
}  // namespace lamina::test
