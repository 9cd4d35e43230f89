// The lines laminafs and its lazy fetcher exchange (common/lazy_protocol.h): any path but one
// with NUL goes through one line and comes back the same; anything malformed is refused, and a
// line past the bound stops the reader rather than growing its buffer.
#include "lazy_protocol.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace lamina::lazy_protocol {
namespace {

TEST(LazyProtocol, any_path_round_trips_on_one_line) {
    for (std::string path :
         {std::string("etc/os-release"), std::string("a b/c  d"), std::string("new\nline/x"),
          std::string("back\\slash\\n"), std::string("\\\n\\\n"), std::string("\xff\x01\t\r")}) {
        std::string line = request_line(42, 3, path);
        ASSERT_EQ(line.back(), '\n');
        ASSERT_EQ(line.find('\n'), line.size() - 1) << line;
        auto r = parse_request(std::string_view(line).substr(0, line.size() - 1));
        ASSERT_TRUE(r) << line;
        EXPECT_EQ(r->id, 42u);
        EXPECT_EQ(r->layer, 3u);
        EXPECT_EQ(r->path, path);
    }
}

TEST(LazyProtocol, malformed_requests_are_refused) {
    for (const std::string& line : std::initializer_list<std::string>{
             "", "1", "1 2", "1 2 ", "x 2 p", "1 y p", "-1 2 p", "1 -2 p", "1 2 bad\\escape",
             "1 2 trailing\\", "99999999999999999999999 0 p", "1  2 p",
             std::string("1 2 n\0ul", 8)})
        EXPECT_FALSE(parse_request(line)) << line;
}

TEST(LazyProtocol, replies_parse_and_nonsense_does_not) {
    auto ok = parse_reply("7 OK");
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->id, 7u);
    EXPECT_TRUE(ok->ok);
    std::string err_line = reply_line(8, "cannot reach\nregistry");
    EXPECT_EQ(err_line, "8 ERR cannot reach registry\n");
    auto err = parse_reply(std::string_view(err_line).substr(0, err_line.size() - 1));
    ASSERT_TRUE(err);
    EXPECT_FALSE(err->ok);
    EXPECT_EQ(err->error, "cannot reach registry");
    EXPECT_EQ(reply_line(9, ""), "9 OK\n");
    for (const char* line : {"", "OK", "7", "7 ok", "7 OKAY", "7 ERR", "x OK", "7  OK"})
        EXPECT_FALSE(parse_reply(line)) << line;
}

TEST(LazyProtocol, reader_splits_lines_and_stops_at_one_over_the_bound) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ASSERT_TRUE(send_line(sv[0], "1 OK\n2 ERR x\n3 O"));
    ASSERT_TRUE(send_line(sv[0], "K\n"));
    LineReader in(sv[1]);
    std::string line;
    ASSERT_EQ(in.next(line), 1);
    EXPECT_EQ(line, "1 OK");
    ASSERT_EQ(in.next(line), 1);
    EXPECT_EQ(line, "2 ERR x");
    ASSERT_EQ(in.next(line), 1);
    EXPECT_EQ(line, "3 OK");
    ASSERT_TRUE(send_line(sv[0], std::string(kMaxLine + 10, 'x')));
    EXPECT_EQ(in.next(line), -E2BIG);
    ::close(sv[0]);
    LineReader rest(sv[1]);
    EXPECT_EQ(rest.next(line), 0);  // the end: the peer closed
    ::close(sv[1]);
}

TEST(LazyProtocol, sending_to_a_closed_peer_fails_without_sigpipe) {
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    ::close(sv[1]);
    EXPECT_FALSE(send_line(sv[0], "1 0 p\n"));
    EXPECT_EQ(errno, EPIPE);
    ::close(sv[0]);
}

}  // namespace
}  // namespace lamina::lazy_protocol
