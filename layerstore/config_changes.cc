// Dockerfile instructions applied to an image config, for `commit --change` and `import --change`.
#include "config_changes.h"

#include <algorithm>
#include <cctype>
#include <optional>
#include <stdexcept>

namespace lamina::store {

using nlohmann::json;

namespace {

std::string trim(const std::string& s) {
    size_t b = s.find_first_not_of(" \t");
    if (b == std::string::npos) return "";
    return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

// Words as a Dockerfile splits them: blanks separate, quotes group, a backslash escapes.
std::vector<std::string> split_words(const std::string& s, const std::string& line) {
    std::vector<std::string> out;
    std::string word;
    bool in_word = false;
    char quote = 0;
    for (size_t i = 0; i < s.size(); ++i) {
        char c = s[i];
        if (quote) {
            if (c == quote) {
                quote = 0;
            } else if (c == '\\' && quote == '"' && i + 1 < s.size()) {
                word += s[++i];
            } else {
                word += c;
            }
        } else if (c == '"' || c == '\'') {
            quote = c;
            in_word = true;
        } else if (c == '\\' && i + 1 < s.size()) {
            word += s[++i];
            in_word = true;
        } else if (c == ' ' || c == '\t') {
            if (in_word) out.push_back(word);
            word.clear();
            in_word = false;
        } else {
            word += c;
            in_word = true;
        }
    }
    if (quote) throw std::invalid_argument("--change \"" + line + "\": unclosed quote");
    if (in_word) out.push_back(word);
    return out;
}

// ["a", "b"]: the exec form of CMD, ENTRYPOINT and VOLUME; nothing when args is not one.
std::optional<std::vector<std::string>> json_strings(const std::string& args) {
    if (!args.starts_with("[")) return std::nullopt;
    json j = json::parse(args, nullptr, false);
    if (!j.is_array()) return std::nullopt;
    std::vector<std::string> out;
    for (const auto& v : j) {
        if (!v.is_string()) return std::nullopt;
        out.push_back(v.get<std::string>());
    }
    return out;
}

// KEY=VALUE pairs (ENV, LABEL), or the old form "KEY VALUE" where the value is the rest.
std::vector<std::pair<std::string, std::string>> key_values(const std::string& args,
                                                            const std::string& line) {
    auto words = split_words(args, line);
    std::vector<std::pair<std::string, std::string>> out;
    if (words.empty()) throw std::invalid_argument("--change \"" + line + "\": needs KEY=VALUE");
    if (words[0].find('=') == std::string::npos) {
        auto blank = args.find_first_of(" \t");
        if (blank == std::string::npos)
            throw std::invalid_argument("--change \"" + line + "\": needs KEY=VALUE");
        auto rest = split_words(trim(args.substr(blank)), line);
        std::string value;
        for (const auto& w : rest) value += (value.empty() ? "" : " ") + w;
        out.emplace_back(words[0], value);
        return out;
    }
    for (const auto& w : words) {
        auto eq = w.find('=');
        if (eq == std::string::npos || eq == 0)
            throw std::invalid_argument("--change \"" + line + "\": \"" + w +
                                        "\" is not KEY=VALUE");
        out.emplace_back(w.substr(0, eq), w.substr(eq + 1));
    }
    return out;
}

// "/a/./b/../c" -> "/a/c"
std::string clean_path(const std::string& path) {
    std::vector<std::string> parts;
    size_t pos = 0;
    while (pos <= path.size()) {
        size_t slash = path.find('/', pos);
        if (slash == std::string::npos) slash = path.size();
        std::string p = path.substr(pos, slash - pos);
        if (p == "..") {
            if (!parts.empty()) parts.pop_back();
        } else if (!p.empty() && p != ".") {
            parts.push_back(p);
        }
        pos = slash + 1;
    }
    std::string out;
    for (const auto& p : parts) out += "/" + p;
    return out.empty() ? "/" : out;
}

bool all_digits(const std::string& s) {
    return !s.empty() && s.size() <= 5 &&
           std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

// "80", "80/tcp", "53/udp", "8000-8002" -> "80/tcp", ...
std::vector<std::string> exposed_ports(const std::string& word, const std::string& line) {
    auto slash = word.find('/');
    std::string ports = word.substr(0, slash);
    std::string proto = slash == std::string::npos ? "tcp" : word.substr(slash + 1);
    for (char& c : proto) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    auto dash = ports.find('-');
    std::string lo = ports.substr(0, dash),
                hi = dash == std::string::npos ? lo : ports.substr(dash + 1);
    bool ok = (proto == "tcp" || proto == "udp" || proto == "sctp") && all_digits(lo) &&
              all_digits(hi) && std::stoi(lo) <= 65535 && std::stoi(hi) <= 65535 &&
              std::stoi(lo) <= std::stoi(hi);
    if (!ok)
        throw std::invalid_argument("--change \"" + line + "\": \"" + word +
                                    "\" is not PORT[/tcp|udp|sctp]");
    std::vector<std::string> out;
    for (int p = std::stoi(lo); p <= std::stoi(hi); ++p)
        out.push_back(std::to_string(p) + "/" + proto);
    return out;
}

json& object_at(json& parent, const char* key) {
    if (!parent.contains(key) || !parent[key].is_object()) parent[key] = json::object();
    return parent[key];
}

void apply_one(json& config, const std::string& line, bool& cmd_set) {
    std::string text = trim(line);
    auto blank = text.find_first_of(" \t");
    std::string instruction = text.substr(0, blank);
    for (char& c : instruction) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    std::string args = blank == std::string::npos ? "" : trim(text.substr(blank));
    if (args.empty() && !instruction.empty())
        throw std::invalid_argument("--change \"" + line + "\": " + instruction +
                                    " needs an argument");
    // CMD and ENTRYPOINT: the exec form as given, the shell form through /bin/sh -c.
    auto command = [&] {
        if (auto v = json_strings(args)) return json(*v);
        return json::array({"/bin/sh", "-c", args});
    };
    if (instruction == "ENV") {
        if (!config.contains("Env") || !config["Env"].is_array()) config["Env"] = json::array();
        for (const auto& [k, v] : key_values(args, line)) set_env(config["Env"], k + "=" + v);
    } else if (instruction == "LABEL") {
        json& labels = object_at(config, "Labels");
        for (const auto& [k, v] : key_values(args, line)) labels[k] = v;
    } else if (instruction == "CMD") {
        config["Cmd"] = command();
        cmd_set = true;
    } else if (instruction == "ENTRYPOINT") {
        config["Entrypoint"] = command();
        // As in a Dockerfile: a new entrypoint drops the inherited command.
        if (!cmd_set) config["Cmd"] = nullptr;
    } else if (instruction == "WORKDIR") {
        auto words = split_words(args, line);
        if (words.size() != 1)
            throw std::invalid_argument("--change \"" + line + "\": WORKDIR takes one path");
        std::string dir = words[0];
        if (!dir.starts_with("/")) dir = config.value("WorkingDir", std::string("/")) + "/" + dir;
        config["WorkingDir"] = clean_path(dir);
    } else if (instruction == "USER") {
        auto words = split_words(args, line);
        if (words.size() != 1)
            throw std::invalid_argument("--change \"" + line + "\": USER takes one USER[:GROUP]");
        config["User"] = words[0];
    } else if (instruction == "EXPOSE") {
        json& ports = object_at(config, "ExposedPorts");
        for (const auto& w : split_words(args, line))
            for (const auto& p : exposed_ports(w, line)) ports[p] = json::object();
    } else if (instruction == "VOLUME") {
        auto paths = json_strings(args);
        if (!paths) paths = split_words(args, line);
        json& volumes = object_at(config, "Volumes");
        for (const auto& p : *paths) {
            if (trim(p).empty())
                throw std::invalid_argument("--change \"" + line + "\": an empty volume path");
            volumes[p] = json::object();
        }
    } else {
        throw std::invalid_argument("--change \"" + line +
                                    "\": want ENV, CMD, ENTRYPOINT, WORKDIR, USER, EXPOSE, LABEL "
                                    "or VOLUME");
    }
}

}  // namespace

void set_env(json& env, const std::string& key_value) {
    std::string key = key_value.substr(0, key_value.find('='));
    for (auto& e : env) {
        if (e.is_string() &&
            e.get<std::string>().substr(0, e.get<std::string>().find('=')) == key) {
            e = key_value;
            return;
        }
    }
    env.push_back(key_value);
}

void apply_config_changes(json& image_config, const std::vector<std::string>& changes) {
    json copy = image_config;
    json& config = object_at(copy, "config");
    bool cmd_set = false;
    for (const auto& line : changes) apply_one(config, line, cmd_set);
    image_config = std::move(copy);
}

}  // namespace lamina::store
