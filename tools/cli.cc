// Argument parsing and output helpers shared by every lamina command.
#include "cli.h"

#include <iostream>

namespace lamina::cli {

using nlohmann::json;

Args parse_args(const std::vector<std::string>& argv,
                const std::map<std::string, std::string>& with_value,
                const std::map<std::string, std::string>& switches) {
    Args a;
    bool operands_only = false;
    for (size_t i = 0; i < argv.size(); ++i) {
        std::string arg = argv[i];
        if (operands_only || arg == "-" || arg.empty() || arg[0] != '-') {
            a.operands.push_back(arg);
            continue;
        }
        if (arg == "--") {
            operands_only = true;
            continue;
        }
        std::string inline_value;
        bool has_inline = false;
        if (auto eq = arg.find('='); arg.starts_with("--") && eq != std::string::npos) {
            inline_value = arg.substr(eq + 1);
            arg = arg.substr(0, eq);
            has_inline = true;
        }
        if (auto it = with_value.find(arg); it != with_value.end()) {
            if (has_inline) {
                a.values[it->second] = inline_value;
                a.lists[it->second].push_back(inline_value);
            } else {
                if (i + 1 >= argv.size()) throw UsageError("option " + arg + " needs a value");
                a.values[it->second] = argv[++i];
                a.lists[it->second].push_back(a.values[it->second]);
            }
        } else if (auto sw = switches.find(arg); sw != switches.end() && !has_inline) {
            a.flags.insert(sw->second);
        } else {
            throw UsageError("unknown option " + arg);
        }
    }
    return a;
}

void need_operands(const Args& a, size_t min, size_t max, const std::string& usage) {
    if (a.operands.size() < min || a.operands.size() > max)
        throw UsageError("usage: lamina " + usage);
}

void print_json(const json& j) {
    std::cout << j.dump(2) << "\n";
}

std::string output_format(const Context& ctx, const Args& a) {
    std::string f = a.value("format", ctx.format);
    if (f != "table" && f != "json") throw UsageError("--format must be table or json");
    return f;
}

}  // namespace lamina::cli
