// POSIX ACLs between GNU tar's text (libarchive's ACL list) and the kernel's xattr value: a
// little-endian header (version 2), then {tag, perm, id} entries sorted by tag and id.
#include "posix_acl.h"

#include <grp.h>
#include <pwd.h>

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <utility>
#include <vector>

namespace lamina::store {
namespace {

constexpr uint32_t kAclVersion = 2;
constexpr uint32_t kUndefinedId = 0xFFFFFFFF;

// The kernel's tags (linux/posix_acl_xattr.h), in the order the kernel wants them.
enum : uint16_t {
    kUserObj = 0x01,
    kUser = 0x02,
    kGroupObj = 0x04,
    kGroup = 0x08,
    kMask = 0x10,
    kOther = 0x20,
};

struct AclEntry {
    uint16_t tag;
    uint16_t perm;  // 4 read, 2 write, 1 execute: the same bits in libarchive and the kernel
    uint32_t id;
};

// libarchive's tag and the kernel's for each POSIX ACL entry kind.
constexpr std::pair<int, uint16_t> kTags[] = {
    {ARCHIVE_ENTRY_ACL_USER_OBJ, kUserObj},   {ARCHIVE_ENTRY_ACL_USER, kUser},
    {ARCHIVE_ENTRY_ACL_GROUP_OBJ, kGroupObj}, {ARCHIVE_ENTRY_ACL_GROUP, kGroup},
    {ARCHIVE_ENTRY_ACL_MASK, kMask},          {ARCHIVE_ENTRY_ACL_OTHER, kOther},
};

// 0 for tags POSIX ACLs do not have (NFSv4's everyone@).
uint16_t kernel_tag(int archive_tag) {
    for (const auto& [a, k] : kTags)
        if (a == archive_tag) return k;
    return 0;
}

int archive_tag(uint16_t kernel_tag) {
    for (const auto& [a, k] : kTags)
        if (k == kernel_tag) return a;
    return 0;
}

void put_le(std::string& out, uint32_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out += static_cast<char>((v >> (8 * i)) & 0xFF);
}

uint32_t get_le(const std::string& in, size_t pos, int bytes) {
    uint32_t v = 0;
    for (int i = 0; i < bytes; ++i)
        v |= static_cast<uint32_t>(static_cast<unsigned char>(in[pos + i])) << (8 * i);
    return v;
}

// The id a named entry means on this host, or false.
bool lookup_id(bool user, const char* name, uint32_t& id) {
    if (!name || !*name) return false;
    if (user) {
        struct passwd* pw = ::getpwnam(name);
        if (!pw) return false;
        id = pw->pw_uid;
    } else {
        struct group* gr = ::getgrnam(name);
        if (!gr) return false;
        id = gr->gr_gid;
    }
    return true;
}

}  // namespace

std::string acl_xattr_from_entry(archive_entry* e, bool default_acl, std::string& why) {
    int type = default_acl ? ARCHIVE_ENTRY_ACL_TYPE_DEFAULT : ARCHIVE_ENTRY_ACL_TYPE_ACCESS;
    if (archive_entry_acl_reset(e, type) <= 0) return "";
    std::vector<AclEntry> entries;
    int got_type, permset, tag, qual;
    const char* name;
    while (archive_entry_acl_next(e, type, &got_type, &permset, &tag, &qual, &name) == ARCHIVE_OK) {
        uint16_t t = kernel_tag(tag);
        if (t == 0) continue;
        AclEntry a{t, static_cast<uint16_t>(permset & 7), kUndefinedId};
        if (t == kUser || t == kGroup) {
            if (qual >= 0) {
                a.id = static_cast<uint32_t>(qual);
            } else if (!lookup_id(t == kUser, name, a.id)) {
                why = std::string(t == kUser ? "user " : "group ") + (name ? name : "?") +
                      " is not known here";
                return "";
            }
        }
        entries.push_back(a);
    }
    // An access ACL of the three base entries alone says no more than the mode.
    if (entries.empty() || (!default_acl && entries.size() <= 3)) return "";
    std::sort(entries.begin(), entries.end(), [](const AclEntry& x, const AclEntry& y) {
        return std::tie(x.tag, x.id) < std::tie(y.tag, y.id);
    });
    std::string out;
    put_le(out, kAclVersion, 4);
    for (const auto& a : entries) {
        put_le(out, a.tag, 2);
        put_le(out, a.perm, 2);
        put_le(out, a.id, 4);
    }
    return out;
}

bool add_acl_to_entry(archive_entry* e, const std::string& value, bool default_acl) {
    if (value.size() < 4 || (value.size() - 4) % 8 != 0 || get_le(value, 0, 4) != kAclVersion)
        return false;
    std::vector<AclEntry> entries;
    for (size_t pos = 4; pos < value.size(); pos += 8) {
        AclEntry a{static_cast<uint16_t>(get_le(value, pos, 2)),
                   static_cast<uint16_t>(get_le(value, pos + 2, 2)), get_le(value, pos + 4, 4)};
        if (archive_tag(a.tag) == 0 || a.perm > 7) return false;
        entries.push_back(a);
    }
    int type = default_acl ? ARCHIVE_ENTRY_ACL_TYPE_DEFAULT : ARCHIVE_ENTRY_ACL_TYPE_ACCESS;
    for (const auto& a : entries) {
        bool named = a.tag == kUser || a.tag == kGroup;
        archive_entry_acl_add_entry(e, type, a.perm, archive_tag(a.tag),
                                    named ? static_cast<int>(a.id) : -1, nullptr);
    }
    return true;
}

}  // namespace lamina::store
