// The lines laminafs and its lazy-layer fetcher (lamina-lazy-fetch --serve) exchange over their
// socket pair (docs/lazy.md, "The fetcher"): one request or reply per line, a path escaped so
// that any byte but NUL fits on one line.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace lamina::lazy_protocol {

// Longer lines are refused: a path is at most 4096 bytes, twice that escaped.
constexpr size_t kMaxLine = 16384;

// "ID LAYER PATH\n": LAYER counts the fetcher's layer arguments from 0; in PATH a backslash is
// written "\\" and a newline "\n", every other byte as it is.
std::string request_line(uint64_t id, size_t layer, std::string_view path);
struct Request {
    uint64_t id = 0;
    size_t layer = 0;
    std::string path;
};
// line without its '\n'; nullopt for anything but a well-formed request.
std::optional<Request> parse_request(std::string_view line);

// "ID OK\n", or "ID ERR MESSAGE\n" when error is not empty (its newlines become spaces).
std::string reply_line(uint64_t id, std::string_view error);
struct Reply {
    uint64_t id = 0;
    bool ok = false;
    std::string error;
};
std::optional<Reply> parse_reply(std::string_view line);

// Whole lines from a descriptor, each at most kMaxLine bytes.
class LineReader {
public:
    explicit LineReader(int fd) : fd_(fd) {}
    // 1 with a line (without '\n'), 0 at end of file, -errno on a read error, -E2BIG for a line
    // over kMaxLine (the stream is then unusable).
    int next(std::string& line);

private:
    int fd_;
    std::string buf_;
    size_t start_ = 0;
};

// Writes all of line to a socket without raising SIGPIPE (to a pipe as well, where the caller
// ignores SIGPIPE); false with errno set otherwise.
bool send_line(int fd, std::string_view line);

}  // namespace lamina::lazy_protocol
