// Parsing untrusted JSON with limits and reading its members with their types checked.
#include "json_input.h"

#include "error.h"

namespace lamina::store {

using nlohmann::json;

size_t json_depth(std::string_view text, size_t limit) {
    size_t depth = 0, deepest = 0;
    bool in_string = false, escaped = false;
    for (char c : text) {
        if (in_string) {
            if (escaped)
                escaped = false;
            else if (c == '\\')
                escaped = true;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            deepest = std::max(deepest, ++depth);
            if (deepest > limit) break;
        } else if ((c == ']' || c == '}') && depth > 0) {
            --depth;
        }
    }
    return deepest;
}

json parse_json_limited(std::string_view text, const std::string& what, size_t max_bytes) {
    return parse_json_limited(text, what, max_bytes, nullptr);
}

json parse_json_limited(std::string_view text, const std::string& what, size_t max_bytes,
                        const json::parser_callback_t& callback) {
    if (text.size() > max_bytes)
        throw StoreError(what + ": " + std::to_string(text.size()) +
                         " bytes is more than the limit of " + std::to_string(max_bytes));
    if (json_depth(text, kMaxJsonDepth) > kMaxJsonDepth)
        throw StoreError(what + ": nested more than " + std::to_string(kMaxJsonDepth) +
                         " levels deep");
    try {
        return json::parse(text, callback);
    } catch (const json::exception& e) {
        throw StoreError(what + " is not valid JSON: " + e.what());
    }
}

static const json* member(const json& obj, const char* key, const std::string& what) {
    require_object(obj, what);
    auto it = obj.find(key);
    return it == obj.end() ? nullptr : &*it;
}

[[noreturn]] static void wrong_type(const char* key, const std::string& what, const char* want,
                                    const json& got) {
    throw StoreError(what + ": \"" + key + "\" must be " + want + ", not " + got.type_name());
}

std::string string_member(const json& obj, const char* key, const std::string& what,
                          const std::string& fallback) {
    const json* v = member(obj, key, what);
    if (!v) return fallback;
    if (!v->is_string()) wrong_type(key, what, "a string", *v);
    return v->get<std::string>();
}

int64_t int_member(const json& obj, const char* key, const std::string& what, int64_t fallback) {
    const json* v = member(obj, key, what);
    if (!v) return fallback;
    if (!v->is_number_integer()) wrong_type(key, what, "an integer", *v);
    return v->get<int64_t>();
}

const json& array_member(const json& obj, const char* key, const std::string& what) {
    const json* v = member(obj, key, what);
    if (!v) throw StoreError(what + ": \"" + key + "\" is missing");
    if (!v->is_array()) wrong_type(key, what, "an array", *v);
    return *v;
}

const json& require_object(const json& v, const std::string& what) {
    if (!v.is_object()) throw StoreError(what + ": must be a JSON object, not " + v.type_name());
    return v;
}

}  // namespace lamina::store
