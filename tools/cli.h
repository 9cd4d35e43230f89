// What every lamina command shares: parsed arguments, the context (store root, output format),
// and the table that maps command names to handlers. Each group of commands lives in its own
// file and adds itself to the table through an add_*_commands function declared here.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config.h"
#include "store.h"

namespace lamina::cli {

// Bad command-line input: printed as one line, exit status 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A command's options: which take a value, which are switches; the rest are operands.
// A value option given several times keeps every value in `lists` (for -v, --label, ...).
struct Args {
    std::map<std::string, std::string> values;
    std::map<std::string, std::vector<std::string>> lists;
    std::set<std::string> flags;
    std::vector<std::string> operands;

    bool has(const std::string& f) const { return flags.count(f) > 0; }
    std::string value(const std::string& k, const std::string& def = "") const {
        auto it = values.find(k);
        return it == values.end() ? def : it->second;
    }
    std::vector<std::string> all(const std::string& k) const {
        auto it = lists.find(k);
        return it == lists.end() ? std::vector<std::string>{} : it->second;
    }
};

// with_value and switches map each spelling ("-q", "--quiet") to the option's key ("quiet").
Args parse_args(const std::vector<std::string>& argv,
                const std::map<std::string, std::string>& with_value,
                const std::map<std::string, std::string>& switches);
void need_operands(const Args& a, size_t min, size_t max, const std::string& usage);

struct Context {
    std::string root;
    std::string reserve;
    std::string format = "table";  // or json
    bool json() const { return format == "json"; }
    store::Store& store() {
        if (!store_) {
            store_ = std::make_unique<store::Store>(store::resolve_store_root(root));
            store_->set_free_space_reserve(store::resolve_free_space_reserve(reserve));
        }
        return *store_;
    }
    std::unique_ptr<store::Store> store_;
};

void print_json(const nlohmann::json& j);
// The --format of this command, else the global one; table or json.
std::string output_format(const Context& ctx, const Args& a);

struct Command {
    std::function<int(Context&, const Args&)> run;
    std::map<std::string, std::string> with_value;
    std::map<std::string, std::string> switches;
};
using CommandTable = std::map<std::string, Command>;

// `lamina volume ...` (volume_cmd.cc).
void add_volume_commands(CommandTable& commands);

// pull, push, login, logout (tools/registry_cmd.cc).
void add_registry_commands(CommandTable& commands);

}  // namespace lamina::cli
