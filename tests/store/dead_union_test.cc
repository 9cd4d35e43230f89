// A container whose laminafs daemon was killed: `lamina ps` says so ("Dead", as docker names a
// defunct container) and `lamina mount` puts up a working union in place of the dead one.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "mount_table.h"
#include "store_fixture.h"

namespace lamina::test {
namespace {

using nlohmann::json;

// The STATUS column of `lamina ps -a` for the container named name.
std::string status_of(const Lamina& lamina, const std::string& name) {
    std::istringstream table(out_of(lamina({"ps", "-a"})));
    for (std::string line; std::getline(table, line);) {
        if (!line.ends_with(" " + name)) continue;
        for (const char* status : {"Created", "Mounted", "Dead"})
            if (line.find(std::string("  ") + status + "  ") != std::string::npos) return status;
        return "unrecognised line: " + line;
    }
    return "not listed";
}

std::string state_of(const Lamina& lamina, const std::string& name) {
    for (const auto& c : json::parse(out_of(lamina({"ps", "-a", "--format", "json"}))))
        if (c["Name"] == name) return c.value("State", "no State field");
    return "not listed";
}

int mounts_at(const std::string& path) {
    int n = 0;
    for (const auto& e : read_mount_table()) n += e.mount_point == path;
    return n;
}

TEST(DeadUnion, ps_shows_a_killed_daemons_container_dead_and_mount_recovers_it) {
    REQUIRE_FUSE();
    TempDir tmp("lamina-dead");
    StoreGuard guard{tmp / "store"};
    Lamina lamina(tmp / "store");
    write_oci_layout(tmp / "layout", demo_image(""), "demo:1");
    out_of(lamina({"load", "-i", tmp / "layout"}));
    out_of(lamina({"create", "--name", "c", "demo:1"}));
    EXPECT_EQ(status_of(lamina, "c"), "Created");
    std::string merged = out_of(lamina({"mount", "c"}));
    EXPECT_EQ(status_of(lamina, "c"), "Mounted");
    EXPECT_EQ(state_of(lamina, "c"), "Mounted");
    write_file(merged + "/kept", "written before the kill\n");

    // The daemon is the only process whose command line ends with the merged path.
    std::istringstream pids(run_command({"pgrep", "-f", " " + merged + "$"}).out);
    pid_t daemon = 0;
    ASSERT_TRUE(pids >> daemon) << "no laminafs daemon for " << merged;
    ASSERT_EQ(kill(daemon, SIGKILL), 0) << strerror(errno);
    // Dead once its end of the connection is closed: then every request fails with ENOTCONN.
    for (int i = 0; i < 250; ++i) {
        int fd = ::open((merged + "/kept").c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0) break;
        ::close(fd);
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }

    EXPECT_EQ(status_of(lamina, "c"), "Dead");
    EXPECT_EQ(state_of(lamina, "c"), "Dead");
    // Without -a too: something is still mounted there.
    EXPECT_NE(out_of(lamina({"ps"})).find("Dead"), std::string::npos);

    EXPECT_EQ(out_of(lamina({"mount", "c"})), merged);
    EXPECT_EQ(mounts_at(merged), 1) << "the dead union must be gone, not covered";
    EXPECT_EQ(read_file(merged + "/kept"), "written before the kill\n");
    EXPECT_EQ(status_of(lamina, "c"), "Mounted");
    out_of(lamina({"umount", "c"}));
    EXPECT_EQ(mounts_at(merged), 0);
    EXPECT_EQ(status_of(lamina, "c"), "Created");
}

}  // namespace
}  // namespace lamina::test
