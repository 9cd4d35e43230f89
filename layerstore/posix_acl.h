// POSIX ACLs in layer tars, in both of their forms: the system.posix_acl_access and
// system.posix_acl_default xattrs (what container tools write, as SCHILY.xattr records) and
// GNU tar's text (SCHILY.acl.access and SCHILY.acl.default, `tar --acls`), which libarchive
// parses into an entry's ACL list.
#pragma once

#include <archive.h>
#include <archive_entry.h>

#include <string>

namespace lamina::store {

inline constexpr const char* kAclAccessXattr = "system.posix_acl_access";
inline constexpr const char* kAclDefaultXattr = "system.posix_acl_default";

// The xattr value of e's access (or default) ACL in its text form; "" when it has none. A user
// or group given by name is looked up on this host, as GNU tar does; why is set when a name is
// unknown here (the ACL is then not converted).
std::string acl_xattr_from_entry(archive_entry* e, bool default_acl, std::string& why);

// Adds the ACL an xattr value holds to e's ACL list, so libarchive writes it as GNU tar's text
// too. False (and e unchanged) when value is not a valid ACL.
bool add_acl_to_entry(archive_entry* e, const std::string& xattr_value, bool default_acl);

}  // namespace lamina::store
