// Skipping a test for something this machine lacks, in words scripts/test can check.
#pragma once

#include <gtest/gtest.h>

// GTEST_SKIP() whose message starts "[needs CAPABILITY] "; stream the reason after it:
//
//     SKIP_NEEDING("program:fio") << "fio is not installed";
//
// scripts/test counts every skipped test case, and under CI=true fails the run for a skip whose
// capability this machine has, names none, or names one it does not know. The capabilities it
// checks (scripts/test_summary, machine_has):
//   root          euid 0
//   fuse          /dev/fuse opens read-write
//   overlay       kernel overlayfs mounts
//   passthrough   FUSE passthrough (kernel 6.9 or later, and fuse)
//   uring         FUSE over io_uring (kernel 6.14 or later, enable_uring settable)
//   killpriv-v2   FUSE_HANDLE_KILLPRIV_V2 (kernel 5.11 or later, and fuse)
//   idmap         an idmapped bind mount
//   tmpfs         mounting a tmpfs
//   mknod         mknod of a 0/0 character device (a whiteout)
//   unshare       unshare -Urm
//   cpu0          pinning a thread to CPU 0
//   separate-shm  /dev/shm on another filesystem than $TMPDIR
//   user          making a system user (root and useradd)
//   static-busybox  /bin/busybox statically linked (podman's test image)
//   program:NAME  NAME on PATH
//   python3:M,N   /usr/bin/python3 imports modules M and N
#define SKIP_NEEDING(capability) GTEST_SKIP() << "[needs " << (capability) << "] "
