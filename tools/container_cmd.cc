// The container commands: create, mount, umount, ps, rm, diff, commit, export, rename, cp,
// container prune.
#include <algorithm>
#include <cstdlib>
#include <iostream>

#include "cli.h"
#include "container_copy.h"
#include "error.h"
#include "fsutil.h"
#include "output.h"
#include "registry/settings.h"
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
    store::ContainerRecord settings;
    settings.name = a.value("name");
    for (const auto& e : a.all("env")) {
        // docker's -e KEY alone takes KEY's value from lamina's own environment.
        if (e.find('=') != std::string::npos) {
            settings.env.push_back(e);
        } else if (const char* v = std::getenv(e.c_str())) {
            settings.env.push_back(e + "=" + v);
        }
    }
    settings.labels = key_values(a.all("label"), "--label");
    auto c = ctx.store().create_container(a.operands[0], settings, mounts);
    std::cout << c.id << "\n";
    return 0;
}

int cmd_rename(Context& ctx, const Args& a) {
    need_operands(a, 2, 2);
    ctx.store().rename_container(a.operands[0], a.operands[1]);
    return 0;
}

int container_prune(Context& ctx, const Args& a) {
    need_operands(a, 0, 0);
    if (!a.has("force") && !confirm("WARNING! This will remove all unmounted containers."))
        return 0;
    auto r = ctx.store().prune_containers();
    print_prune_report("Deleted Containers:", r.containers, r.reclaimed);
    return 0;
}

int cmd_mount(Context& ctx, const Args& a) {
    need_operands(a, 1, 1);
    // config.json's "lazy-background": the rest of the lazy layers streams in after the mount.
    // Read first (a bad config mounts nothing), and only for an image with lazy layers.
    std::string image_id = ctx.store().container(a.operands[0]).image_id;
    bool background = false;
    auto lazy = ctx.store().lazy_layers();
    for (const auto& l : ctx.store().image(image_id).layers)
        if (lazy.count(l.chain_id)) background = true;
    background = background && registry::Settings::load().lazy_background;
    std::cout << ctx.store().mount(a.operands[0]) << "\n";
    if (background) start_lazy_completer(ctx.store(), image_id, std::nullopt);
    return 0;
}

int cmd_umount(Context& ctx, const Args& a) {
    need_operands(a, 1, 1);
    ctx.store().unmount(a.operands[0]);
    return 0;
}

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

// What `ps --filter` asks of a container; keys as docker's.
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
               any("label",
                   [&](const std::string& v) { return labels_match(c.record.labels, v); }) &&
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
    Listing l;
    l.headers = {{"ID", "CONTAINER ID"},      {"Image", "IMAGE"},        {"ImageID", "IMAGE ID"},
                 {"CreatedAt", "CREATED AT"}, {"RunningFor", "CREATED"}, {"Status", "STATUS"},
                 {"State", "STATE"},          {"Names", "NAMES"},        {"Size", "SIZE"},
                 {"Labels", "LABELS"}};
    l.default_table = "table {{.ID}}\t{{.Image}}\t{{.RunningFor}}\t{{.Status}}\t{{.Names}}";
    if (a.has("size")) l.default_table += "\t{{.Size}}";
    int64_t now = store::now_seconds();
    // Lazy layers (docs/lazy.md): how much of each the container's image has local.
    std::map<std::string, store::LazyProgress> lazy;
    if (sizes) lazy = ctx.store().lazy_layers();
    for (const auto* c : shown) {
        l.quiet.push_back(id_of(c->record.id));
        json j = {{"Id", c->record.id},
                  {"Name", c->record.name},
                  {"Image", image_name(c->record.image_id)},
                  {"ImageID", c->record.image_id},
                  {"Created", store::format_rfc3339(c->record.created)},
                  {"Mounted", c->mounted},
                  {"State", container_status(*c)},
                  {"Labels", c->record.labels}};
        std::string size =
            sizes ? human_size(c->size) + " (virtual " + human_size(c->virtual_size) + ")" : "";
        if (sizes) {
            j["SizeRw"] = c->size;
            j["SizeRootFs"] = c->virtual_size;
            json layers = json::array();
            store::LazyProgress sum;
            auto it = images.find(c->record.image_id);
            if (it != images.end())
                for (const auto& ref : it->second.image.layers) {
                    auto p = lazy.find(ref.chain_id);
                    if (p == lazy.end()) continue;
                    layers.push_back(lazy_progress_json(ref.chain_id, p->second));
                    sum.files += p->second.files;
                    sum.files_local += p->second.files_local;
                    sum.bytes += p->second.bytes;
                    sum.bytes_local += p->second.bytes_local;
                }
            if (!layers.empty()) {
                j["LazyLayers"] = layers;
                size += ", lazy " + std::to_string(layers.size()) + " layer" +
                        (layers.size() == 1 ? "" : "s") + ": " + lazy_progress_text(sum);
            }
        }
        l.json.push_back(j);
        l.rows.push_back({{"ID", id_of(c->record.id)},
                          {"Image", image_name(c->record.image_id)},
                          {"ImageID", id_of(c->record.image_id)},
                          {"CreatedAt", docker_time(c->record.created)},
                          {"RunningFor", human_age(c->record.created, now)},
                          {"Status", container_status(*c)},
                          {"State", container_state(*c)},
                          {"Names", c->record.name},
                          {"Size", size},
                          {"Labels", labels_text(c->record.labels)}});
    }
    print_listing(l, format, a.has("quiet"));
    return 0;
}

int cmd_rm(Context& ctx, const Args& a) {
    need_operands(a, 1, SIZE_MAX);
    return for_each_operand(a, [&](const std::string& ref) {
        ctx.store().remove_container(ref, a.has("force"), a.has("volumes"));
        std::cout << ref << "\n";
    });
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
                                  image_metadata(a));
    std::cout << img.id << "\n";
    return 0;
}

// A container's merged tree for the length of one command: an unmounted container is mounted
// and unmounted after (export and cp read and write containers that are not mounted).
class MountedForCommand {
public:
    MountedForCommand(store::Store& st, const std::string& ref) : st_(st), c_(st.container(ref)) {
        was_mounted_ = st_.is_mounted(c_);
        merged_ = st_.mount(c_.id);
    }
    ~MountedForCommand() {
        if (was_mounted_) return;
        try {
            st_.unmount(c_.id);
        } catch (const std::exception& e) {
            std::cerr << "lamina: warning: " << e.what() << "\n";
        }
    }
    MountedForCommand(const MountedForCommand&) = delete;
    MountedForCommand& operator=(const MountedForCommand&) = delete;
    const std::string& merged() const { return merged_; }
    const store::ContainerRecord& container() const { return c_; }

private:
    store::Store& st_;
    store::ContainerRecord c_;
    bool was_mounted_ = false;
    std::string merged_;
};

// The merged tree as the container sees it, without its volumes and binds (docker export's
// rule).
int cmd_export(Context& ctx, const Args& a) {
    need_operands(a, 1, 1);
    std::string out = a.value("output");
    if (out.empty() && stdout_is_terminal())
        throw UsageError(
            "export: refusing to write a tar to a terminal; give -o FILE or "
            "redirect stdout");
    MountedForCommand m(ctx.store(), a.operands[0]);
    write_tree_tar(m.merged(), out);
    return 0;
}

// "CONTAINER:PATH" as docker cp reads it: a colon before any slash, and not a path starting
// with / or . (how a host path holding a colon is written).
std::optional<std::pair<std::string, std::string>> container_path(const std::string& arg) {
    if (arg.starts_with("/") || arg.starts_with(".")) return std::nullopt;
    auto colon = arg.find(':');
    if (colon == std::string::npos || colon == 0 || arg.find('/') < colon) return std::nullopt;
    return std::pair{arg.substr(0, colon), arg.substr(colon + 1)};
}

int cmd_cp(Context& ctx, const Args& a) {
    need_operands(a, 2, 2);
    auto from = container_path(a.operands[0]);
    auto to = container_path(a.operands[1]);
    if (bool(from) == bool(to))
        throw UsageError("cp: give one CONTAINER:PATH and one host path (lamina cp --help)");
    bool stream = a.operands[0] == "-" || a.operands[1] == "-";
    if (stream && a.operands[1] == "-" && stdout_is_terminal())
        throw UsageError("cp: refusing to write a tar to a terminal; redirect stdout");
    if (stream && a.operands[0] == "-" && stdin_is_terminal())
        throw UsageError("cp -: stdin is a terminal, not a tar");
    CopyOptions o;
    o.archive = a.has("archive");
    o.follow_link = a.has("follow-link");
    MountedForCommand m(ctx.store(), from ? from->first : to->first);
    const std::string& name = m.container().name;
    if (from && stream) {
        copy_out_as_tar(m.merged(), name, from->second, o);
    } else if (from) {
        copy_out_of_container(m.merged(), name, from->second, a.operands[1], o);
    } else if (stream) {
        copy_tar_into(m.merged(), name, to->second, o);
    } else {
        copy_into_container(a.operands[0], m.merged(), name, to->second, o);
    }
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
    commands["rename"] = cmd_rename;
    commands["cp"] = cmd_cp;
    commands["container prune"] = container_prune;
}

}  // namespace lamina::cli
