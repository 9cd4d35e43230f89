// lamina: the command line of the container store (load, create, mount, diff, commit, save...).
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli.h"
#include "config.h"
#include "digest.h"
#include "error.h"
#include "fsutil.h"
#include "output.h"
#include "store.h"

namespace lamina::cli {
namespace {

using nlohmann::json;
using store::Store;
using store::StoreError;

json image_json(const store::ImageSummary& s) {
    json layers = json::array();
    for (const auto& l : s.image.layers) layers.push_back(l.chain_id);
    return {{"Id", s.image.id},
            {"RepoTags", s.image.names},
            {"Created", store::format_rfc3339(s.created)},
            {"Size", s.size},
            {"SharedSize", s.shared_size},
            {"Containers", s.containers},
            {"Layers", layers}};
}

int cmd_images(Context& ctx, const Args& a) {
    need_operands(a, 0, 1, "images [--format json] [REPOSITORY[:TAG]]");
    auto images = ctx.store().images();
    std::string filter = a.operands.empty() ? "" : a.operands[0];
    auto matches = [&](const std::string& name) {
        if (filter.empty()) return true;
        auto [repo, tag] = store::split_reference(name);
        return name == filter || repo == filter;
    };
    if (output_format(ctx, a) == "json") {
        json out = json::array();
        for (const auto& s : images) {
            bool any = filter.empty();
            for (const auto& n : s.image.names) any = any || matches(n);
            if (any) out.push_back(image_json(s));
        }
        print_json(out);
        return 0;
    }
    Table t({"REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"});
    int64_t now = store::now_seconds();
    for (const auto& s : images) {
        std::vector<std::string> names = s.image.names;
        if (names.empty()) {
            if (!filter.empty()) continue;
            names.push_back("<none>:<none>");
        }
        for (const auto& n : names) {
            if (n != "<none>:<none>" && !matches(n)) continue;
            auto [repo, tag] = store::split_reference(n);
            t.add({repo, tag, short_id(s.image.id), human_age(s.created, now), human_size(s.size)});
        }
    }
    std::cout << t.render();
    return 0;
}

int cmd_history(Context& ctx, const Args& a) {
    need_operands(a, 1, 1, "history [--no-trunc] [--format json] IMAGE");
    auto img = ctx.store().image(a.operands[0]);
    auto hist = ctx.store().history(a.operands[0]);
    bool no_trunc = a.has("no-trunc");
    if (output_format(ctx, a) == "json") {
        json out = json::array();
        for (size_t i = 0; i < hist.size(); ++i) {
            const auto& h = hist[i];
            out.push_back({{"Id", i == 0 ? img.id : "<missing>"},
                           {"Created", store::format_rfc3339(h.created)},
                           {"CreatedBy", h.created_by},
                           {"Size", h.size},
                           {"Comment", h.comment},
                           {"Layer", h.layer}});
        }
        print_json(out);
        return 0;
    }
    Table t({"IMAGE", "CREATED", "CREATED BY", "SIZE", "LAYER", "COMMENT"});
    int64_t now = store::now_seconds();
    for (size_t i = 0; i < hist.size(); ++i) {
        const auto& h = hist[i];
        std::string by = no_trunc ? h.created_by : truncate(h.created_by, 45);
        std::string layer = h.layer.empty() ? "" : (no_trunc ? h.layer : short_id(h.layer));
        t.add({i == 0 ? short_id(img.id) : "<missing>", human_age(h.created, now), by,
               human_size(h.size), layer, no_trunc ? h.comment : truncate(h.comment, 40)});
    }
    std::cout << t.render();
    return 0;
}

// A container's volumes and binds as `docker inspect` lists them under "Mounts".
json mounts_json(const std::vector<store::ContainerMount>& mounts) {
    json out = json::array();
    for (const auto& m : mounts) {
        bool volume = m.spec.type == store::MountType::Volume;
        json j = {{"Type", volume ? "volume" : "bind"},
                  {"Source", m.tmpfs ? "" : m.host_path},
                  {"Destination", m.spec.destination},
                  {"Mode", m.spec.readonly ? "ro" : ""},
                  {"RW", !m.spec.readonly},
                  {"Propagation", volume ? "" : "rprivate"}};
        if (volume) {
            j["Name"] = m.spec.source;
            j["Driver"] = m.driver;
        }
        out.push_back(j);
    }
    return out;
}

int cmd_inspect(Context& ctx, const Args& a) {
    if (a.operands.empty())
        throw UsageError("usage: lamina inspect [--type image|container] NAME...");
    std::string type = a.value("type");
    json out = json::array();
    for (const auto& ref : a.operands) {
        if (type != "container") {
            try {
                auto img = ctx.store().image(ref);
                json layers = json::array();
                for (const auto& l : img.layers) {
                    auto rec = ctx.store().layer(l.chain_id);
                    layers.push_back({{"ChainID", l.chain_id},
                                      {"DiffID", rec ? rec->diff_id : ""},
                                      {"Blob", l.blob},
                                      {"MediaType", l.blob_media_type},
                                      {"Size", rec ? rec->size : 0},
                                      {"Path", ctx.store().layer_dir(l.chain_id)}});
                }
                out.push_back({{"Id", img.id},
                               {"RepoTags", img.names},
                               {"ManifestDigest", store::sha256_digest(img.manifest)},
                               {"Manifest", json::parse(img.manifest)},
                               {"Config", json::parse(img.config)},
                               {"Layers", layers}});
                continue;
            } catch (const StoreError&) {
                if (type == "image") throw;
            }
        }
        auto c = ctx.store().container(ref);
        auto dir = ctx.store().container_dir(c.id);
        out.push_back({{"Id", c.id},
                       {"Name", c.name},
                       {"Image", c.image_id},
                       {"Created", store::format_rfc3339(c.created)},
                       {"Mounted", ctx.store().is_mounted(c)},
                       {"UpperDir", dir + "/upper"},
                       {"WorkDir", dir + "/work"},
                       {"MergedDir", dir + "/merged"},
                       {"Mounts", mounts_json(ctx.store().container_mounts(c.id))}});
    }
    print_json(out);
    return 0;
}

int cmd_tag(Context& ctx, const Args& a) {
    need_operands(a, 2, 2, "tag SOURCE_IMAGE TARGET_IMAGE[:TAG]");
    ctx.store().tag(a.operands[0], a.operands[1]);
    return 0;
}

int cmd_rmi(Context& ctx, const Args& a) {
    if (a.operands.empty()) throw UsageError("usage: lamina rmi [-f] IMAGE...");
    int rc = 0;
    for (const auto& ref : a.operands) {
        try {
            for (const auto& line : ctx.store().remove_image(ref, a.has("force")))
                std::cout << line << "\n";
        } catch (const StoreError& e) {
            std::cerr << "lamina: " << e.what() << "\n";
            rc = 1;
        }
    }
    return rc;
}

int cmd_load(Context& ctx, const Args& a) {
    need_operands(a, 0, 0, "load -i FILE");
    std::string input = a.value("input");
    if (input.empty())
        throw UsageError(
            "usage: lamina load -i FILE (docker-archive, oci-archive or OCI layout dir)");
    for (const auto& img : ctx.store().load(input)) {
        for (const auto& w : img.warnings) std::cerr << "lamina: warning: " << w << "\n";
        if (img.names.empty()) std::cout << "Loaded image ID: " << img.id << "\n";
        for (const auto& n : img.names) std::cout << "Loaded image: " << n << "\n";
    }
    return 0;
}

int cmd_import(Context& ctx, const Args& a) {
    need_operands(a, 1, 2, "import [-m MESSAGE] TARBALL [REPOSITORY[:TAG]]");
    auto img = ctx.store().import_tarball(a.operands[0], a.operands.size() > 1 ? a.operands[1] : "",
                                          a.value("message"));
    for (const auto& w : img.warnings) std::cerr << "lamina: warning: " << w << "\n";
    std::cout << img.id << "\n";
    return 0;
}

int cmd_save(Context& ctx, const Args& a) {
    if (a.operands.empty())
        throw UsageError(
            "usage: lamina save -o FILE [--format docker-archive|oci-archive] IMAGE...");
    std::string out = a.value("output");
    if (out.empty())
        throw UsageError(
            "lamina save: -o FILE is required (lamina does not write archives to a terminal)");
    std::string f = a.value("format", "docker-archive");
    store::ArchiveFormat format;
    if (f == "docker-archive") {
        format = store::ArchiveFormat::DockerArchive;
    } else if (f == "oci-archive") {
        format = store::ArchiveFormat::OciArchive;
    } else {
        throw UsageError("--format must be docker-archive or oci-archive");
    }
    ctx.store().save(a.operands, out, format);
    return 0;
}

int cmd_create(Context& ctx, const Args& a) {
    need_operands(a, 1, 1, "create [--name NAME] [-v [SRC:]DST[:ro]]... [--mount ...]... IMAGE");
    std::vector<store::MountSpec> mounts;
    for (const auto& v : a.all("volume")) mounts.push_back(store::parse_volume_flag(v));
    for (const auto& m : a.all("mount")) mounts.push_back(store::parse_mount_flag(m));
    auto c = ctx.store().create_container(a.operands[0], a.value("name"), mounts);
    std::cout << c.id << "\n";
    return 0;
}

int cmd_mount(Context& ctx, const Args& a) {
    need_operands(a, 1, 1, "mount CONTAINER");
    std::cout << ctx.store().mount(a.operands[0]) << "\n";
    return 0;
}

int cmd_umount(Context& ctx, const Args& a) {
    need_operands(a, 1, 1, "umount CONTAINER");
    ctx.store().unmount(a.operands[0]);
    return 0;
}

// ps's STATUS: "Dead" for a union whose daemon is gone, as docker names a defunct container.
const char* container_status(const store::ContainerState& c) {
    if (c.dead) return "Dead";
    return c.mounted ? "Mounted" : "Created";
}

int cmd_ps(Context& ctx, const Args& a) {
    need_operands(a, 0, 0, "ps [-a] [-s] [--format json]");
    bool sizes = a.has("size");
    auto list = ctx.store().containers(sizes);
    std::map<std::string, std::string> image_names;
    for (const auto& s : ctx.store().images())
        image_names[s.image.id] = s.image.names.empty() ? short_id(s.image.id) : s.image.names[0];
    auto image_name = [&](const std::string& id) {
        auto it = image_names.find(id);
        return it == image_names.end() ? short_id(id) : it->second;
    };
    if (output_format(ctx, a) == "json") {
        json out = json::array();
        for (const auto& c : list) {
            if (!a.has("all") && !c.mounted) continue;
            json j = {{"Id", c.record.id},
                      {"Name", c.record.name},
                      {"Image", image_name(c.record.image_id)},
                      {"ImageID", c.record.image_id},
                      {"Created", store::format_rfc3339(c.record.created)},
                      {"Mounted", c.mounted},
                      {"State", container_status(c)}};
            if (sizes) {
                j["SizeRw"] = c.size;
                j["SizeRootFs"] = c.virtual_size;
            }
            out.push_back(j);
        }
        print_json(out);
        return 0;
    }
    std::vector<std::string> headers = {"CONTAINER ID", "IMAGE", "CREATED", "STATUS", "NAMES"};
    if (sizes) headers.push_back("SIZE");
    Table t(headers);
    int64_t now = store::now_seconds();
    for (const auto& c : list) {
        if (!a.has("all") && !c.mounted) continue;
        std::vector<std::string> row = {short_id(c.record.id), image_name(c.record.image_id),
                                        human_age(c.record.created, now), container_status(c),
                                        c.record.name};
        if (sizes)
            row.push_back(human_size(c.size) + " (virtual " + human_size(c.virtual_size) + ")");
        t.add(row);
    }
    std::cout << t.render();
    return 0;
}

int cmd_rm(Context& ctx, const Args& a) {
    if (a.operands.empty()) throw UsageError("usage: lamina rm [-f] [-v] CONTAINER...");
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
    need_operands(a, 1, 1, "diff CONTAINER");
    auto changes = ctx.store().diff(a.operands[0]);
    if (output_format(ctx, a) == "json") {
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
    need_operands(a, 1, 2, "commit [-m MESSAGE] CONTAINER [REPOSITORY[:TAG]]");
    auto img = ctx.store().commit(a.operands[0], a.operands.size() > 1 ? a.operands[1] : "",
                                  a.value("message"));
    std::cout << img.id << "\n";
    return 0;
}

int cmd_system(Context& ctx, const Args& a) {
    if (a.operands.empty())
        throw UsageError("usage: lamina system df [-v] | lamina system prune [-a]");
    std::string sub = a.operands[0];
    if (sub == "df") {
        auto du = ctx.store().disk_usage();
        auto vu = ctx.store().volume_usage();
        if (output_format(ctx, a) == "json") {
            json images = json::array();
            for (const auto& s : du.image_details) images.push_back(image_json(s));
            json volumes = json::array();
            for (const auto& v : vu.details)
                volumes.push_back({{"Name", v.name},
                                   {"Links", v.users.size()},
                                   {"Size", v.size},
                                   {"Mountpoint", v.mountpoint}});
            print_json({{"Images",
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
                        {"BlobsSize", du.blobs_size},
                        {"VolumeDetails", volumes},
                        {"ImageDetails", images}});
            return 0;
        }
        auto pct = [](int64_t part, int64_t whole) {
            return whole > 0 ? " (" + std::to_string(part * 100 / whole) + "%)" : std::string();
        };
        Table t({"TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"});
        t.add({"Images", std::to_string(du.images), std::to_string(du.images_active),
               human_size(du.images_size),
               human_size(du.images_reclaimable) + pct(du.images_reclaimable, du.images_size)});
        t.add({"Containers", std::to_string(du.containers), std::to_string(du.containers_active),
               human_size(du.containers_size),
               human_size(du.containers_reclaimable) +
                   pct(du.containers_reclaimable, du.containers_size)});
        t.add({"Local Volumes", std::to_string(vu.total), std::to_string(vu.active),
               human_size(vu.size), human_size(vu.reclaimable) + pct(vu.reclaimable, vu.size)});
        t.add({"Layers", std::to_string(du.layers), "", human_size(du.layers_size), ""});
        t.add({"Blobs (for save)", "", "", human_size(du.blobs_size), ""});
        std::cout << t.render();
        if (a.has("verbose")) {
            Table v({"REPOSITORY", "TAG", "IMAGE ID", "LAYERS", "SIZE", "SHARED SIZE",
                     "UNIQUE SIZE", "CONTAINERS"});
            for (const auto& s : du.image_details) {
                auto names = s.image.names.empty() ? std::vector<std::string>{"<none>:<none>"}
                                                   : s.image.names;
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
        }
        return 0;
    }
    if (sub == "prune") {
        auto r = ctx.store().prune(a.has("all"));
        for (const auto& c : r.containers) std::cout << "Deleted container: " << c << "\n";
        for (const auto& i : r.images) std::cout << "Deleted image: " << i << "\n";
        std::cout << "Total reclaimed space: " << human_size(r.reclaimed) << "\n";
        return 0;
    }
    throw UsageError("unknown system command \"" + sub + "\" (df, prune)");
}

int cmd_info(Context& ctx, const Args& a) {
    need_operands(a, 0, 0, "info");
    auto i = ctx.store().info();
    if (output_format(ctx, a) == "json") {
        print_json({{"Driver", i.driver},
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
                    {"ContainersMounted", i.containers_mounted}});
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

const char* kUsage = R"(usage: lamina [--root DIR] [--format table|json] COMMAND [ARGS]

Images:      images, history IMAGE, inspect NAME, tag SRC DST, rmi [-f] IMAGE,
             load -i FILE, import TARBALL [REF], save -o FILE [--format oci-archive] IMAGE
Containers:  create [--name N] [-v [SRC:]DST[:ro]] [--mount ...] IMAGE, mount C, umount C,
             ps [-a] [-s], rm [-f] [-v] C, diff C, commit [-m MSG] C [REF]
Volumes:     volume create [NAME], volume ls [-q] [--filter F], volume inspect NAME,
             volume rm [-f] NAME, volume prune [-a] [-f]
System:      system df [-v], system prune [-a], info
Registry:    pull [--platform P] NAME[:TAG], push IMAGE [DEST], login REGISTRY, logout REGISTRY

See lamina(1).
)";

int run(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    Context ctx;
    size_t i = 0;
    for (; i < args.size() && args[i].starts_with("-"); ++i) {
        const std::string& a = args[i];
        if (a == "-h" || a == "--help") {
            std::cout << kUsage;
            return 0;
        }
        if (a == "-v" || a == "--version") {
            std::cout << "lamina " << LAMINA_VERSION << "\n";
            return 0;
        }
        auto value = [&](const std::string& opt) -> std::string {
            if (a.starts_with(opt + "=")) return a.substr(opt.size() + 1);
            if (i + 1 >= args.size()) throw UsageError("option " + opt + " needs a value");
            return args[++i];
        };
        if (a == "--root" || a.starts_with("--root=")) {
            ctx.root = value("--root");
        } else if (a == "--format" || a.starts_with("--format=")) {
            ctx.format = value("--format");
            if (ctx.format != "table" && ctx.format != "json")
                throw UsageError("--format must be table or json");
        } else {
            throw UsageError("unknown option " + a);
        }
    }
    if (i >= args.size()) throw UsageError(kUsage);
    std::string name = args[i];
    std::vector<std::string> rest(args.begin() + static_cast<long>(i) + 1, args.end());
    const std::map<std::string, std::string> fmt = {{"--format", "format"}};
    CommandTable commands = {
        {"images", {cmd_images, fmt, {{"-a", "all"}, {"--all", "all"}}}},
        {"history", {cmd_history, fmt, {{"--no-trunc", "no-trunc"}}}},
        {"inspect", {cmd_inspect, {{"--type", "type"}, {"--format", "format"}}, {}}},
        {"tag", {cmd_tag, {}, {}}},
        {"rmi", {cmd_rmi, {}, {{"-f", "force"}, {"--force", "force"}}}},
        {"load",
         {cmd_load,
          {{"-i", "input"}, {"--input", "input"}},
          {{"-q", "quiet"}, {"--quiet", "quiet"}}}},
        {"import", {cmd_import, {{"-m", "message"}, {"--message", "message"}}, {}}},
        {"save",
         {cmd_save, {{"-o", "output"}, {"--output", "output"}, {"--format", "format"}}, {}}},
        {"create",
         {cmd_create,
          {{"--name", "name"}, {"-v", "volume"}, {"--volume", "volume"}, {"--mount", "mount"}},
          {}}},
        {"mount", {cmd_mount, {}, {}}},
        {"umount", {cmd_umount, {}, {}}},
        {"unmount", {cmd_umount, {}, {}}},
        {"ps",
         {cmd_ps, fmt, {{"-a", "all"}, {"--all", "all"}, {"-s", "size"}, {"--size", "size"}}}},
        {"rm",
         {cmd_rm,
          {},
          {{"-f", "force"}, {"--force", "force"}, {"-v", "volumes"}, {"--volumes", "volumes"}}}},
        {"diff", {cmd_diff, fmt, {}}},
        {"commit", {cmd_commit, {{"-m", "message"}, {"--message", "message"}}, {}}},
        {"system",
         {cmd_system,
          fmt,
          {{"-v", "verbose"},
           {"--verbose", "verbose"},
           {"-a", "all"},
           {"--all", "all"},
           {"-f", "force"},
           {"--force", "force"}}}},
        {"info", {cmd_info, fmt, {}}},
    };
    add_volume_commands(commands);
    add_registry_commands(commands);
    auto it = commands.find(name);
    if (it == commands.end())
        throw UsageError("unknown command \"" + name + "\" (lamina --help lists them)");
    Args parsed = parse_args(rest, it->second.with_value, it->second.switches);
    return it->second.run(ctx, parsed);
}

}  // namespace
}  // namespace lamina::cli

int main(int argc, char** argv) {
    try {
        return lamina::cli::run(argc, argv);
    } catch (const lamina::cli::UsageError& e) {
        std::cerr << "lamina: " << e.what() << (std::string(e.what()).ends_with("\n") ? "" : "\n");
        return 2;
    } catch (const lamina::store::StoreError& e) {
        std::cerr << "lamina: " << e.what() << "\n";
        return 1;
    } catch (const std::exception& e) {
        std::cerr << "lamina: " << e.what() << "\n";
        return 1;
    }
}
