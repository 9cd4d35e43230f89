// Untrusted JSON (manifests, configs, indexes, auth files): parsed with size and depth limits,
// read with each member's type checked, so bad input is one line naming the field and the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace lamina::store {

// Deeper nesting is refused before parsing: nlohmann's parser is iterative, but copying,
// dumping and destroying a document recurse, and 100,000 nested arrays overflow the stack.
inline constexpr size_t kMaxJsonDepth = 64;
// The distribution spec's manifest limit; an index and the docker-archive manifest.json too.
inline constexpr size_t kMaxManifestBytes = size_t(4) << 20;
// An image config is read by nearly every command, so a huge one slows them all.
inline constexpr size_t kMaxConfigBytes = size_t(8) << 20;

// Parses text as JSON; `what` names the document in the one-line StoreError ("config sha256:..",
// "/path/index.json").
nlohmann::json parse_json_limited(std::string_view text, const std::string& what, size_t max_bytes);
// The same, with nlohmann's parser callback: it sees each value as it is completed and may keep
// it out of the document (a long list read element by element, never whole).
nlohmann::json parse_json_limited(std::string_view text, const std::string& what, size_t max_bytes,
                                  const nlohmann::json::parser_callback_t& callback);

// The nesting depth of text (arrays and objects, outside strings), stopping once past limit.
size_t json_depth(std::string_view text, size_t limit);

// Members read with their type checked. `what` names the document. A missing member gives the
// fallback; a member of another type throws, naming the member and the document.
std::string string_member(const nlohmann::json& obj, const char* key, const std::string& what,
                          const std::string& fallback = "");
int64_t int_member(const nlohmann::json& obj, const char* key, const std::string& what,
                   int64_t fallback);
// A member that must be there and be an array.
const nlohmann::json& array_member(const nlohmann::json& obj, const char* key,
                                   const std::string& what);
// Throws unless v is an object; `what` names it.
const nlohmann::json& require_object(const nlohmann::json& v, const std::string& what);

}  // namespace lamina::store
