// lamina's commands as data: names, aliases, operands, options and their help text.
#include "usage.h"

#include <algorithm>

namespace lamina::cli {
namespace {

OptionSpec flag(std::vector<std::string> spellings, std::string key, std::string help) {
    return {std::move(spellings), std::move(key), "", std::move(help)};
}

OptionSpec with_value(std::vector<std::string> spellings, std::string key, std::string value,
                      std::string help) {
    return {std::move(spellings), std::move(key), std::move(value), std::move(help)};
}

const char* kTemplateHelp =
    "table (default), json, or a Go template: '{{.ID}}', 'table {{.Name}}\\t{{.Size}}', "
    "'{{json .}}'";

OptionSpec format_option() {
    return with_value({"--format"}, "format", "FORMAT", kTemplateHelp);
}
OptionSpec quiet_option(const std::string& what) {
    return flag({"-q", "--quiet"}, "quiet", "Print only " + what);
}
OptionSpec no_trunc_option() {
    return flag({"--no-trunc"}, "no-trunc", "Do not shorten IDs and long fields");
}
OptionSpec filter_option(const std::string& keys) {
    return with_value({"-f", "--filter"}, "filter", "FILTER",
                      "Show only what matches KEY=VALUE (" + keys + "); repeatable");
}
OptionSpec tls_option() {
    return with_value({"--tls-verify"}, "tls-verify", "BOOL",
                      "Verify the registry's TLS certificate (false: also allow plain HTTP)");
}

OptionSpec change_option() {
    return with_value({"-c", "--change"}, "change", "INSTRUCTION",
                      "Set the image's config with a Dockerfile instruction (ENV, CMD, "
                      "ENTRYPOINT, WORKDIR, USER, EXPOSE, LABEL, VOLUME); repeatable");
}

OptionSpec prefetch_list_option() {
    return with_value({"--prefetch-list"}, "prefetch-list", "FILE",
                      "eStargz and zstd:chunked: write the files FILE lists (one path a line, "
                      "etc/os-release) first in each layer, so a lazy pull fetches them first");
}

OptionSpec creds_option() {
    return with_value({"--creds"}, "creds", "USER[:PASSWORD]",
                      "Credentials for the registry instead of the stored ones");
}

std::vector<CommandSpec> make_specs() {
    return {
        // Images.
        {"images",
         {"image ls", "image list"},
         "[REPOSITORY[:TAG]]",
         "List images, newest first",
         {flag({"-a", "--all"}, "all", "Show all images (lamina keeps no intermediate images)"),
          quiet_option("image IDs"), no_trunc_option(),
          flag({"--digests"}, "digests", "Show the registry digests of pulled and pushed images"),
          filter_option("reference, dangling, label, before, since"), format_option()}},
        {"history",
         {"image history"},
         "IMAGE",
         "Show the history of an image",
         {quiet_option("image IDs"), no_trunc_option(), format_option()}},
        {"inspect",
         {"image inspect", "container inspect"},
         "NAME...",
         "Show everything recorded about images or containers",
         {with_value({"--type"}, "type", "TYPE", "image or container"),
          with_value({"-f", "--format"}, "format", "FORMAT",
                     "json (default) or a Go template: '{{.Id}}', '{{json .Config}}'")}},
        {"tag", {"image tag"}, "SOURCE_IMAGE TARGET_IMAGE[:TAG]", "Give an image another name", {}},
        {"convert",
         {"image convert"},
         "--format estargz|zstd:chunked IMAGE NEW_IMAGE[:TAG]",
         "Store a copy of an image with its layers rewritten (eStargz or zstd:chunked: pull "
         "--lazy mounts it before it is downloaded)",
         {with_value({"--format"}, "format", "estargz|zstd:chunked",
                     "The layers' new format: estargz or zstd:chunked"),
          prefetch_list_option()}},
        {"rmi",
         {"image rm", "image remove"},
         "IMAGE...",
         "Remove images",
         {flag({"-f", "--force"}, "force", "Also remove the containers that use them")}},
        {"load",
         {"image load"},
         "",
         "Load images from an archive or OCI layout (stdin when it is not a terminal)",
         {with_value({"-i", "--input"}, "input", "FILE",
                     "docker-archive, oci-archive or OCI layout dir (a docker-archive:, "
                     "oci-archive: or oci: prefix is accepted); - for stdin"),
          flag({"-q", "--quiet"}, "quiet", "Print nothing but the loaded names")}},
        {"import",
         {"image import"},
         "FILE|- [REPOSITORY[:TAG]]",
         "Make a one-layer image from a tarball (- reads stdin)",
         {with_value({"-m", "--message"}, "message", "MESSAGE", "History comment"),
          change_option()}},
        {"image prune",
         {},
         "",
         "Remove images no container uses: unnamed ones (-a: all)",
         {flag({"-a", "--all"}, "all", "Remove every image no container uses, named ones too"),
          flag({"-f", "--force"}, "force", "Do not ask")}},
        {"save",
         {"image save"},
         "IMAGE...",
         "Write images to an archive (stdout when it is not a terminal)",
         {with_value({"-o", "--output"}, "output", "FILE",
                     "Write to FILE instead of stdout (docker-archive:FILE and oci-archive:FILE "
                     "also choose the format)"),
          with_value({"--format"}, "format", "FORMAT", "docker-archive (default) or oci-archive")}},
        {"pull",
         {"image pull"},
         "[docker://]NAME[:TAG|@DIGEST] | docker-archive:FILE | oci-archive:FILE | oci:DIR",
         "Fetch an image from a registry",
         {with_value({"--platform"}, "platform", "OS/ARCH[/VARIANT]",
                     "Which entry of a multi-platform image"),
          with_value({"--max-concurrent-downloads"}, "max-concurrent-downloads", "N",
                     "Layers downloaded at once (1-64, default 3)"),
          tls_option(), creds_option(),
          flag({"-q", "--quiet"}, "quiet", "Print only the reference"),
          flag({"--lazy"}, "lazy",
               "Read eStargz and zstd:chunked layers' tables of contents only; mount "
               "fetches the files"),
          flag({"--no-lazy"}, "no-lazy",
               "Pull every layer whole, even with \"lazy\": true in config.json"),
          flag({"--background"}, "background",
               "With --lazy: complete the lazy layers in a detached process")}},
        {"push",
         {"image push"},
         "IMAGE [[docker://]DESTINATION | docker-archive:FILE | oci-archive:FILE]",
         "Send an image to a registry",
         {tls_option(), creds_option(), flag({"-q", "--quiet"}, "quiet", "Print no progress"),
          with_value({"--compression-format"}, "compression-format", "estargz|zstd:chunked",
                     "Rewrite the layers as eStargz or zstd:chunked, which lamina pull --lazy "
                     "mounts before they are downloaded"),
          prefetch_list_option()}},
        // Containers.
        {"create",
         {"container create"},
         "IMAGE",
         "Make a container: a writable layer over an image",
         {with_value({"--name"}, "name", "NAME", "The container's name"),
          with_value({"-v", "--volume"}, "volume", "[SRC:]DST[:OPTS]",
                     "Attach a volume or bind a host path; repeatable"),
          with_value({"--mount"}, "mount", "type=volume|bind,src=...,dst=...",
                     "Attach a volume or bind, as docker's --mount; repeatable"),
          with_value({"-e", "--env"}, "env", "KEY=VALUE",
                     "Set an environment variable (commit keeps it); repeatable"),
          with_value({"-l", "--label"}, "label", "KEY=VALUE",
                     "Set a label (ps --filter label= matches it, commit keeps it); repeatable")}},
        {"rename", {"container rename"}, "CONTAINER NEW_NAME", "Rename a container", {}},
        {"cp",
         {"container cp"},
         "CONTAINER:SRC HOST_DEST|- | HOST_SRC|- CONTAINER:DEST",
         "Copy files between a container and the host (mounted or not); - is a tar stream",
         {flag({"-a", "--archive"}, "archive",
               "Keep owners (without it, copies belong to the caller, as docker cp)"),
          flag({"-L", "--follow-link"}, "follow-link", "Copy what a source symlink points to")}},
        {"mount",
         {"container mount"},
         "CONTAINER",
         "Mount a container and print its merged path",
         {}},
        {"umount",
         {"unmount", "container umount", "container unmount"},
         "CONTAINER",
         "Unmount a container and its volumes",
         {}},
        {"ps",
         {"container ls", "container list"},
         "",
         "List mounted containers (-a: all)",
         {flag({"-a", "--all"}, "all", "Show unmounted containers too"),
          flag({"-s", "--size"}, "size", "Show the writable layer and virtual sizes"),
          quiet_option("container IDs"), no_trunc_option(),
          filter_option("id, name, status, ancestor, label"), format_option()}},
        {"rm",
         {"container rm", "container remove"},
         "CONTAINER...",
         "Remove containers",
         {flag({"-f", "--force"}, "force", "Unmount mounted containers first"),
          flag({"-v", "--volumes"}, "volumes", "Remove their anonymous volumes")}},
        {"diff",
         {"container diff"},
         "CONTAINER",
         "Show a container's changed files",
         {with_value({"--format"}, "format", "FORMAT", "table (default) or json")}},
        {"commit",
         {"container commit"},
         "CONTAINER [REPOSITORY[:TAG]]",
         "Make an image from a container's changes",
         {with_value({"-m", "--message"}, "message", "MESSAGE", "History comment"),
          with_value({"-a", "--author"}, "author", "AUTHOR",
                     "The image's author (\"Name <email>\")"),
          change_option()}},
        {"container prune",
         {},
         "",
         "Remove unmounted containers",
         {flag({"-f", "--force"}, "force", "Do not ask")}},
        {"export",
         {"container export"},
         "CONTAINER",
         "Write a container's merged tree as a tar (stdout when it is not a terminal)",
         {with_value({"-o", "--output"}, "output", "FILE", "Write to FILE instead of stdout")}},
        // Volumes.
        {"volume create",
         {},
         "[NAME]",
         "Make a volume",
         {with_value({"--name"}, "name", "NAME", "The volume's name (as the operand)"),
          with_value({"-d", "--driver"}, "driver", "DRIVER", "local (the only driver)"),
          with_value({"--label"}, "label", "KEY=VALUE", "Set a label; repeatable"),
          with_value({"-o", "--opt"}, "opt", "KEY=VALUE",
                     "Driver option (type, o, device); repeatable")}},
        {"volume ls",
         {"volume list"},
         "",
         "List volumes",
         {quiet_option("volume names"), filter_option("dangling, label, name, driver"),
          format_option()}},
        {"volume inspect",
         {},
         "VOLUME...",
         "Show volumes as JSON",
         {with_value({"-f", "--format"}, "format", "FORMAT",
                     "json (default) or a Go template: '{{.Mountpoint}}'")}},
        {"volume rm",
         {"volume remove"},
         "VOLUME...",
         "Remove volumes",
         {flag({"-f", "--force"}, "force", "Say nothing about volumes that do not exist")}},
        {"volume prune",
         {},
         "",
         "Remove unused anonymous volumes",
         {flag({"-a", "--all"}, "all", "Remove unused named volumes too"),
          flag({"-f", "--force"}, "force", "Do not ask")}},
        // System.
        {"system df",
         {},
         "",
         "Show disk use",
         {flag({"-v", "--verbose"}, "verbose", "Per image and per volume"), format_option()}},
        {"system prune",
         {},
         "",
         "Remove unmounted containers and unused images",
         {flag({"-a", "--all"}, "all", "Remove all unused images, not only unnamed ones"),
          flag({"-f", "--force"}, "force", "Do not ask")}},
        {"info",
         {"system info"},
         "",
         "Show the store and its storage driver",
         {with_value({"-f", "--format"}, "format", "FORMAT",
                     "table (default), json or a Go template: '{{.RootDir}}'")}},
        // Registry.
        {"login",
         {},
         "REGISTRY",
         "Log in to a registry",
         {with_value({"-u", "--username"}, "username", "USER", "User name"),
          with_value({"-p", "--password"}, "password", "PASSWORD", "Password"),
          flag({"--password-stdin"}, "password-stdin", "Read the password from stdin"),
          tls_option()}},
        {"logout", {}, "REGISTRY", "Forget a registry's credentials", {}},
        // Lamina itself.
        {"version", {}, "", "Show lamina's version", {}},
        {"help", {}, "[COMMAND]", "Show help for a command", {}},
    };
}

std::string spelled(const OptionSpec& o) {
    std::string s;
    for (const auto& sp : o.spellings) s += (s.empty() ? "" : ", ") + sp;
    if (o.takes_value()) s += " " + o.value_name;
    return s;
}

bool in_group(const CommandSpec& c, const std::string& group) {
    auto prefix = group + " ";
    if (c.name.starts_with(prefix)) return true;
    return std::any_of(c.aliases.begin(), c.aliases.end(),
                       [&](const std::string& a) { return a.starts_with(prefix); });
}

// The group form of c ("image ls" for images), or its name when it has none in the group.
std::string name_in_group(const CommandSpec& c, const std::string& group) {
    if (c.name.starts_with(group + " ")) return c.name;
    for (const auto& a : c.aliases)
        if (a.starts_with(group + " ")) return a;
    return c.name;
}

std::string command_list(const std::vector<std::pair<std::string, std::string>>& rows) {
    size_t width = 0;
    for (const auto& [name, summary] : rows) width = std::max(width, name.size());
    std::string out;
    for (const auto& [name, summary] : rows)
        out += "  " + name + std::string(width - name.size() + 3, ' ') + summary + "\n";
    return out;
}

}  // namespace

const std::vector<CommandSpec>& command_specs() {
    static const std::vector<CommandSpec> specs = make_specs();
    return specs;
}

const std::vector<GroupSpec>& group_specs() {
    static const std::vector<GroupSpec> groups = {
        {"image", "Manage images"},
        {"container", "Manage containers"},
        {"volume", "Manage volumes"},
        {"system", "Manage the store"},
    };
    return groups;
}

const CommandSpec* find_command(const std::string& name) {
    for (const auto& c : command_specs()) {
        if (c.name == name) return &c;
        for (const auto& a : c.aliases)
            if (a == name) return &c;
    }
    return nullptr;
}

bool is_group(const std::string& word) {
    for (const auto& g : group_specs())
        if (g.name == word) return true;
    return false;
}

std::string usage_line(const CommandSpec& c) {
    std::string line = "lamina " + c.name;
    if (!c.options.empty()) line += " [OPTIONS]";
    if (!c.operands.empty()) line += " " + c.operands;
    return line;
}

std::string command_help(const CommandSpec& c) {
    std::string out = "Usage:  " + usage_line(c) + "\n\n" + c.summary + "\n";
    if (!c.aliases.empty()) {
        out += "\nAliases:\n  lamina " + c.name;
        for (const auto& a : c.aliases) out += ", lamina " + a;
        out += "\n";
    }
    if (!c.options.empty()) {
        std::vector<std::pair<std::string, std::string>> rows;
        for (const auto& o : c.options) rows.push_back({spelled(o), o.help});
        out += "\nOptions:\n" + command_list(rows);
    }
    return out;
}

std::string group_help(const std::string& group) {
    std::string summary;
    for (const auto& g : group_specs())
        if (g.name == group) summary = g.summary;
    std::vector<std::pair<std::string, std::string>> rows;
    for (const auto& c : command_specs())
        if (in_group(c, group))
            rows.push_back({name_in_group(c, group).substr(group.size() + 1), c.summary});
    return "Usage:  lamina " + group + " COMMAND\n\n" + summary + "\n\nCommands:\n" +
           command_list(rows) + "\nRun 'lamina " + group +
           " COMMAND --help' for more information on a command.\n";
}

std::string overview_help() {
    std::string out =
        "Usage:  lamina [--root DIR] [--reserve SIZE] [--format table|json] [--log-level LEVEL] "
        "COMMAND [ARGS]\n\n"
        "Container images, containers and volumes in a store on laminafs.\n\n"
        "Global options:\n" +
        command_list(
            {{"--root DIR",
              "The store (default: the config file's, else "
              "/var/lib/lamina as root)"},
             {"--reserve SIZE",
              "Free space the store keeps (default: 5% of its filesystem, at most 256 MiB)"},
             {"--format table|json", "The output of every listing"},
             {"--log-level LEVEL", "debug shows every registry request on stderr (default: warn)"},
             {"-D, --debug", "Same as --log-level debug"},
             {"-h, --help", "Show this help"},
             {"-v, --version", "Show lamina's version"}});
    std::vector<std::pair<std::string, std::string>> rows;
    for (const auto& c : command_specs())
        if (c.name.find(' ') == std::string::npos) rows.push_back({c.name, c.summary});
    out += "\nCommands:\n" + command_list(rows);
    rows.clear();
    for (const auto& g : group_specs()) rows.push_back({g.name, g.summary});
    out += "\nGroups (lamina GROUP --help lists their commands):\n" + command_list(rows);
    out += "\nRun 'lamina COMMAND --help' for more information on a command. See lamina(1).\n";
    return out;
}

}  // namespace lamina::cli
