// docs/lamina.1 against the command table (tools/usage.cc): every command has an entry, every
// option spelling is in its entry, every alias is named somewhere.
#include <gtest/gtest.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "usage.h"

namespace lamina::cli {
namespace {

// The page as plain text, one string per line: \- as -, font escapes and quotes dropped,
// a leading .B/.BI/.BR/.IR macro removed.
std::vector<std::string> man_lines() {
    const char* path = std::getenv("LAMINA_MAN_PAGE");
    EXPECT_NE(path, nullptr) << "LAMINA_MAN_PAGE is not set";
    std::ifstream in(path ? path : "");
    EXPECT_TRUE(in.good()) << "cannot read " << (path ? path : "");
    std::vector<std::string> out;
    std::string raw;
    while (std::getline(in, raw)) {
        std::string line;
        for (size_t i = 0; i < raw.size(); ++i) {
            if (raw[i] == '\\' && i + 1 < raw.size() && raw[i + 1] == '-') {
                line += '-';
                ++i;
            } else if (raw[i] == '\\' && i + 2 < raw.size() && raw[i + 1] == 'f') {
                i += 2;
            } else if (raw[i] != '"') {
                line += raw[i];
            }
        }
        for (const char* macro : {".BI ", ".BR ", ".IR ", ".B ", ".I "})
            if (line.starts_with(macro)) line = line.substr(std::string(macro).size());
        std::string squeezed;
        for (char c : line)
            if (c != ' ' || squeezed.empty() || squeezed.back() != ' ') squeezed += c;
        out.push_back(squeezed);
    }
    return out;
}

// The entry whose first line (after .TP) starts with name: that line and its paragraph.
std::string entry_for(const std::vector<std::string>& lines, const std::string& name) {
    for (size_t i = 0; i + 1 < lines.size(); ++i) {
        if (lines[i] != ".TP") continue;
        const std::string& head = lines[i + 1];
        if (!head.starts_with(name) || (head.size() > name.size() && head[name.size()] != ' '))
            continue;
        std::string text;
        for (size_t j = i + 1; j < lines.size() && lines[j] != ".TP" &&
                               !lines[j].starts_with(".SH") && lines[j] != ".PP";
             ++j)
            text += lines[j] + "\n";
        return text;
    }
    return "";
}

// word as a whole option token in text ("-a" is not found inside "--all" or "-all").
bool has_token(const std::string& text, const std::string& word) {
    auto part_of_word = [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-';
    };
    for (size_t pos = text.find(word); pos != std::string::npos; pos = text.find(word, pos + 1)) {
        bool starts = pos == 0 || !part_of_word(text[pos - 1]);
        bool ends = pos + word.size() == text.size() || !part_of_word(text[pos + word.size()]);
        if (starts && ends) return true;
    }
    return false;
}

TEST(ManPage, documents_every_command_and_option_of_the_table) {
    auto lines = man_lines();
    ASSERT_FALSE(lines.empty());
    for (const auto& c : command_specs()) {
        std::string entry = entry_for(lines, c.name);
        EXPECT_FALSE(entry.empty())
            << "lamina.1 has no .TP entry starting with \"" << c.name << "\"";
        if (entry.empty()) continue;
        for (const auto& o : c.options)
            for (const auto& s : o.spellings)
                EXPECT_TRUE(has_token(entry, s))
                    << "lamina.1's entry for \"" << c.name << "\" does not mention " << s;
    }
}

TEST(ManPage, names_every_alias_and_group) {
    std::string all;
    for (const auto& l : man_lines()) all += l + "\n";
    for (const auto& c : command_specs())
        for (const auto& a : c.aliases)
            EXPECT_NE(all.find(a), std::string::npos) << "lamina.1 does not name \"" << a << "\"";
    for (const auto& g : group_specs())
        EXPECT_NE(all.find("lamina " + g.name), std::string::npos)
            << "lamina.1 does not name the group \"" << g.name << "\"";
}

TEST(ManPage, check_finds_a_missing_option) {
    // The checker itself: an entry without --quiet fails, one with it passes.
    std::vector<std::string> lines = {".TP", "images [-a] [--no-trunc]", "List images.", ".TP",
                                      "ps [-q|--quiet]"};
    EXPECT_FALSE(has_token(entry_for(lines, "images"), "--quiet"));
    EXPECT_FALSE(has_token(entry_for(lines, "images"), "-q"));
    EXPECT_TRUE(has_token(entry_for(lines, "images"), "-a"));
    EXPECT_TRUE(has_token(entry_for(lines, "ps"), "--quiet"));
    EXPECT_EQ(entry_for(lines, "image"), "");
}

}  // namespace
}  // namespace lamina::cli
