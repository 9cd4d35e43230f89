// The image commands: images, history, inspect, tag, convert, rmi, load, import, save, image prune.
#include <fnmatch.h>

#include <algorithm>
#include <iostream>
#include <optional>
#include <set>

#include "cli.h"
#include "convert.h"
#include "digest.h"
#include "error.h"
#include "fsutil.h"
#include "output.h"
#include "registry/reference.h"
#include "store.h"
#include "streams.h"

namespace lamina::cli {

using nlohmann::json;
using store::StoreError;

json image_json(const store::ImageSummary& s) {
    json layers = json::array();
    for (const auto& l : s.image.layers) layers.push_back(l.chain_id);
    return {{"Id", s.image.id},
            {"RepoTags", s.image.names},
            {"RepoDigests", s.image.repo_digests},
            {"Created", store::format_rfc3339(s.created)},
            {"Size", s.size},
            {"SharedSize", s.shared_size},
            {"Containers", s.containers},
            {"Layers", layers}};
}

json lazy_progress_json(const std::string& chain_id, const store::LazyProgress& p) {
    json j = {{"ChainID", chain_id},
              {"Files", p.files},
              {"FilesLocal", p.files_local},
              {"Bytes", p.bytes},
              {"BytesLocal", p.bytes_local}};
    if (!p.last_error.empty()) j["LastError"] = p.last_error;
    return j;
}

std::string lazy_progress_text(const store::LazyProgress& p) {
    return human_size(p.bytes_local) + " of " + human_size(p.bytes) + " local (" +
           std::to_string(p.files_local) + " of " + std::to_string(p.files) + " files)";
}

namespace {

std::map<std::string, std::string> image_labels(const store::ImageRecord& img) {
    std::map<std::string, std::string> out;
    try {
        json c = json::parse(img.config);
        if (c.contains("config") && c["config"].is_object() && c["config"].contains("Labels") &&
            c["config"]["Labels"].is_object())
            for (const auto& [k, v] : c["config"]["Labels"].items())
                if (v.is_string()) out[k] = v.get<std::string>();
    } catch (const json::exception&) {
    }
    return out;
}

// docker's reference filter: a glob over "repo" or "repo:tag".
bool reference_matches(const std::string& pattern, const std::string& name) {
    auto [repo, tag] = store::split_reference(name);
    return fnmatch(pattern.c_str(), name.c_str(), FNM_PATHNAME) == 0 ||
           fnmatch(pattern.c_str(), repo.c_str(), FNM_PATHNAME) == 0;
}

// The digest the registry gave repo for img ("<none>" when it was not pulled or pushed there).
std::string repo_digest(const store::ImageRecord& img, const std::string& repo) {
    for (const auto& d : img.repo_digests)
        if (d.substr(0, d.rfind('@')) == repo) return d.substr(d.rfind('@') + 1);
    return "<none>";
}

// One row of `lamina images`: an image under one of its names (or <none>).
struct ImageRow {
    const store::ImageSummary* summary;
    std::string name;  // "" for an image with no name
};

int cmd_images(Context& ctx, const Args& a) {
    need_operands(a, 0, 1);
    auto images = ctx.store().images();
    std::stable_sort(images.begin(), images.end(),
                     [](const auto& x, const auto& y) { return x.created > y.created; });
    auto filters =
        split_filters(a.all("filter"), {"reference", "dangling", "label", "before", "since"});
    if (!a.operands.empty()) filters["reference"].push_back(a.operands[0]);
    std::optional<bool> dangling;
    for (const auto& v : filters["dangling"]) {
        if (v != "true" && v != "false")
            throw UsageError("bad filter \"dangling=" + v + "\": want true or false");
        dangling = v == "true";
    }
    auto created_of = [&](const std::string& ref) {
        std::string id = ctx.store().image(ref).id;
        for (const auto& s : images)
            if (s.image.id == id) return s.created;
        throw StoreError("no such image: " + ref);
    };
    std::optional<int64_t> before, since;
    for (const auto& v : filters["before"]) before = created_of(v);
    for (const auto& v : filters["since"]) since = created_of(v);

    std::vector<ImageRow> rows;
    for (const auto& s : images) {
        if (dangling && *dangling != s.image.names.empty()) continue;
        if (before && s.created >= *before) continue;
        if (since && s.created <= *since) continue;
        auto labels = image_labels(s.image);
        bool labelled = std::all_of(filters["label"].begin(), filters["label"].end(),
                                    [&](const std::string& l) { return labels_match(labels, l); });
        if (!labelled) continue;
        const auto& refs = filters["reference"];
        if (s.image.names.empty()) {
            if (refs.empty()) rows.push_back({&s, ""});
            continue;
        }
        for (const auto& n : s.image.names) {
            bool shown = refs.empty() || std::any_of(refs.begin(), refs.end(), [&](const auto& p) {
                             return reference_matches(p, n);
                         });
            if (shown) rows.push_back({&s, n});
        }
    }

    bool no_trunc = a.has("no-trunc");
    auto id_of = [&](const store::ImageSummary& s) {
        return no_trunc ? s.image.id : short_id(s.image.id);
    };
    auto format = output_format(ctx, a);
    Listing l;
    std::set<std::string> seen;
    for (const auto& r : rows) {
        if (!seen.insert(r.summary->image.id).second) continue;
        l.quiet.push_back(id_of(*r.summary));
        l.json.push_back(image_json(*r.summary));
    }
    l.headers = {{"ID", "IMAGE ID"},
                 {"Repository", "REPOSITORY"},
                 {"Tag", "TAG"},
                 {"Digest", "DIGEST"},
                 {"CreatedSince", "CREATED"},
                 {"CreatedAt", "CREATED AT"},
                 {"Size", "SIZE"},
                 {"SharedSize", "SHARED SIZE"},
                 {"UniqueSize", "UNIQUE SIZE"},
                 {"Containers", "CONTAINERS"}};
    l.default_table =
        a.has("digests") ? "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t"
                           "{{.CreatedSince}}\t{{.Size}}"
                         : "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}";
    int64_t now = store::now_seconds();
    for (const auto& r : rows) {
        const auto& s = *r.summary;
        auto [repo, tag] = r.name.empty() ? std::pair<std::string, std::string>{"<none>", "<none>"}
                                          : store::split_reference(r.name);
        l.rows.push_back({{"ID", id_of(s)},
                          {"Repository", repo},
                          {"Tag", tag},
                          {"Digest", repo_digest(s.image, repo)},
                          {"CreatedSince", human_age(s.created, now)},
                          {"CreatedAt", docker_time(s.created)},
                          {"Size", human_size(s.size)},
                          {"SharedSize", human_size(s.shared_size)},
                          {"UniqueSize", human_size(s.size - s.shared_size)},
                          {"Containers", std::to_string(s.containers)}});
    }
    print_listing(l, format, a.has("quiet"));
    return 0;
}

int cmd_history(Context& ctx, const Args& a) {
    need_operands(a, 1, 1);
    auto img = ctx.store().image(a.operands[0]);
    auto hist = ctx.store().history(a.operands[0]);
    bool no_trunc = a.has("no-trunc");
    auto id_at = [&](size_t i) {
        return i == 0 ? (no_trunc ? img.id : short_id(img.id)) : "<missing>";
    };
    auto format = output_format(ctx, a);
    Listing l;
    l.headers = {{"ID", "IMAGE"},
                 {"CreatedSince", "CREATED"},
                 {"CreatedAt", "CREATED AT"},
                 {"CreatedBy", "CREATED BY"},
                 {"Size", "SIZE"},
                 {"Layer", "LAYER"},
                 {"Comment", "COMMENT"}};
    l.default_table =
        "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Layer}}\t{{.Comment}}";
    int64_t now = store::now_seconds();
    for (size_t i = 0; i < hist.size(); ++i) {
        const auto& h = hist[i];
        l.quiet.push_back(id_at(i));
        l.json.push_back({{"Id", i == 0 ? img.id : "<missing>"},
                          {"Created", store::format_rfc3339(h.created)},
                          {"CreatedBy", h.created_by},
                          {"Size", h.size},
                          {"Comment", h.comment},
                          {"Layer", h.layer}});
        std::string layer = h.layer.empty() ? "" : (no_trunc ? h.layer : short_id(h.layer));
        l.rows.push_back({{"ID", id_at(i)},
                          {"CreatedSince", human_age(h.created, now)},
                          {"CreatedAt", docker_time(h.created)},
                          {"CreatedBy", no_trunc ? h.created_by : truncate(h.created_by, 45)},
                          {"Size", human_size(h.size)},
                          {"Layer", layer},
                          {"Comment", no_trunc ? h.comment : truncate(h.comment, 40)}});
    }
    print_listing(l, format, a.has("quiet"));
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

json inspect_image(store::Store& st, const store::ImageRecord& img) {
    json layers = json::array();
    auto lazy = st.lazy_layers();
    for (const auto& l : img.layers) {
        auto rec = st.layer(l.chain_id);
        json j = {{"ChainID", l.chain_id},
                  {"DiffID", rec ? rec->diff_id : ""},
                  {"Blob", l.blob},
                  {"MediaType", l.blob_media_type},
                  {"Size", rec ? rec->size : 0},
                  {"Path", st.layer_dir(l.chain_id)}};
        // Only while the layer is lazy: what of it is local yet.
        if (auto it = lazy.find(l.chain_id); it != lazy.end()) {
            j["Lazy"] = lazy_progress_json(l.chain_id, it->second);
            j["Lazy"].erase("ChainID");
        }
        layers.push_back(std::move(j));
    }
    return {{"Id", img.id},
            {"RepoTags", img.names},
            {"RepoDigests", img.repo_digests},
            {"ManifestDigest", store::sha256_digest(img.manifest)},
            {"Manifest", json::parse(img.manifest)},
            {"Config", json::parse(img.config)},
            {"Layers", layers}};
}

json inspect_container(store::Store& st, const store::ContainerRecord& c) {
    auto paths = st.container_paths(c.id);
    std::string image_name;
    try {
        auto img = st.image(c.image_id);
        if (!img.names.empty()) image_name = img.names[0];
    } catch (const StoreError&) {
    }
    return {{"Id", c.id},
            {"Name", c.name},
            {"Image", c.image_id},
            {"Config", {{"Image", image_name}, {"Env", c.env}, {"Labels", c.labels}}},
            {"Created", store::format_rfc3339(c.created)},
            {"Mounted", st.is_mounted(c)},
            {"UpperDir", paths.upper()},
            {"WorkDir", paths.work()},
            {"MergedDir", paths.merged()},
            {"Mounts", mounts_json(st.container_mounts(c.id))}};
}

int cmd_inspect(Context& ctx, const Args& a) {
    need_operands(a, 1, SIZE_MAX);
    std::string type = a.value("type");
    if (ctx.command == "image inspect") type = "image";
    if (ctx.command == "container inspect") type = "container";
    if (type != "" && type != "image" && type != "container")
        throw UsageError("--type must be image or container");
    std::string format = a.value("format", "json");
    check_objects_format(format, "{{.Id}}");
    std::vector<json> out;
    for (const auto& ref : a.operands) {
        if (type != "container") {
            try {
                out.push_back(inspect_image(ctx.store(), ctx.store().image(ref)));
                continue;
            } catch (const StoreError&) {
                if (type == "image") throw;
            }
        }
        try {
            out.push_back(inspect_container(ctx.store(), ctx.store().container(ref)));
        } catch (const StoreError&) {
            if (type == "container") throw;
            throw StoreError("no such image or container: " + ref);
        }
    }
    print_objects(out, format, "{{.Id}}");
    return 0;
}

int cmd_tag(Context& ctx, const Args& a) {
    need_operands(a, 2, 2);
    ctx.store().tag(a.operands[0], a.operands[1]);
    return 0;
}

int cmd_convert(Context& ctx, const Args& a) {
    need_operands(a, 2, 2);
    if (!a.values.count("format"))
        throw UsageError("lamina convert needs --format estargz or zstd:chunked");
    auto format = store::estargz::format_named(a.value("format"));
    if (!format) throw UsageError("--format must be estargz or zstd:chunked");
    store::estargz::WriteOptions o;
    o.format = *format;
    if (a.values.count("prefetch-list"))
        o.prefetch = store::estargz::read_prefetch_list(a.value("prefetch-list"));
    // Lazy layers have no blob to convert until they are complete.
    complete_lazy_layers(ctx, {a.operands[0]}, std::nullopt);
    store::LoadedImage img =
        store::convert_stored_image(ctx.store(), a.operands[0], a.operands[1], o);
    for (const auto& w : img.warnings) std::cerr << "lamina: warning: " << w << "\n";
    std::cout << img.id << "\n";
    return 0;
}

int cmd_rmi(Context& ctx, const Args& a) {
    need_operands(a, 1, SIZE_MAX);
    return for_each_operand(a, [&](const std::string& ref) {
        for (const auto& line : ctx.store().remove_image(ref, a.has("force")))
            std::cout << line << "\n";
    });
}

int cmd_load(Context& ctx, const Args& a) {
    need_operands(a, 0, 0);
    std::string input = a.value("input");
    if (!input.empty() && input != "-") input = archive_to_load(input);
    if (input.empty()) {
        if (stdin_is_terminal())
            throw UsageError(
                "load: give -i FILE (docker-archive, oci-archive or OCI layout dir) or pipe an "
                "archive into stdin");
        input = "-";
    }
    std::optional<SpooledStdin> spooled;
    if (input == "-") input = spooled.emplace(ctx.store().root()).path();
    std::vector<store::LoadedImage> loaded;
    try {
        loaded = ctx.store().load(input);
    } catch (const StoreError& e) {
        if (!spooled) throw;
        throw StoreError(spooled->as_given(e.what()));
    }
    report_loaded(loaded);
    return 0;
}

int cmd_import(Context& ctx, const Args& a) {
    need_operands(a, 1, 2);
    store::ImageMetadata meta = image_metadata(a);
    std::string input = a.operands[0];
    std::optional<SpooledStdin> spooled;
    if (input == "-") {
        if (stdin_is_terminal()) throw UsageError("import -: stdin is a terminal, not a tarball");
        input = spooled.emplace(ctx.store().root()).path();
    }
    store::LoadedImage img;
    try {
        img = ctx.store().import_tarball(input, a.operands.size() > 1 ? a.operands[1] : "", meta,
                                         spooled ? "-" : "");
    } catch (const StoreError& e) {
        if (!spooled) throw;
        throw StoreError(spooled->as_given(e.what()));
    }
    for (const auto& w : img.warnings) std::cerr << "lamina: warning: " << w << "\n";
    std::cout << img.id << "\n";
    return 0;
}

int image_prune(Context& ctx, const Args& a) {
    need_operands(a, 0, 0);
    if (!a.has("force") &&
        !confirm(a.has("all") ? "WARNING! This will remove all images without at least one "
                                "container associated to them."
                              : "WARNING! This will remove all dangling images."))
        return 0;
    auto r = ctx.store().prune_images(a.has("all"));
    print_prune_report("Deleted Images:", r.images, r.reclaimed);
    return 0;
}

int cmd_save(Context& ctx, const Args& a) {
    need_operands(a, 1, SIZE_MAX);
    std::string f = a.value("format", "docker-archive");
    store::ArchiveFormat format;
    if (f == "docker-archive") {
        format = store::ArchiveFormat::DockerArchive;
    } else if (f == "oci-archive") {
        format = store::ArchiveFormat::OciArchive;
    } else {
        throw UsageError("save: --format must be docker-archive or oci-archive");
    }
    std::string out = a.value("output");
    if (auto target = archive_to_save(out)) {
        if (a.values.count("format") && target->second != format)
            throw UsageError("save: --format " + f + " and -o " + out + " disagree");
        out = target->first;
        format = target->second;
    }
    // Lazy layers have no blob to write until they are complete (never their placeholders).
    complete_lazy_layers(ctx, a.operands, std::nullopt);
    if (!out.empty()) {
        ctx.store().save(a.operands, out, format);
        return 0;
    }
    if (stdout_is_terminal())
        throw UsageError(
            "save: refusing to write an archive to a terminal; give -o FILE or "
            "redirect stdout");
    // The store writes archives whole and renames them into place, so stdout gets a copy.
    ScratchDir scratch(ctx.store().root());
    std::string file = scratch.path() + "/archive.tar";
    ctx.store().save(a.operands, file, format);
    copy_file_to_stdout(file);
    return 0;
}

}  // namespace

void report_loaded(const std::vector<store::LoadedImage>& loaded) {
    for (const auto& img : loaded) {
        for (const auto& w : img.warnings) std::cerr << "lamina: warning: " << w << "\n";
        if (img.names.empty()) std::cout << "Loaded image ID: " << img.id << "\n";
        for (const auto& n : img.names) std::cout << "Loaded image: " << n << "\n";
    }
}

std::string archive_to_load(const std::string& operand) {
    registry::ImageLocation l;
    try {
        l = registry::parse_image_location(operand);
    } catch (const std::invalid_argument& e) {
        throw UsageError(e.what());
    }
    if (!l.archive()) {
        if (operand.starts_with("docker://"))
            throw UsageError(operand + " is in a registry: lamina pull fetches it");
        return operand;
    }
    if (!l.ref.empty())
        throw UsageError(operand +
                         ": lamina loads every image of an archive or layout; drop :" + l.ref);
    return l.text;
}

std::optional<std::pair<std::string, store::ArchiveFormat>> archive_to_save(
    const std::string& operand) {
    registry::ImageLocation l;
    try {
        l = registry::parse_image_location(operand);
    } catch (const std::invalid_argument& e) {
        throw UsageError(e.what());
    }
    using Kind = registry::ImageLocation::Kind;
    if (!l.archive()) return std::nullopt;
    if (l.kind == Kind::kOciLayout)
        throw UsageError(
            operand + ": lamina writes archives, not OCI layout dirs (oci-archive:" + l.text + ")");
    if (!l.ref.empty())
        throw UsageError(operand +
                         ": the archive names the images by their own names; drop :" + l.ref);
    return std::pair{l.text, l.kind == Kind::kDockerArchive ? store::ArchiveFormat::DockerArchive
                                                            : store::ArchiveFormat::OciArchive};
}

void add_image_commands(CommandTable& commands) {
    commands["images"] = cmd_images;
    commands["history"] = cmd_history;
    commands["inspect"] = cmd_inspect;
    commands["tag"] = cmd_tag;
    commands["convert"] = cmd_convert;
    commands["rmi"] = cmd_rmi;
    commands["load"] = cmd_load;
    commands["import"] = cmd_import;
    commands["save"] = cmd_save;
    commands["image prune"] = image_prune;
}

}  // namespace lamina::cli
