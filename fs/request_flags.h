// What the request a thread is serving carries beyond libfuse's API: noted from its bytes when
// the thread reads it (from /dev/fuse or from its io_uring entry), read by the handler, reset
// by the next request. Per thread, because a worker serves the request it has just read.
#pragma once

#include <sys/types.h>

namespace lamina::request {

// Notes what the thread about to serve the request in buf (n bytes, as /dev/fuse delivers it)
// must know of it: whether the kernel asks for set-id bits to go (only looked for with
// killpriv v2 on). It also turns a TMPFILE request (O_TMPFILE, protocol 7.37), which libfuse
// 3.14 does not know, into the CREATE it is shaped as: the same arguments and reply, with the
// name "/" that no real create can carry (op_create tells them apart by it).
void note(void* buf, ssize_t n, bool killpriv);

// The request this thread serves carries the kernel's flag to clear set-id bits: a write,
// truncation or O_TRUNC open by a caller without CAP_FSETID, or a chown of a non-directory.
bool kills_setid();

// The next OPEN or CREATE reply this thread sends carries this backing id (0: none).
void attach_backing_id(int backing_id);
int attached_backing_id();

}  // namespace lamina::request
