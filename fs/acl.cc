// The kernel's posix_acl_create() rule over the xattr form of an ACL (a version-2 header, then
// entries of tag, permission and id, little-endian).
#include "acl.h"

#include <sys/stat.h>

#include <cstdint>
#include <cstring>

namespace lamina {

namespace {

constexpr uint32_t kAclVersion = 2;
constexpr uint16_t kUserObj = 0x01, kUser = 0x02, kGroupObj = 0x04, kGroup = 0x08, kMask = 0x10,
                   kOther = 0x20;
constexpr size_t kHeader = 4, kEntry = 8;

uint16_t get16(const std::string& s, size_t at) {
    return static_cast<uint16_t>(static_cast<uint8_t>(s[at]) | static_cast<uint8_t>(s[at + 1])
                                                                   << 8);
}
void put16(std::string& s, size_t at, uint16_t v) {
    s[at] = static_cast<char>(v & 0xff);
    s[at + 1] = static_cast<char>(v >> 8);
}

}  // namespace

std::optional<InheritedAcl> inherit_acl(const std::string& parent_default, mode_t mode) {
    const std::string& acl = parent_default;
    if (acl.size() < kHeader || (acl.size() - kHeader) % kEntry != 0) return std::nullopt;
    uint32_t version = static_cast<uint8_t>(acl[0]) | static_cast<uint8_t>(acl[1]) << 8 |
                       static_cast<uint8_t>(acl[2]) << 16 |
                       static_cast<uint32_t>(static_cast<uint8_t>(acl[3])) << 24;
    if (version != kAclVersion) return std::nullopt;
    InheritedAcl out;
    std::string access = acl;
    bool equivalent = true;  // only the owner, group and other entries: the mode says it all
    size_t group_obj = 0, mask = 0;
    bool have_user = false, have_group = false, have_other = false;
    for (size_t at = kHeader; at < access.size(); at += kEntry) {
        uint16_t tag = get16(access, at);
        uint16_t perm = get16(access, at + 2);
        switch (tag) {
            case kUserObj:
                perm &= (mode >> 6) & 7;
                mode = (mode & ~S_IRWXU) | (perm << 6);
                have_user = true;
                break;
            case kUser:
            case kGroup:
                equivalent = false;
                break;
            case kGroupObj:
                group_obj = at;
                have_group = true;
                break;
            case kMask:
                mask = at;
                equivalent = false;
                break;
            case kOther:
                perm &= mode & 7;
                mode = (mode & ~S_IRWXO) | perm;
                have_other = true;
                break;
            default:
                return std::nullopt;
        }
        put16(access, at + 2, perm);
    }
    if (!have_user || !have_group || !have_other) return std::nullopt;
    // The group class of the mode is the mask when there is one, else the owning group's.
    size_t group_class = mask ? mask : group_obj;
    uint16_t gperm = get16(access, group_class + 2) & ((mode >> 3) & 7);
    put16(access, group_class + 2, gperm);
    mode = (mode & ~S_IRWXG) | (gperm << 3);
    out.mode = mode;
    if (!equivalent) out.access = std::move(access);
    if (S_ISDIR(mode)) out.default_acl = parent_default;
    return out;
}

}  // namespace lamina
