// POSIX ACL inheritance at creation, which the kernel leaves to a FUSE daemon that takes
// FUSE_POSIX_ACL and FUSE_DONT_MASK: a new entry in a directory with a default ACL gets its
// mode and access ACL from that default ACL (and no umask), as posix_acl_create() gives them.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>

namespace lamina {

inline constexpr const char* kAclAccessXattr = "system.posix_acl_access";
inline constexpr const char* kAclDefaultXattr = "system.posix_acl_default";

struct InheritedAcl {
    mode_t mode = 0;          // the requested mode, masked by the default ACL
    std::string access;       // the new entry's access ACL (xattr form), "" when its mode says all
    std::string default_acl;  // a directory's own default ACL: its parent's
};

// From the parent's default ACL (the xattr's bytes) and the mode asked for (with its type bits).
// nullopt for a value that is not a valid ACL, which the caller treats as none.
std::optional<InheritedAcl> inherit_acl(const std::string& parent_default, mode_t mode);

}  // namespace lamina
