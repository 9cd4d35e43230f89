#!/usr/bin/env python3
# A layer tar with every kind of entry and attribute, and a tree listing to compare extractions.
#
#   layer_fidelity.py make-tar OUT   writes the layer (pax, xattrs as SCHILY.xattr records)
#   layer_fidelity.py describe ROOT  prints one line per entry below ROOT, sorted
#   layer_fidelity.py describe-layer ROOT  the same, without the mtimes of whiteout devices
#                                    (unpack makes those at the time of unpacking)
#   layer_fidelity.py make-text-acl-tar OUT   one file whose ACL is in GNU tar --acls text form
import hashlib
import io
import os
import stat
import struct
import sys
import tarfile


def capability_net_raw_ep():
    # struct vfs_cap_data, revision 2 with the effective flag: magic, then (permitted,
    # inheritable) for the low and the high 32 capabilities. CAP_NET_RAW is 13.
    return struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)


def posix_acl(entries):
    # The kernel's posix_acl_xattr format: version 2, then (tag, perm, id) sorted by tag, id.
    undefined = 0xFFFFFFFF
    data = struct.pack("<I", 2)
    for tag, perm, ident in entries:
        data += struct.pack("<HHI", tag, perm, undefined if ident is None else ident)
    return data


USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20


def xattr_headers(xattrs):
    # Binary values go through surrogateescape, so tarfile writes them byte for byte.
    return {"SCHILY.xattr." + k: v.decode("utf-8", "surrogateescape") for k, v in xattrs.items()}


def make_tar(out):
    entries = []

    def add(name, kind, mode, uid=0, gid=0, mtime=1_600_000_000, data=b"", link="",
            dev=(0, 0), xattrs=None):
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.uid, ti.gid, ti.mtime = kind, mode, uid, gid, mtime
        ti.linkname = link
        ti.devmajor, ti.devminor = dev
        ti.size = len(data) if kind == tarfile.REGTYPE else 0
        if xattrs:
            ti.pax_headers = xattr_headers(xattrs)
        entries.append((ti, data))

    add("bin", tarfile.DIRTYPE, 0o755, mtime=1_500_000_001)
    add("bin/su", tarfile.REGTYPE, 0o4755, data=b"su\n", mtime=1_500_000_002)
    add("bin/wall", tarfile.REGTYPE, 0o2755, gid=5, data=b"wall\n")
    add("bin/ping", tarfile.REGTYPE, 0o755, data=b"ping\n",
        xattrs={"security.capability": capability_net_raw_ep()})
    add("bin/mount", tarfile.REGTYPE, 0o6750, gid=4, data=b"mount\n",
        xattrs={"user.origin": b"test", "security.capability": capability_net_raw_ep()})
    add("bin/su-again", tarfile.LNKTYPE, 0o4755, link="bin/su")
    add("bin/sh", tarfile.SYMTYPE, 0o777, uid=12, gid=34, link="su", mtime=1_400_000_000)
    add("tmp", tarfile.DIRTYPE, 0o1777, mtime=1_500_000_003)
    add("srv", tarfile.DIRTYPE, 0o755)
    add("srv/shared", tarfile.DIRTYPE, 0o2770, uid=1000, gid=1000, mtime=1_500_000_004,
        xattrs={
            "system.posix_acl_access": posix_acl([(USER_OBJ, 7, None), (GROUP_OBJ, 7, None),
                                                  (GROUP, 5, 1001), (MASK, 7, None),
                                                  (OTHER, 0, None)]),
            "system.posix_acl_default": posix_acl([(USER_OBJ, 7, None), (USER, 7, 1002),
                                                   (GROUP_OBJ, 5, None), (MASK, 7, None),
                                                   (OTHER, 0, None)]),
        })
    add("srv/shared/notes", tarfile.REGTYPE, 0o640, uid=1000, gid=1000, data=b"notes\n",
        xattrs={
            "user.mime_type": b"text/plain",
            "system.posix_acl_access": posix_acl([(USER_OBJ, 6, None), (USER, 4, 1001),
                                                  (GROUP_OBJ, 4, None), (MASK, 4, None),
                                                  (OTHER, 0, None)]),
        })
    add("etc", tarfile.DIRTYPE, 0o555, mtime=1_500_000_005)
    add("etc/shadow", tarfile.REGTYPE, 0o000, gid=42, data=b"root:*:1::::::\n")
    add("etc/empty", tarfile.REGTYPE, 0o444)
    add("dev", tarfile.DIRTYPE, 0o755)
    add("dev/null", tarfile.CHRTYPE, 0o666, dev=(1, 3))
    add("dev/loop9", tarfile.BLKTYPE, 0o660, gid=6, dev=(7, 9))
    add("run", tarfile.DIRTYPE, 0o755)
    add("run/initctl", tarfile.FIFOTYPE, 0o620, uid=1000, gid=5)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for ti, data in entries:
            tar.addfile(ti, io.BytesIO(data) if ti.type == tarfile.REGTYPE else None)


def describe(root, whiteout_times=True):
    lines = []
    # Hard links show as the sorted-first name of their inode, whatever order the walk takes.
    first_path = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            key = (st.st_dev, st.st_ino)
            first_path[key] = min(first_path.get(key, rel), rel)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            line = [rel, "mode=%o" % st.st_mode, "owner=%d:%d" % (st.st_uid, st.st_gid)]
            if whiteout_times or not (stat.S_ISCHR(kind) and st.st_rdev == 0):
                line.append("mtime=%d" % st.st_mtime_ns)
            if stat.S_ISREG(kind):
                with open(path, "rb") as f:
                    line.append("sha256=" + hashlib.sha256(f.read()).hexdigest()[:16])
                if st.st_nlink > 1:
                    line.append("same-file-as=" + first_path[(st.st_dev, st.st_ino)])
            elif stat.S_ISLNK(kind):
                line.append("target=" + os.readlink(path))
            elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
                line.append("rdev=%d,%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)))
            if not stat.S_ISLNK(kind):
                for key in sorted(os.listxattr(path, follow_symlinks=False)):
                    if key.startswith(("trusted.overlay.", "user.overlay.", "security.selinux")):
                        continue
                    value = os.getxattr(path, key, follow_symlinks=False)
                    line.append("xattr:%s=%s" % (key, value.hex()))
            lines.append(" ".join(line))
    print("\n".join(sorted(lines)))


def make_text_acl_tar(out):
    ti = tarfile.TarInfo("shared")
    ti.mode, ti.mtime = 0o640, 1_600_000_000
    ti.pax_headers = {"SCHILY.acl.access": "user::rw-,user:1001:r--,group::r--,mask::r--,other::---"}
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(ti, io.BytesIO(b""))


if __name__ == "__main__":
    commands = {"make-tar": make_tar, "describe": describe,
                "describe-layer": lambda root: describe(root, whiteout_times=False),
                "make-text-acl-tar": make_text_acl_tar}
    if len(sys.argv) != 3 or sys.argv[1] not in commands:
        sys.exit("usage: layer_fidelity.py make-tar OUT | describe ROOT | describe-layer ROOT | "
                 "make-text-acl-tar OUT")
    commands[sys.argv[1]](sys.argv[2])
