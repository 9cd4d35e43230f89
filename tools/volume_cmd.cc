// `lamina volume create|ls|inspect|rm|prune`: Docker's volume commands over the store's volumes.
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
    need_operands(a, 0, 1);
    std::string name = a.value("name");
    if (a.operands.size() == 1) {
        if (!name.empty() && name != a.operands[0])
            throw UsageError("conflicting volume names: --name " + name + " and " + a.operands[0]);
        name = a.operands[0];
    }
    store::VolumeCreateOptions opts;
    opts.name = name;
    opts.driver = a.value("driver", "local");
    opts.labels = key_values(a.all("label"), "--label");
    opts.options = key_values(a.all("opt"), "--opt");
    std::cout << ctx.store().create_volume(opts).name << "\n";
    return 0;
}

int volume_ls(Context& ctx, const Args& a) {
    need_operands(a, 0, 0);
    auto format = output_format(ctx, a);
    auto filter = store::parse_volume_filters(a.all("filter"));
    std::vector<VolumeRecord> shown;
    for (auto& v : ctx.store().volumes())
        if (filter.matches(v)) shown.push_back(std::move(v));
    Listing l;
    l.headers = {{"Name", "VOLUME NAME"}, {"Driver", "DRIVER"},
                 {"Scope", "SCOPE"},      {"Mountpoint", "MOUNTPOINT"},
                 {"Labels", "LABELS"},    {"Links", "LINKS"},
                 {"Size", "SIZE"}};
    l.default_table = "table {{.Driver}}\t{{.Name}}";
    for (const auto& v : shown) {
        l.quiet.push_back(v.name);
        l.json.push_back(volume_json(v));
        l.rows.push_back({{"Name", v.name},
                          {"Driver", v.driver},
                          {"Scope", "local"},
                          {"Mountpoint", v.mountpoint},
                          {"Labels", labels_text(v.labels)},
                          {"Links", std::to_string(v.users.size())},
                          {"Size", "N/A"}});
    }
    print_listing(l, format, a.has("quiet"));
    return 0;
}

int volume_inspect(Context& ctx, const Args& a) {
    need_operands(a, 1, SIZE_MAX);
    std::string format = a.value("format", "json");
    check_objects_format(format, "{{.Mountpoint}}");
    std::vector<json> out;
    int rc = for_each_operand(
        a, [&](const std::string& name) { out.push_back(volume_json(ctx.store().volume(name))); });
    print_objects(out, format, "{{.Mountpoint}}");
    return rc;
}

int volume_rm(Context& ctx, const Args& a) {
    need_operands(a, 1, SIZE_MAX);
    return for_each_operand(a, [&](const std::string& name) {
        try {
            ctx.store().remove_volume(name);
        } catch (const StoreError& e) {
            // -f: a volume that is not there is not an error (Docker's rm -f).
            if (a.has("force") && std::string(e.what()) == "no such volume: " + name) return;
            throw;
        }
        std::cout << name << "\n";
    });
}

int volume_prune(Context& ctx, const Args& a) {
    need_operands(a, 0, 0);
    if (!a.has("force") &&
        !confirm(a.has("all") ? "WARNING! This will remove all local volumes not used by at "
                                "least one container."
                              : "WARNING! This will remove anonymous local volumes not used by "
                                "at least one container."))
        return 0;
    auto r = ctx.store().prune_volumes(a.has("all"));
    print_prune_report("Deleted Volumes:", r.volumes, r.reclaimed);
    return 0;
}

}  // namespace

void add_volume_commands(CommandTable& commands) {
    commands["volume create"] = volume_create;
    commands["volume ls"] = volume_ls;
    commands["volume inspect"] = volume_inspect;
    commands["volume rm"] = volume_rm;
    commands["volume prune"] = volume_prune;
}

}  // namespace lamina::cli
