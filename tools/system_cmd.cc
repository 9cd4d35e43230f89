// The system commands: system df, system prune, info.
#include <iostream>

#include "cli.h"
#include "lazy_cache.h"
#include "output.h"
#include "registry/settings.h"
#include "store.h"

namespace lamina::cli {
namespace {

using nlohmann::json;

int system_df(Context& ctx, const Args& a) {
    need_operands(a, 0, 0);
    auto format = output_format(ctx, a);
    auto du = ctx.store().disk_usage();
    auto vu = ctx.store().volume_usage();
    auto lazy = ctx.store().lazy_layers();
    store::LazyProgress lazy_sum;
    json lazy_details = json::array();
    for (const auto& [id, p] : lazy) {
        lazy_details.push_back(lazy_progress_json(id, p));
        lazy_sum.files += p.files;
        lazy_sum.files_local += p.files_local;
        lazy_sum.bytes += p.bytes;
        lazy_sum.bytes_local += p.bytes_local;
    }
    // config.json's "lazy-cache-size": the bound on what incomplete lazy layers keep (filled
    // files and kept compressed ranges), which the fetcher holds them to.
    auto cache_limit = registry::Settings::load_config_json().lazy_cache_size;
    int64_t cache_bytes = 0;
    for (const auto& [id, p] : lazy) {
        try {
            cache_bytes += store::lazy_local_bytes(ctx.store().lazy_layer_dir(id)).total();
        } catch (const std::exception&) {
            // completed meanwhile
        }
    }
    Listing l;
    {
        json images = json::array();
        for (const auto& s : du.image_details) images.push_back(image_json(s));
        json volumes = json::array();
        for (const auto& v : vu.details)
            volumes.push_back({{"Name", v.name},
                               {"Links", v.users.size()},
                               {"Size", v.size},
                               {"Mountpoint", v.mountpoint}});
        l.json = {{"Images",
                   {{"Total", du.images},
                    {"Active", du.images_active},
                    {"Size", du.images_size},
                    {"Reclaimable", du.images_reclaimable}}},
                  {"Containers",
                   {{"Total", du.containers},
                    {"Active", du.containers_active},
                    {"Size", du.containers_size},
                    {"Reclaimable", du.containers_reclaimable}}},
                  {"Volumes",
                   {{"Total", vu.total},
                    {"Active", vu.active},
                    {"Size", vu.size},
                    {"Reclaimable", vu.reclaimable}}},
                  {"Layers", {{"Total", du.layers}, {"Size", du.layers_size}}},
                  {"LazyLayers",
                   {{"Total", lazy.size()},
                    {"Bytes", lazy_sum.bytes},
                    {"BytesLocal", lazy_sum.bytes_local},
                    {"CacheBytes", cache_bytes},
                    {"Details", lazy_details}}},
                  {"BlobsSize", du.blobs_size},
                  {"PartialDownloadsSize", du.downloads_size},
                  {"VolumeDetails", volumes},
                  {"ImageDetails", images}};
    }
    if (cache_limit) l.json["LazyLayers"]["CacheLimit"] = *cache_limit;
    auto pct = [](int64_t part, int64_t whole) {
        return whole > 0 ? " (" + std::to_string(part * 100 / whole) + "%)" : std::string();
    };
    l.headers = {{"Type", "TYPE"},
                 {"TotalCount", "TOTAL"},
                 {"Active", "ACTIVE"},
                 {"Size", "SIZE"},
                 {"Reclaimable", "RECLAIMABLE"}};
    l.default_table = "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}";
    auto row = [&](const std::string& type, const std::string& total, const std::string& active,
                   const std::string& size, const std::string& reclaimable) {
        l.rows.push_back({{"Type", type},
                          {"TotalCount", total},
                          {"Active", active},
                          {"Size", size},
                          {"Reclaimable", reclaimable}});
    };
    row("Images", std::to_string(du.images), std::to_string(du.images_active),
        human_size(du.images_size),
        human_size(du.images_reclaimable) + pct(du.images_reclaimable, du.images_size));
    row("Containers", std::to_string(du.containers), std::to_string(du.containers_active),
        human_size(du.containers_size),
        human_size(du.containers_reclaimable) + pct(du.containers_reclaimable, du.containers_size));
    row("Local Volumes", std::to_string(vu.total), std::to_string(vu.active), human_size(vu.size),
        human_size(vu.reclaimable) + pct(vu.reclaimable, vu.size));
    row("Layers", std::to_string(du.layers), "", human_size(du.layers_size), "");
    if (!lazy.empty() || cache_limit)
        row("Lazy layers", std::to_string(lazy.size()), "",
            lazy_progress_text(lazy_sum) +
                (cache_limit ? ", cache " + human_size(cache_bytes) + " of limit " +
                                   human_size(static_cast<int64_t>(*cache_limit))
                             : ""),
            "");
    row("Blobs (for save)", "", "", human_size(du.blobs_size), "");
    row("Partial downloads", "", "", human_size(du.downloads_size), human_size(du.downloads_size));
    print_listing(l, format);
    if (a.has("verbose") && format.kind == OutputFormat::Kind::Table) {
        Table v({"REPOSITORY", "TAG", "IMAGE ID", "LAYERS", "SIZE", "SHARED SIZE", "UNIQUE SIZE",
                 "CONTAINERS"});
        for (const auto& s : du.image_details) {
            auto names =
                s.image.names.empty() ? std::vector<std::string>{"<none>:<none>"} : s.image.names;
            auto [repo, tag] = store::split_reference(names[0]);
            v.add({repo, tag, short_id(s.image.id), std::to_string(s.image.layers.size()),
                   human_size(s.size), human_size(s.shared_size),
                   human_size(s.size - s.shared_size), std::to_string(s.containers)});
        }
        std::cout << "\nImages space usage:\n\n" << v.render();
        Table vols({"VOLUME NAME", "LINKS", "SIZE"});
        for (const auto& vol : vu.details)
            vols.add({vol.name, std::to_string(vol.users.size()), human_size(vol.size)});
        std::cout << "\nLocal Volumes space usage:\n\n" << vols.render();
        if (!lazy.empty()) {
            Table lt({"LAYER", "FILES LOCAL", "BYTES LOCAL"});
            for (const auto& [id, p] : lazy)
                lt.add({short_id(id),
                        std::to_string(p.files_local) + " of " + std::to_string(p.files),
                        human_size(p.bytes_local) + " of " + human_size(p.bytes)});
            std::cout << "\nLazy layers space usage:\n\n" << lt.render();
        }
    }
    return 0;
}

int system_prune(Context& ctx, const Args& a) {
    need_operands(a, 0, 0);
    if (!a.has("force") &&
        !confirm(std::string("WARNING! This will remove:\n  - all unmounted containers\n") +
                 (a.has("all") ? "  - all images without at least one container associated to them"
                               : "  - all dangling images") +
                 "\n  - the layers only they use"))
        return 0;
    auto r = ctx.store().prune(a.has("all"));
    for (const auto& c : r.containers) std::cout << "Deleted container: " << c << "\n";
    for (const auto& i : r.images) std::cout << "Deleted image: " << i << "\n";
    if (r.downloads_reclaimed > 0)
        std::cout << "Deleted partial downloads: " << human_size(r.downloads_reclaimed) << "\n";
    std::cout << "Total reclaimed space: " << human_size(r.reclaimed) << "\n";
    return 0;
}

int cmd_info(Context& ctx, const Args& a) {
    need_operands(a, 0, 0);
    auto format = output_format(ctx, a);
    auto i = ctx.store().info();
    json j = {{"Driver", i.driver},
              {"DriverVersion", i.driver_version},
              {"DriverPath", i.laminafs_path},
              {"RootDir", i.root},
              {"BackingFilesystem", i.backing_filesystem},
              {"KernelWhiteouts", i.kernel_whiteouts},
              {"TrustedXattrs", i.trusted_xattrs},
              {"UserXattrs", i.user_xattrs},
              {"Images", i.images},
              {"Layers", i.layers},
              {"Containers", i.containers},
              {"ContainersMounted", i.containers_mounted}};
    if (format.kind != OutputFormat::Kind::Table) {
        // info's JSON is one object, not a list of one.
        if (format.kind == OutputFormat::Kind::Json)
            print_json(j);
        else
            print_objects({j}, format.text, "{{.RootDir}}");
        return 0;
    }
    auto yes = [](bool b) { return b ? "true" : "false"; };
    std::cout << "Containers: " << i.containers << "\n"
              << " Mounted: " << i.containers_mounted << "\n"
              << "Images: " << i.images << "\n"
              << "Layers: " << i.layers << "\n"
              << "Storage Driver: " << i.driver << "\n"
              << " Version: " << i.driver_version << "\n"
              << " Binary: " << i.laminafs_path << "\n"
              << " Backing Filesystem: " << i.backing_filesystem << "\n"
              << " Kernel Whiteouts (mknod 0/0): " << yes(i.kernel_whiteouts) << "\n"
              << " Trusted Xattrs: " << yes(i.trusted_xattrs) << "\n"
              << " User Xattrs: " << yes(i.user_xattrs) << "\n"
              << "Root Dir: " << i.root << "\n";
    return 0;
}

}  // namespace

void add_system_commands(CommandTable& commands) {
    commands["system df"] = system_df;
    commands["system prune"] = system_prune;
    commands["info"] = cmd_info;
}

}  // namespace lamina::cli
