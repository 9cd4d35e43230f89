// The container commands: create, mount, umount, ps, rm, diff, commit, export.
#include <algorithm>
#include <iostream>

#include "cli.h"
#include "error.h"
#include "fsutil.h"
#include "output.h"
#include "store.h"
#include "streams.h"

namespace lamina::cli {
namespace {

using nlohmann::json;
using store::StoreError;

int cmd_create(Context& ctx, const Args& a) {
    need_operands(a, 1, 1);
    std::vector<store::MountSpec> mounts;
    for (const auto& v : a.all("volume")) mounts.push_back(store::parse_volume_flag(v));
    for (const auto& m : a.all("mount")) mounts.push_back(store::parse_mount_flag(m));
    auto c = ctx.store().create_container(a.operands[0], a.value("name"), mounts);
    std::cout << c.id << "\n";
    return 0;
}

int cmd_mount(Context& ctx, const Args& a) {
    need_operands(a, 1, 1);
    std::cout << ctx.store().mount(a.operands[0]) << "\n";
    return 0;
}

int cmd_umount(Context& ctx, const Args& a) {
    need_operands(a, 1, 1);
    ctx.store().unmount(a.operands[0]);
    return 0;
}

// What `ps --filter` asks of a container; keys as docker's (labels: lamina's containers carry
// none, so a label filter matches nothing).
// ps's STATUS: "Dead" for a union whose daemon is gone, as docker names a defunct container.
const char* container_status(const store::ContainerState& c) {
    if (c.dead) return "Dead";
    return c.mounted ? "Mounted" : "Created";
}

// The same in the lower case docker's State and the status filter use.
std::string container_state(const store::ContainerState& c) {
    std::string s = container_status(c);
    s[0] = static_cast<char>(s[0] - 'A' + 'a');
    return s;
}

struct ContainerFilter {
    std::map<std::string, std::vector<std::string>> by_key;
    std::map<std::string, store::ImageRecord> ancestors;  // ancestor= value -> image

    bool matches(const store::ContainerState& c, const store::ImageRecord* image) const {
        auto any = [&](const std::string& key, auto pred) {
            auto it = by_key.find(key);
            return it == by_key.end() || it->second.empty() ||
                   std::any_of(it->second.begin(), it->second.end(), pred);
        };
        return any("id", [&](const std::string& v) { return c.record.id.starts_with(v); }) &&
               any("name",
                   [&](const std::string& v) {
                       return c.record.name.find(v) != std::string::npos;
                   }) &&
               any("status", [&](const std::string& v) { return v == container_state(c); }) &&
               any("label", [](const std::string&) { return false; }) &&
               any("ancestor", [&](const std::string& v) {
                   auto it = ancestors.find(v);
                   return it != ancestors.end() && image && descends(*image, it->second);
               });
    }

    // docker's ancestor: the image itself or one built on all of its layers.
    static bool descends(const store::ImageRecord& image, const store::ImageRecord& ancestor) {
        if (image.id == ancestor.id) return true;
        if (ancestor.layers.empty() || ancestor.layers.size() > image.layers.size()) return false;
        return std::equal(ancestor.layers.begin(), ancestor.layers.end(), image.layers.begin(),
                          [](const auto& x, const auto& y) { return x.chain_id == y.chain_id; });
    }
};

int cmd_ps(Context& ctx, const Args& a) {
    need_operands(a, 0, 0);
    ContainerFilter filter;
    filter.by_key = split_filters(a.all("filter"), {"id", "name", "status", "ancestor", "label"});
    for (const auto& v : filter.by_key["status"])
        if (v != "created" && v != "mounted" && v != "dead")
            throw UsageError("bad filter \"status=" + v + "\": want created, mounted or dead");
    bool all = a.has("all") || !filter.by_key["status"].empty();
    for (const auto& v : filter.by_key["ancestor"]) {
        try {
            filter.ancestors[v] = ctx.store().image(v);
        } catch (const StoreError&) {
            // docker lists nothing for an ancestor it does not know.
        }
    }
    auto format = output_format(ctx, a);
    bool sizes = a.has("size") || (format.kind == OutputFormat::Kind::Template &&
                                   format.text.find(".Size") != std::string::npos);
    auto list = ctx.store().containers(sizes);
    std::map<std::string, store::ImageSummary> images;
    for (auto& s : ctx.store().images()) images[s.image.id] = std::move(s);
    auto image_name = [&](const std::string& id) {
        auto it = images.find(id);
        if (it == images.end() || it->second.image.names.empty()) return short_id(id);
        return it->second.image.names[0];
    };
    std::vector<const store::ContainerState*> shown;
    for (const auto& c : list) {
        if (!all && !c.mounted) continue;
        auto it = images.find(c.record.image_id);
        if (!filter.matches(c, it == images.end() ? nullptr : &it->second.image)) continue;
        shown.push_back(&c);
    }
    bool no_trunc = a.has("no-trunc");
    auto id_of = [&](const std::string& id) { return no_trunc ? id : short_id(id); };
    if (a.has("quiet")) {
        for (const auto* c : shown) std::cout << id_of(c->record.id) << "\n";
        return 0;
    }
    if (format.kind == OutputFormat::Kind::Json) {
        json out = json::array();
        for (const auto* c : shown) {
            json j = {{"Id", c->record.id},
                      {"Name", c->record.name},
                      {"Image", image_name(c->record.image_id)},
                      {"ImageID", c->record.image_id},
                      {"Created", store::format_rfc3339(c->record.created)},
                      {"Mounted", c->mounted},
                      {"State", container_status(*c)}};
            if (sizes) {
                j["SizeRw"] = c->size;
                j["SizeRootFs"] = c->virtual_size;
            }
            out.push_back(j);
        }
        print_json(out);
        return 0;
    }
    Listing l;
    l.headers = {{"ID", "CONTAINER ID"},      {"Image", "IMAGE"},        {"ImageID", "IMAGE ID"},
                 {"CreatedAt", "CREATED AT"}, {"RunningFor", "CREATED"}, {"Status", "STATUS"},
                 {"State", "STATE"},          {"Names", "NAMES"},        {"Size", "SIZE"},
                 {"Labels", "LABELS"}};
    l.default_table = "table {{.ID}}\t{{.Image}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}";
    if (a.has("size")) l.default_table += "\t{{.Size}}";
    int64_t now = store::now_seconds();
    for (const auto* c : shown) {
        std::string size =
            sizes ? human_size(c->size) + " (virtual " + human_size(c->virtual_size) + ")" : "";
        l.rows.push_back({{"ID", id_of(c->record.id)},
                          {"Image", image_name(c->record.image_id)},
                          {"ImageID", id_of(c->record.image_id)},
                          {"CreatedAt", docker_time(c->record.created)},
                          {"RunningFor", human_age(c->record.created, now)},
                          {"Status", container_status(*c)},
                          {"State", container_state(*c)},
                          {"Names", c->record.name},
                          {"Size", size},
                          {"Labels", ""}});
    }
    print_listing(l, format);
    return 0;
}

int cmd_rm(Context& ctx, const Args& a) {
    need_operands(a, 1, SIZE_MAX);
    int rc = 0;
    for (const auto& ref : a.operands) {
        try {
            ctx.store().remove_container(ref, a.has("force"), a.has("volumes"));
            std::cout << ref << "\n";
        } catch (const StoreError& e) {
            std::cerr << "lamina: " << e.what() << "\n";
            rc = 1;
        }
    }
    return rc;
}

int cmd_diff(Context& ctx, const Args& a) {
    need_operands(a, 1, 1);
    bool as_json = wants_json(ctx, a);
    auto changes = ctx.store().diff(a.operands[0]);
    if (as_json) {
        json out = json::array();
        for (const auto& c : changes)
            out.push_back({{"Kind", c.kind == 'C' ? 0 : c.kind == 'A' ? 1 : 2}, {"Path", c.path}});
        print_json(out);
        return 0;
    }
    for (const auto& c : changes) std::cout << c.kind << " " << c.path << "\n";
    return 0;
}

int cmd_commit(Context& ctx, const Args& a) {
    need_operands(a, 1, 2);
    auto img = ctx.store().commit(a.operands[0], a.operands.size() > 1 ? a.operands[1] : "",
                                  a.value("message"));
    std::cout << img.id << "\n";
    return 0;
}

// The merged tree as the container sees it, without its volumes and binds (docker export's
// rule); an unmounted container is mounted for the export and unmounted after.
int cmd_export(Context& ctx, const Args& a) {
    need_operands(a, 1, 1);
    std::string out = a.value("output");
    if (out.empty() && stdout_is_terminal())
        throw UsageError(
            "export: refusing to write a tar to a terminal; give -o FILE or "
            "redirect stdout");
    auto& st = ctx.store();
    auto c = st.container(a.operands[0]);
    bool was_mounted = st.is_mounted(c);
    std::string merged = st.mount(c.id);
    try {
        write_tree_tar(merged, out);
    } catch (...) {
        if (!was_mounted) st.unmount(c.id);
        throw;
    }
    if (!was_mounted) st.unmount(c.id);
    return 0;
}

}  // namespace

void add_container_commands(CommandTable& commands) {
    commands["create"] = cmd_create;
    commands["mount"] = cmd_mount;
    commands["umount"] = cmd_umount;
    commands["ps"] = cmd_ps;
    commands["rm"] = cmd_rm;
    commands["diff"] = cmd_diff;
    commands["commit"] = cmd_commit;
    commands["export"] = cmd_export;
}

}  // namespace lamina::cli
