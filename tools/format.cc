// A small Go-template evaluator for --format, and the table and template printers of listings.
#include "format.h"

#include <algorithm>
#include <cctype>
#include <iostream>

#include "cli.h"
#include "output.h"

namespace lamina::cli {

using nlohmann::json;

namespace {

// docker's formatter turns the two characters \t and \n into a tab and a newline.
std::string unescape(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == 't' || s[i + 1] == 'n')) {
            out += s[i + 1] == 't' ? '\t' : '\n';
            ++i;
        } else {
            out += s[i];
        }
    }
    return out;
}

std::string trim(const std::string& s) {
    size_t b = s.find_first_not_of(" \t");
    if (b == std::string::npos) return "";
    size_t e = s.find_last_not_of(" \t");
    return s.substr(b, e - b + 1);
}

std::vector<std::string> parse_path(const std::string& word, const std::string& action) {
    if (word.empty() || word[0] != '.')
        throw UsageError("--format: cannot understand {{" + action +
                         "}} (want {{.Field}}, {{json .}}, {{upper .Field}})");
    std::vector<std::string> path;
    if (word == ".") return path;
    size_t pos = 1;
    while (pos <= word.size()) {
        size_t dot = word.find('.', pos);
        if (dot == std::string::npos) dot = word.size();
        std::string name = word.substr(pos, dot - pos);
        bool ok = !name.empty() && std::all_of(name.begin(), name.end(), [](unsigned char c) {
            return std::isalnum(c) || c == '_';
        });
        if (!ok) throw UsageError("--format: bad field name in {{" + action + "}}");
        path.push_back(name);
        pos = dot + 1;
    }
    return path;
}

// How Go's text/template prints a value: strings bare, lists as [a b], maps as map[k:v].
std::string go_string(const json& v) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_null()) return "<no value>";
    if (v.is_array()) {
        std::string out = "[";
        for (size_t i = 0; i < v.size(); ++i) out += (i ? " " : "") + go_string(v[i]);
        return out + "]";
    }
    if (v.is_object()) {
        std::string out = "map[";
        bool first = true;
        for (const auto& [k, item] : v.items()) {
            out += (first ? "" : " ") + k + ":" + go_string(item);
            first = false;
        }
        return out + "]";
    }
    return v.dump();
}

}  // namespace

Template::Template(const std::string& text) {
    size_t pos = 0;
    while (pos < text.size()) {
        size_t open = text.find("{{", pos);
        if (open == std::string::npos) {
            pieces_.push_back({unescape(text.substr(pos)), false, "", {}});
            break;
        }
        if (open > pos) pieces_.push_back({unescape(text.substr(pos, open - pos)), false, "", {}});
        size_t close = text.find("}}", open + 2);
        if (close == std::string::npos)
            throw UsageError("--format: unclosed {{ in \"" + text + "\"");
        std::string action = trim(text.substr(open + 2, close - open - 2));
        Piece p;
        p.action = true;
        auto space = action.find_first_of(" \t");
        if (space == std::string::npos) {
            p.path = parse_path(action, action);
        } else {
            p.function = action.substr(0, space);
            if (p.function != "json" && p.function != "upper" && p.function != "lower")
                throw UsageError("--format: unknown function \"" + p.function + "\" in {{" +
                                 action + "}} (json, upper, lower)");
            p.path = parse_path(trim(action.substr(space)), action);
        }
        pieces_.push_back(std::move(p));
        pos = close + 2;
    }
}

std::string Template::render(const json& data) const {
    std::string out;
    for (const auto& p : pieces_) {
        if (!p.action) {
            out += p.text;
            continue;
        }
        const json* v = &data;
        std::string walked;
        bool missing = false;
        for (const auto& name : p.path) {
            walked += "." + name;
            if (v->is_object() && v->contains(name)) {
                v = &(*v)[name];
                continue;
            }
            // Below the top, objects are maps (labels, a config), where Go prints <no value>
            // for a key that is not there; the top's fields are the listing's, fixed.
            if (v != &data && v->is_object()) {
                missing = true;
                break;
            }
            std::string known;
            if (v->is_object())
                for (const auto& [k, item] : v->items()) known += (known.empty() ? "" : ", ") + k;
            throw UsageError("--format: no field " + walked +
                             (known.empty() ? "" : " (fields: " + known + ")"));
        }
        if (missing) {
            out += "<no value>";
            continue;
        }
        if (p.function == "json") {
            out += v->dump();
        } else {
            std::string s = go_string(*v);
            if (p.function == "upper")
                std::transform(s.begin(), s.end(), s.begin(), ::toupper);
            else if (p.function == "lower")
                std::transform(s.begin(), s.end(), s.begin(), ::tolower);
            out += s;
        }
    }
    return out;
}

OutputFormat parse_output_format(const std::string& value) {
    OutputFormat f;
    if (value == "table" || value.empty()) return f;
    if (value == "json") {
        f.kind = OutputFormat::Kind::Json;
        return f;
    }
    std::string text = value;
    if (value.starts_with("table ") || value.starts_with("table\t")) {
        f.table = true;
        text = trim(value.substr(6));
    }
    if (text.find("{{") == std::string::npos)
        throw UsageError("--format must be table, json or a Go template such as '{{.ID}}', not \"" +
                         value + "\"");
    Template check(text);  // syntax errors now, before any output
    f.kind = OutputFormat::Kind::Template;
    f.text = text;
    return f;
}

void print_listing(const Listing& listing, const OutputFormat& format, bool quiet) {
    if (quiet) {
        for (const auto& line : listing.quiet) std::cout << line << "\n";
        return;
    }
    if (format.kind == OutputFormat::Kind::Json) {
        print_json(listing.json);
        return;
    }
    bool table = format.kind == OutputFormat::Kind::Table || format.table;
    std::string text = format.kind == OutputFormat::Kind::Table
                           ? parse_output_format(listing.default_table).text
                           : format.text;
    Template t(text);
    // The header row is the template run over the headers, so an unknown field fails even
    // when there are no rows.
    std::string header = t.render(listing.headers);
    if (!table) {
        for (const auto& r : listing.rows) std::cout << t.render(r) << "\n";
        return;
    }
    auto cells = [](const std::string& line) {
        std::vector<std::string> out;
        size_t pos = 0;
        while (true) {
            size_t tab = line.find('\t', pos);
            out.push_back(line.substr(pos, tab == std::string::npos ? tab : tab - pos));
            if (tab == std::string::npos) return out;
            pos = tab + 1;
        }
    };
    Table out(cells(header));
    for (const auto& r : listing.rows) out.add(cells(t.render(r)));
    std::cout << out.render();
}

void check_objects_format(const std::string& format, const std::string& example) {
    if (format == "json") return;
    if (format.find("{{") == std::string::npos)
        throw UsageError("--format must be json or a Go template such as '" + example +
                         "', not \"" + format + "\"");
    Template check(format);
}

void print_objects(const std::vector<json>& objects, const std::string& format,
                   const std::string& example) {
    check_objects_format(format, example);
    if (format == "json") {
        print_json(objects);
        return;
    }
    Template t(format);
    std::string out;
    for (const auto& o : objects) out += t.render(o) + "\n";
    std::cout << out;
}

}  // namespace lamina::cli
