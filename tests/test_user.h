// The unprivileged user rootless tests run as (`lamina-rootless`, made with useradd the first
// time), shared by the daemon's and the store's rootless tests.
#pragma once

#include <pwd.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>

namespace lamina::test {

constexpr const char* kTestUser = "lamina-rootless";

struct TestUser {
    uid_t uid = 0;
    gid_t gid = 0;
};

// nullptr when the user does not exist and cannot be made (not root, no useradd).
inline const TestUser* test_user() {
    static const TestUser* user = []() -> const TestUser* {
        if (!getpwnam(kTestUser) &&
            system("useradd --system --no-create-home --shell "
                   "/usr/sbin/nologin lamina-rootless >/dev/null 2>&1") != 0)
            return nullptr;
        const passwd* pw = getpwnam(kTestUser);
        if (!pw) return nullptr;
        return new TestUser{pw->pw_uid, pw->pw_gid};
    }();
    return user;
}

// A standard host has /dev/fuse 0666 (udev); these machines have no udev and leave it 0600.
inline void let_everyone_open_dev_fuse() {
    struct stat st;
    if (stat("/dev/fuse", &st) == 0 && (st.st_mode & 0666) != 0666) chmod("/dev/fuse", 0666);
}

}  // namespace lamina::test
