// Argument parsing and output helpers shared by every lamina command.
#include "cli.h"

#include <unistd.h>

#include <iostream>

#include "config_changes.h"
#include "error.h"
#include "output.h"

namespace lamina::cli {

using nlohmann::json;

namespace {

const OptionSpec* find_option(const CommandSpec& spec, const std::string& spelling) {
    for (const auto& o : spec.options)
        for (const auto& s : o.spellings)
            if (s == spelling) return &o;
    return nullptr;
}

// "-aq": short switches written together, as docker users do.
bool is_switch_cluster(const CommandSpec& spec, const std::string& arg) {
    if (arg.size() < 3 || arg[1] == '-') return false;
    for (size_t k = 1; k < arg.size(); ++k) {
        const OptionSpec* o = find_option(spec, std::string("-") + arg[k]);
        if (!o || o->takes_value()) return false;
    }
    return true;
}

}  // namespace

Args parse_args(const std::vector<std::string>& argv, const CommandSpec& spec) {
    Args a;
    a.spec = &spec;
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
        if (arg == "-h" || arg == "--help") {
            a.help = true;
            continue;
        }
        std::string inline_value;
        bool has_inline = false;
        if (auto eq = arg.find('='); arg.starts_with("--") && eq != std::string::npos) {
            inline_value = arg.substr(eq + 1);
            arg = arg.substr(0, eq);
            has_inline = true;
        }
        const OptionSpec* o = find_option(spec, arg);
        if (!o && is_switch_cluster(spec, arg)) {
            for (size_t k = 1; k < arg.size(); ++k)
                a.flags.insert(find_option(spec, std::string("-") + arg[k])->key);
            continue;
        }
        if (!o || (has_inline && !o->takes_value()))
            throw UsageError("unknown option " + arg + " for \"lamina " + spec.name +
                             "\" (lamina " + spec.name + " --help lists them)");
        if (!o->takes_value()) {
            a.flags.insert(o->key);
            continue;
        }
        if (!has_inline) {
            if (i + 1 >= argv.size()) throw UsageError("option " + arg + " needs a value");
            inline_value = argv[++i];
        }
        a.values[o->key] = inline_value;
        a.lists[o->key].push_back(inline_value);
    }
    return a;
}

void need_operands(const Args& a, size_t min, size_t max) {
    if (a.operands.size() < min || a.operands.size() > max)
        throw UsageError("usage: " + usage_line(*a.spec) + " (lamina " + a.spec->name + " --help)");
}

int for_each_operand(const Args& a, const std::function<void(const std::string&)>& fn) {
    int rc = 0;
    for (const auto& operand : a.operands) {
        try {
            fn(operand);
        } catch (const store::StoreError& e) {
            std::cerr << "lamina: " << e.what() << "\n";
            rc = 1;
        }
    }
    return rc;
}

std::map<std::string, std::vector<std::string>> split_filters(
    const std::vector<std::string>& filters, const std::set<std::string>& keys) {
    std::map<std::string, std::vector<std::string>> out;
    for (const auto& f : filters) {
        auto eq = f.find('=');
        std::string key = f.substr(0, eq);
        if (eq == std::string::npos || !keys.count(key)) {
            std::string known;
            for (const auto& k : keys) known += (known.empty() ? "" : ", ") + k;
            throw UsageError("bad filter \"" + f + "\": want KEY=VALUE with KEY one of " + known);
        }
        out[key].push_back(f.substr(eq + 1));
    }
    return out;
}

std::map<std::string, std::string> key_values(const std::vector<std::string>& items,
                                              const std::string& option) {
    std::map<std::string, std::string> out;
    for (const auto& item : items) {
        auto eq = item.find('=');
        std::string key = item.substr(0, eq);
        if (key.empty()) throw UsageError(option + " \"" + item + "\": use KEY=VALUE");
        out[key] = eq == std::string::npos ? "" : item.substr(eq + 1);
    }
    return out;
}

std::string labels_text(const std::map<std::string, std::string>& labels) {
    std::string out;
    for (const auto& [k, v] : labels) out += (out.empty() ? "" : ",") + k + "=" + v;
    return out;
}

bool labels_match(const std::map<std::string, std::string>& labels, const std::string& want) {
    auto eq = want.find('=');
    auto it = labels.find(want.substr(0, eq));
    if (it == labels.end()) return false;
    return eq == std::string::npos || it->second == want.substr(eq + 1);
}

store::ImageMetadata image_metadata(const Args& a) {
    store::ImageMetadata m;
    m.message = a.value("message");
    m.author = a.value("author");
    m.changes = a.all("change");
    nlohmann::json scratch = nlohmann::json::object();
    try {
        store::apply_config_changes(scratch, m.changes);
    } catch (const std::invalid_argument& e) {
        throw UsageError(e.what());
    }
    return m;
}

store::Store& Context::store() {
    if (store_) return *store_;
    std::string path = store::resolve_store_root(root);
    bool fresh = ::access(path.c_str(), F_OK) != 0;
    store_ = std::make_unique<store::Store>(path);
    store_->set_free_space_reserve(store::resolve_free_space_reserve(reserve));
    if (fresh && !root.empty() && root[0] != '/')
        std::cerr << "lamina: made a new, empty store at " << path << " (--root " << root
                  << " is relative to the working directory)\n";
    return *store_;
}

void print_json(const json& j) {
    std::cout << j.dump(2) << "\n";
}

OutputFormat output_format(const Context& ctx, const Args& a) {
    return parse_output_format(a.value("format", ctx.format));
}

bool wants_json(const Context& ctx, const Args& a) {
    std::string f = a.value("format", ctx.format);
    if (f != "table" && f != "json") throw UsageError("--format must be table or json");
    return f == "json";
}

bool stdout_is_terminal() {
    return isatty(STDOUT_FILENO) == 1;
}

bool confirm(const std::string& warning) {
    std::cout << warning << "\nAre you sure you want to continue? [y/N] " << std::flush;
    std::string answer;
    std::getline(std::cin, answer);
    if (answer == "y" || answer == "Y" || answer == "yes") return true;
    std::cout << "\n";
    return false;
}

void print_prune_report(const std::string& title, const std::vector<std::string>& removed,
                        int64_t reclaimed) {
    if (!removed.empty()) {
        std::cout << title << "\n";
        for (const auto& r : removed) std::cout << r << "\n";
        std::cout << "\n";
    }
    std::cout << "Total reclaimed space: " << human_size(reclaimed) << "\n";
}

bool stdin_is_terminal() {
    return isatty(STDIN_FILENO) == 1;
}

}  // namespace lamina::cli
