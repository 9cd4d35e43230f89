// --format: `table`, `json`, or a Go template over docker's field names ({{.ID}}, {{json .}},
// `table {{.Name}}\t{{.Size}}`). Only what docker users write is understood: field paths, the
// functions json, upper and lower, and the table prefix; anything else is a usage error.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lamina::cli {

class Template {
public:
    // Throws UsageError when text is not a template this evaluator understands.
    explicit Template(const std::string& text);
    // Throws UsageError naming a field that data does not have.
    std::string render(const nlohmann::json& data) const;

private:
    struct Piece {
        std::string text;               // literal text, when path and function are empty
        bool action = false;            // {{...}}
        std::string function;           // "", "json", "upper", "lower"
        std::vector<std::string> path;  // {{.A.B}} -> {"A", "B"}; {{.}} -> {}
    };
    std::vector<Piece> pieces_;
};

// A listing in each form a list command prints: rows as docker's formatter sees them (field
// name -> display string) for tables and templates, lamina's JSON, and the -q lines.
struct Listing {
    nlohmann::json headers = nlohmann::json::object();  // field -> column header ("IMAGE ID")
    std::vector<nlohmann::json> rows;
    std::string default_table;                      // the template `--format table` means
    nlohmann::json json = nlohmann::json::array();  // what --format json prints
    std::vector<std::string> quiet;                 // what -q prints, one a line
};

// What a --format value asks for.
struct OutputFormat {
    enum class Kind { Table, Json, Template } kind = Kind::Table;
    bool table = false;  // a template with the `table` prefix: a header row and aligned columns
    std::string text;    // the template, without the prefix
};
// Throws UsageError for anything but table, json or a template ("{{" in it).
OutputFormat parse_output_format(const std::string& value);

// Prints listing: its quiet lines when quiet, else in format (table, json or a template).
void print_listing(const Listing& listing, const OutputFormat& format, bool quiet = false);

// `inspect --format` and the like: format is json (the objects as one JSON array) or a
// template, rendered once per object; anything else is a usage error naming example.
void print_objects(const std::vector<nlohmann::json>& objects, const std::string& format,
                   const std::string& example);
// The check print_objects makes, for commands that look their objects up after it.
void check_objects_format(const std::string& format, const std::string& example);

}  // namespace lamina::cli
