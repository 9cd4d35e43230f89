// The one rule for showing untrusted text in a message (common/printable.h): what a terminal
// would obey or a reader would misread is escaped, ordinary text in any script is kept.
#include "printable.h"

#include <gtest/gtest.h>

#include <string>

namespace lamina {
namespace {

TEST(Printable, controls_are_escaped_and_text_is_kept) {
    EXPECT_EQ(printable("plain name-1.2_x"), "plain name-1.2_x");
    EXPECT_EQ(printable("a\nb\tc\x1b[2J\x7f"), "a\\x0ab\\x09c\\x1b[2J\\x7f");
    // UTF-8 in any script stays as it is.
    EXPECT_EQ(printable("gr\xc3\xbc\xc3\x9f \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x90\xb3"),
              "gr\xc3\xbc\xc3\x9f \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x90\xb3");
}

TEST(Printable, c1_and_bidirectional_controls_are_escaped) {
    // U+009B, which some terminals take as ESC [, as a raw byte and as UTF-8.
    EXPECT_EQ(printable("x\x9by"), "x\\x9by");
    EXPECT_EQ(printable("x\xc2\x9b"
                        "2Jy"),
              "x\\xc2\\x9b2Jy");
    // U+202E makes what follows read right to left; U+2066 and U+200F are of the same kind.
    EXPECT_EQ(printable("a\xe2\x80\xae"
                        "b"),
              "a\\xe2\\x80\\xaeb");
    EXPECT_EQ(printable("\xe2\x81\xa6\xe2\x80\x8f"), "\\xe2\\x81\\xa6\\xe2\\x80\\x8f");
    // U+00A0 and later are ordinary characters.
    EXPECT_EQ(printable("\xc2\xa0"), "\xc2\xa0");
}

TEST(Printable, bytes_that_are_not_utf8_are_escaped) {
    EXPECT_EQ(printable("\xff\xfe"), "\\xff\\xfe");
    EXPECT_EQ(printable("\xc3"), "\\xc3");                             // cut short
    EXPECT_EQ(printable("\xc3(x"), "\\xc3(x");                         // bad continuation
    EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf");                    // overlong '/'
    EXPECT_EQ(printable("\xe0\x80\xaf"), "\\xe0\\x80\\xaf");           // overlong, 3 bytes
    EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");           // a surrogate
    EXPECT_EQ(printable("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // past U+10FFFF
}

TEST(Printable, long_text_is_cut_where_max_says) {
    std::string long_name(300, 'a');
    EXPECT_EQ(printable(long_name), std::string(256, 'a') + "...");
    EXPECT_EQ(printable("abcdef", 3), "abc...");
    EXPECT_EQ(printable("abc", 3), "abc");
    // A character that would run past the cut is not split: its bytes are shown escaped.
    EXPECT_EQ(printable("a\xc3\xbc", 2), "a\\xc3...");
    EXPECT_EQ(printable(long_name, std::string::npos), long_name);
}

}  // namespace
}  // namespace lamina
