// Per-request flags beneath libfuse: see request_flags.h.
#include "request_flags.h"

#include <linux/fuse.h>

#include <cstdint>
#include <cstring>

namespace lamina::request {
namespace {

thread_local bool kills_setid_flag = false;
thread_local int pending_backing_id = 0;

// Reads one field of a request's argument, if the request is long enough to have it.
template <class Arg>
bool request_arg(const void* buf, ssize_t n, Arg& arg) {
    if (n < static_cast<ssize_t>(sizeof(fuse_in_header) + sizeof arg)) return false;
    std::memcpy(&arg, static_cast<const char*>(buf) + sizeof(fuse_in_header), sizeof arg);
    return true;
}

bool carries_kill_flag(uint32_t opcode, const void* buf, ssize_t n) {
    switch (opcode) {
        case FUSE_WRITE: {
            fuse_write_in in;
            return request_arg(buf, n, in) && (in.write_flags & FUSE_WRITE_KILL_SUIDGID);
        }
        case FUSE_SETATTR: {
            fuse_setattr_in in;
            return request_arg(buf, n, in) && (in.valid & FATTR_KILL_SUIDGID);
        }
        case FUSE_OPEN: {
            fuse_open_in in;
            return request_arg(buf, n, in) && (in.open_flags & FUSE_OPEN_KILL_SUIDGID);
        }
        case FUSE_CREATE: {
            fuse_create_in in;
            return request_arg(buf, n, in) && (in.open_flags & FUSE_OPEN_KILL_SUIDGID);
        }
        default:
            return false;
    }
}

}  // namespace

void note(void* buf, ssize_t n, bool killpriv) {
    kills_setid_flag = false;
    if (n < static_cast<ssize_t>(sizeof(fuse_in_header))) return;
    auto* h = static_cast<fuse_in_header*>(buf);
    if (h->opcode == FUSE_TMPFILE) h->opcode = FUSE_CREATE;
    if (killpriv) kills_setid_flag = carries_kill_flag(h->opcode, buf, n);
}

bool kills_setid() {
    return kills_setid_flag;
}

void attach_backing_id(int backing_id) {
    pending_backing_id = backing_id;
}

int attached_backing_id() {
    return pending_backing_id;
}

}  // namespace lamina::request
