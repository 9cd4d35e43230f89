// `lamina volume create|ls|inspect|rm|prune`: Docker's volume commands over the store's volumes.
#include <unistd.h>

#include <iostream>

#include "cli.h"
#include "error.h"
#include "output.h"
#include "store.h"

namespace lamina::cli {
namespace {

using nlohmann::json;
using store::StoreError;
using store::VolumeRecord;

// "K=V" (or "K", an empty value) from --label and --opt.
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

json volume_json(const VolumeRecord& v) {
    return {{"CreatedAt", store::format_rfc3339(v.created)},
            {"Driver", v.driver},
            {"Labels", v.labels.empty() ? json(nullptr) : json(v.labels)},
            {"Mountpoint", v.mountpoint},
            {"Name", v.name},
            {"Options", v.options.empty() ? json(nullptr) : json(v.options)},
            {"Scope", "local"}};
}

int volume_create(Context& ctx, const Args& a) {
    if (a.operands.size() > 2)
        throw UsageError(
            "usage: lamina volume create [--label K=V]... [--driver local] [--opt K=V]... [NAME]");
    std::string name = a.value("name");
    if (a.operands.size() == 2) {
        if (!name.empty() && name != a.operands[1])
            throw UsageError("conflicting volume names: --name " + name + " and " + a.operands[1]);
        name = a.operands[1];
    }
    store::VolumeCreateOptions opts;
    opts.name = name;
    opts.driver = a.value("driver", "local");
    opts.labels = key_values(a.all("label"), "--label");
    opts.options = key_values(a.all("opt"), "--opt");
    std::cout << ctx.store().create_volume(opts).name << "\n";
    return 0;
}

// `ls -f X` is Docker's short --filter, while `rm -f` and `prune -f` are --force: the group
// parses -f as the switch, so ls takes the operands that follow it as filters.
int volume_ls(Context& ctx, const Args& a) {
    std::vector<std::string> filters = a.all("filter");
    if (a.operands.size() > 1) {
        if (!a.has("force"))
            throw UsageError("usage: lamina volume ls [-q] [--filter KEY=VALUE]...");
        filters.insert(filters.end(), a.operands.begin() + 1, a.operands.end());
    }
    auto filter = store::parse_volume_filters(filters);
    std::vector<VolumeRecord> shown;
    for (auto& v : ctx.store().volumes())
        if (filter.matches(v)) shown.push_back(std::move(v));
    if (a.has("quiet")) {
        for (const auto& v : shown) std::cout << v.name << "\n";
        return 0;
    }
    if (output_format(ctx, a) == "json") {
        json out = json::array();
        for (const auto& v : shown) out.push_back(volume_json(v));
        print_json(out);
        return 0;
    }
    Table t({"DRIVER", "VOLUME NAME"});
    for (const auto& v : shown) t.add({v.driver, v.name});
    std::cout << t.render();
    return 0;
}

int volume_inspect(Context& ctx, const Args& a) {
    if (a.operands.size() < 2) throw UsageError("usage: lamina volume inspect NAME...");
    json out = json::array();
    int rc = 0;
    for (size_t i = 1; i < a.operands.size(); ++i) {
        try {
            out.push_back(volume_json(ctx.store().volume(a.operands[i])));
        } catch (const StoreError& e) {
            std::cerr << "lamina: " << e.what() << "\n";
            rc = 1;
        }
    }
    print_json(out);
    return rc;
}

int volume_rm(Context& ctx, const Args& a) {
    if (a.operands.size() < 2) throw UsageError("usage: lamina volume rm [-f] NAME...");
    int rc = 0;
    for (size_t i = 1; i < a.operands.size(); ++i) {
        const auto& name = a.operands[i];
        try {
            ctx.store().remove_volume(name);
            std::cout << name << "\n";
        } catch (const StoreError& e) {
            // -f: a volume that is not there is not an error (Docker's rm -f).
            if (a.has("force") && std::string(e.what()) == "no such volume: " + name) continue;
            std::cerr << "lamina: " << e.what() << "\n";
            rc = 1;
        }
    }
    return rc;
}

int volume_prune(Context& ctx, const Args& a) {
    if (a.operands.size() > 1) throw UsageError("usage: lamina volume prune [-a] [-f]");
    if (!a.has("force")) {
        std::cout << (a.has("all") ? "WARNING! This will remove all local volumes not used by "
                                     "at least one container."
                                   : "WARNING! This will remove anonymous local volumes not used "
                                     "by at least one container.")
                  << "\nAre you sure you want to continue? [y/N] " << std::flush;
        std::string answer;
        std::getline(std::cin, answer);
        if (answer != "y" && answer != "Y" && answer != "yes") {
            std::cout << "\n";
            return 0;
        }
    }
    auto r = ctx.store().prune_volumes(a.has("all"));
    if (!r.volumes.empty()) {
        std::cout << "Deleted Volumes:\n";
        for (const auto& n : r.volumes) std::cout << n << "\n";
        std::cout << "\n";
    }
    std::cout << "Total reclaimed space: " << human_size(r.reclaimed) << "\n";
    return 0;
}

int cmd_volume(Context& ctx, const Args& a) {
    const char* usage =
        "usage: lamina volume create|ls|inspect|rm|prune ... (lamina(1), \"Volumes\")";
    if (a.operands.empty()) throw UsageError(usage);
    const std::string& sub = a.operands[0];
    if (sub == "create") return volume_create(ctx, a);
    if (sub == "ls" || sub == "list") return volume_ls(ctx, a);
    if (sub == "inspect") return volume_inspect(ctx, a);
    if (sub == "rm" || sub == "remove") return volume_rm(ctx, a);
    if (sub == "prune") return volume_prune(ctx, a);
    throw UsageError("unknown volume command \"" + sub + "\" (create, ls, inspect, rm, prune)");
}

}  // namespace

void add_volume_commands(CommandTable& commands) {
    commands["volume"] = {cmd_volume,
                          {{"--label", "label"},
                           {"--driver", "driver"},
                           {"-d", "driver"},
                           {"--opt", "opt"},
                           {"-o", "opt"},
                           {"--name", "name"},
                           {"--filter", "filter"},
                           {"--format", "format"}},
                          {{"-q", "quiet"},
                           {"--quiet", "quiet"},
                           {"-f", "force"},
                           {"--force", "force"},
                           {"-a", "all"},
                           {"--all", "all"}}};
}

}  // namespace lamina::cli
