// Framing of lazy-fetch requests and replies (lazy_protocol.h): nothing here trusts the peer, so
// every field is checked and a line has a bound.
#include "lazy_protocol.h"

#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <charconv>

namespace lamina::lazy_protocol {

namespace {

// A decimal number up to the next space (or the end); advances text past it and the space.
template <typename T>
bool take_number(std::string_view& text, T& out) {
    size_t end = text.find(' ');
    std::string_view digits = text.substr(0, end);
    if (digits.empty() || digits.size() > 20) return false;
    auto [p, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), out);
    if (ec != std::errc() || p != digits.data() + digits.size()) return false;
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    return true;
}

}  // namespace

std::string request_line(uint64_t id, size_t layer, std::string_view path) {
    std::string line = std::to_string(id) + " " + std::to_string(layer) + " ";
    for (char c : path) {
        if (c == '\\')
            line += "\\\\";
        else if (c == '\n')
            line += "\\n";
        else
            line += c;
    }
    line += '\n';
    return line;
}

std::optional<Request> parse_request(std::string_view line) {
    Request r;
    if (!take_number(line, r.id) || !take_number(line, r.layer) || line.empty()) return {};
    for (size_t i = 0; i < line.size(); ++i) {
        char c = line[i];
        if (c == '\0') return {};
        if (c != '\\') {
            r.path += c;
            continue;
        }
        if (++i == line.size()) return {};
        if (line[i] == '\\')
            r.path += '\\';
        else if (line[i] == 'n')
            r.path += '\n';
        else
            return {};
    }
    return r;
}

std::string reply_line(uint64_t id, std::string_view error) {
    std::string line = std::to_string(id);
    if (error.empty()) return line + " OK\n";
    line += " ERR ";
    for (char c : error.substr(0, kMaxLine / 2)) line += c == '\n' || c == '\r' ? ' ' : c;
    line += '\n';
    return line;
}

std::optional<Reply> parse_reply(std::string_view line) {
    Reply r;
    if (!take_number(line, r.id)) return {};
    if (line == "OK") {
        r.ok = true;
        return r;
    }
    if (!line.starts_with("ERR ")) return {};
    r.error = std::string(line.substr(4));
    return r;
}

int LineReader::next(std::string& line) {
    for (;;) {
        size_t nl = buf_.find('\n', start_);
        if (nl != std::string::npos) {
            if (nl - start_ > kMaxLine) return -E2BIG;
            line.assign(buf_, start_, nl - start_);
            start_ = nl + 1;
            return 1;
        }
        if (buf_.size() - start_ > kMaxLine) return -E2BIG;
        buf_.erase(0, start_);
        start_ = 0;
        char chunk[4096];
        ssize_t n = ::read(fd_, chunk, sizeof chunk);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -errno;
        if (n == 0) return 0;
        buf_.append(chunk, static_cast<size_t>(n));
    }
}

bool send_line(int fd, std::string_view line) {
    while (!line.empty()) {
        ssize_t n = ::send(fd, line.data(), line.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK) n = ::write(fd, line.data(), line.size());  // a pipe
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return false;
        line.remove_prefix(static_cast<size_t>(n));
    }
    return true;
}

}  // namespace lamina::lazy_protocol
