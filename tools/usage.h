// The one description of lamina's command line: every command, its aliases, operands and
// options. Parsing, `--help`, usage errors and the man page check (tests/cli) all read it.
#pragma once

#include <string>
#include <vector>

namespace lamina::cli {

struct OptionSpec {
    std::vector<std::string> spellings;  // "-q", "--quiet"
    std::string key;                     // what Args knows it by
    std::string value_name;              // "" for a switch
    std::string help;
    bool takes_value() const { return !value_name.empty(); }
};

struct CommandSpec {
    std::string name;                  // "images", "volume ls": what the handler is filed under
    std::vector<std::string> aliases;  // "image ls", "image list"
    std::string operands;              // "[REPOSITORY[:TAG]]"
    std::string summary;
    std::vector<OptionSpec> options;
};

// image, container, volume, system: `lamina GROUP VERB` names a command or an alias.
struct GroupSpec {
    std::string name;
    std::string summary;
};

const std::vector<CommandSpec>& command_specs();
const std::vector<GroupSpec>& group_specs();

// By name or alias ("rmi", "image rm"); nullptr when there is no such command.
const CommandSpec* find_command(const std::string& name);
bool is_group(const std::string& word);

// "lamina images [OPTIONS] [REPOSITORY[:TAG]]"
std::string usage_line(const CommandSpec& c);
// What `lamina COMMAND --help` prints.
std::string command_help(const CommandSpec& c);
// What `lamina GROUP --help` prints: the group's commands.
std::string group_help(const std::string& group);
// What `lamina --help` and `lamina help` print.
std::string overview_help();

}  // namespace lamina::cli
