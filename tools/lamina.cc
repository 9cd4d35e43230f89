// lamina: the command line of the container store. This file finds the command (a verb, or a
// group and a verb) and hands it its arguments; each group's commands live in *_cmd.cc.
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <iostream>
#include <string>
#include <vector>

#include "cli.h"
#include "error.h"
#include "usage.h"

namespace lamina::cli {
namespace {

CommandTable all_commands() {
    CommandTable commands;
    add_image_commands(commands);
    add_container_commands(commands);
    add_volume_commands(commands);
    add_system_commands(commands);
    add_registry_commands(commands);
    return commands;
}

void print_version() {
    std::cout << "lamina version " << LAMINA_VERSION << "\n";
}

// `lamina help [COMMAND|GROUP [VERB]]`
int help(const std::vector<std::string>& words) {
    std::string name;
    for (const auto& w : words) name += (name.empty() ? "" : " ") + w;
    if (name.empty()) {
        std::cout << overview_help();
        return 0;
    }
    if (const CommandSpec* c = find_command(name)) {
        std::cout << command_help(*c);
        return 0;
    }
    if (is_group(name)) {
        std::cout << group_help(name);
        return 0;
    }
    throw UsageError("unknown command \"" + name + "\" (lamina help lists them)");
}

// Logs go to stderr, quiet unless asked for: output on stdout stays what scripts read.
void set_up_logging(const std::string& level) {
    auto lvl = spdlog::level::from_str(level);
    if (lvl == spdlog::level::off && level != "off")
        throw UsageError("--log-level must be debug, info, warn, error or off");
    auto logger = spdlog::stderr_logger_st("lamina");
    logger->set_pattern("lamina: %l: %v");
    spdlog::set_default_logger(logger);
    spdlog::set_level(lvl);
}

int run(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    Context ctx;
    std::string log_level = "warn";
    size_t i = 0;
    for (; i < args.size() && args[i].starts_with("-"); ++i) {
        const std::string& a = args[i];
        if (a == "-h" || a == "--help") {
            std::cout << overview_help();
            return 0;
        }
        if (a == "-v" || a == "--version") {
            print_version();
            return 0;
        }
        auto value = [&](const std::string& opt) -> std::string {
            if (a.starts_with(opt + "=")) return a.substr(opt.size() + 1);
            if (i + 1 >= args.size()) throw UsageError("option " + opt + " needs a value");
            return args[++i];
        };
        if (a == "--root" || a.starts_with("--root=")) {
            ctx.root = value("--root");
        } else if (a == "--reserve" || a.starts_with("--reserve=")) {
            ctx.reserve = value("--reserve");
        } else if (a == "--log-level" || a.starts_with("--log-level=")) {
            log_level = value("--log-level");
        } else if (a == "-D" || a == "--debug") {
            log_level = "debug";
        } else if (a == "--format" || a.starts_with("--format=")) {
            ctx.format = value("--format");
            if (ctx.format != "table" && ctx.format != "json")
                throw UsageError("--format must be table or json");
        } else {
            throw UsageError("unknown option " + a + " (lamina --help lists them)");
        }
    }
    set_up_logging(log_level);
    if (i >= args.size()) {
        std::cerr << overview_help();
        return 2;
    }
    std::string name = args[i++];
    if (is_group(name)) {
        if (i >= args.size()) {
            std::cerr << group_help(name);
            return 2;
        }
        if (args[i] == "-h" || args[i] == "--help") {
            std::cout << group_help(name);
            return 0;
        }
        std::string verb = args[i++];
        if (!find_command(name + " " + verb))
            throw UsageError("unknown " + name + " command \"" + verb + "\" (lamina " + name +
                             " --help lists them)");
        name += " " + verb;
    }
    std::vector<std::string> rest(args.begin() + static_cast<long>(i), args.end());
    if (name == "help" && (rest.empty() || !rest[0].starts_with("-"))) return help(rest);
    const CommandSpec* spec = find_command(name);
    if (!spec) throw UsageError("unknown command \"" + name + "\" (lamina --help lists them)");
    ctx.command = name;
    Args parsed = parse_args(rest, *spec);
    if (parsed.help) {
        std::cout << command_help(*spec);
        return 0;
    }
    if (spec->name == "version") {
        need_operands(parsed, 0, 0);
        print_version();
        return 0;
    }
    CommandTable commands = all_commands();
    auto it = commands.find(spec->name);
    if (it == commands.end()) throw std::logic_error("no handler for \"" + spec->name + "\"");
    return it->second(ctx, parsed);
}

}  // namespace
}  // namespace lamina::cli

int main(int argc, char** argv) {
    try {
        return lamina::cli::run(argc, argv);
    } catch (const lamina::cli::UsageError& e) {
        std::cerr << "lamina: " << e.what() << (std::string(e.what()).ends_with("\n") ? "" : "\n");
        return 2;
    } catch (const std::exception& e) {
        std::cerr << "lamina: " << e.what() << "\n";
        return 1;
    }
}
