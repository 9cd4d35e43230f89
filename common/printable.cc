// Untrusted text made safe to show: see printable.h.
#include "printable.h"

#include <cstdint>

namespace lamina {
namespace {

// The length of the UTF-8 sequence a lead byte starts (2 to 4), or 0 for one that starts none.
size_t sequence_length(unsigned char lead) {
    if (lead >= 0xc2 && lead <= 0xdf) return 2;
    if (lead >= 0xe0 && lead <= 0xef) return 3;
    if (lead >= 0xf0 && lead <= 0xf4) return 4;
    return 0;
}

// Characters shown escaped though well-formed: C1 controls and the bidirectional controls.
bool is_hidden_control(uint32_t cp) {
    return cp < 0xa0 || cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
           (cp >= 0x2066 && cp <= 0x2069);
}

// The code point of the well-formed sequence of len bytes at text[at], or nothing (a bad
// continuation byte, an overlong form, a surrogate, past U+10FFFF).
bool decode(std::string_view text, size_t at, size_t len, uint32_t& cp) {
    if (at + len > text.size()) return false;
    cp = static_cast<unsigned char>(text[at]) & (0x7fu >> len);
    for (size_t k = 1; k < len; ++k) {
        auto c = static_cast<unsigned char>(text[at + k]);
        if ((c & 0xc0) != 0x80) return false;
        cp = (cp << 6) | (c & 0x3f);
    }
    if (len == 3 && cp < 0x800) return false;
    if (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) return false;
    return !(cp >= 0xd800 && cp <= 0xdfff);
}

}  // namespace

std::string printable(std::string_view text, size_t max) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    size_t i = 0;
    while (i < text.size() && i < max) {
        auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c < 0x7f) {
            out.push_back(static_cast<char>(c));
            ++i;
            continue;
        }
        size_t len = sequence_length(c);
        uint32_t cp = 0;
        if (len && i + len <= max && decode(text, i, len, cp) && !is_hidden_control(cp)) {
            out.append(text.substr(i, len));
            i += len;
            continue;
        }
        out += "\\x";
        out.push_back(kHex[c >> 4]);
        out.push_back(kHex[c & 15]);
        ++i;
    }
    if (i < text.size()) out += "...";
    return out;
}

}  // namespace lamina
