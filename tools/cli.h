// What every lamina command shares: parsed arguments, the context (store root, output format),
// and the table that maps command names (as tools/usage.cc spells them) to handlers. Each group
// of commands lives in its own file and adds itself through an add_*_commands function here.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "config.h"
#include "format.h"
#include "store.h"
#include "usage.h"

namespace lamina::cli {

// Bad command-line input: printed as one line, exit status 2.
struct UsageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A command's options, by the keys of its CommandSpec; the rest are operands. A value option
// given several times keeps every value in `lists` (for -v, --label, ...).
struct Args {
    const CommandSpec* spec = nullptr;
    bool help = false;  // -h or --help: the caller prints the command's help instead

    std::map<std::string, std::string> values;
    std::map<std::string, std::vector<std::string>> lists;
    std::set<std::string> flags;
    std::vector<std::string> operands;

    bool has(const std::string& f) const { return flags.count(f) > 0; }
    std::string value(const std::string& k, const std::string& def = "") const {
        auto it = values.find(k);
        return it == values.end() ? def : it->second;
    }
    std::vector<std::string> all(const std::string& k) const {
        auto it = lists.find(k);
        return it == lists.end() ? std::vector<std::string>{} : it->second;
    }
};

Args parse_args(const std::vector<std::string>& argv, const CommandSpec& spec);
// Throws the command's usage line unless it has min..max operands.
void need_operands(const Args& a, size_t min, size_t max);
// Runs fn on each operand, as docker's rm does: a store error is printed and the rest still
// run. 1 when any failed.
int for_each_operand(const Args& a, const std::function<void(const std::string&)>& fn);
// --filter KEY=VALUE..., by key: values of one key are alternatives, keys must all match
// (docker's rule). A key not in keys is a usage error.
std::map<std::string, std::vector<std::string>> split_filters(
    const std::vector<std::string>& filters, const std::set<std::string>& keys);

// "K=V" (or "K", an empty value) from --label, --opt and the like.
std::map<std::string, std::string> key_values(const std::vector<std::string>& items,
                                              const std::string& option);
// "K=V,K2=V2": the LABELS column of ps and volume ls.
std::string labels_text(const std::map<std::string, std::string>& labels);
// label=K or label=K=V against a label map (the label filter of images and ps).
bool labels_match(const std::map<std::string, std::string>& labels, const std::string& want);
// -m, --author and --change of commit and import; a --change docker would refuse is a usage
// error here, before anything is written.
store::ImageMetadata image_metadata(const Args& a);

struct Context {
    std::string root;
    std::string reserve;           // --reserve: free space the store keeps ("" = its default)
    std::string format = "table";  // or json
    std::string command;           // as it was typed: "images", "image ls"
    // Opens the store on first use; a relative --root that named no store yet is said, since
    // it depends on the working directory.
    store::Store& store();
    std::unique_ptr<store::Store> store_;
};

void print_json(const nlohmann::json& j);
// The --format of this command, else the global one (table or json).
OutputFormat output_format(const Context& ctx, const Args& a);
// For commands whose output has no template form: table or json.
bool wants_json(const Context& ctx, const Args& a);
// Archives go to stdout and come from stdin only when those are not terminals.
bool stdout_is_terminal();
bool stdin_is_terminal();
// Prints warning and "Are you sure you want to continue? [y/N]"; true for y or yes.
bool confirm(const std::string& warning);
// What a prune removed, as docker prints it: the title and each item, then the space.
void print_prune_report(const std::string& title, const std::vector<std::string>& removed,
                        int64_t reclaimed);

// "Loaded image: NAME" (or its ID) for each, warnings on stderr (image_cmd.cc).
void report_loaded(const std::vector<store::LoadedImage>& loaded);
// The archive path of a docker-archive:, oci-archive: or oci: operand, as load and pull take
// it (image_cmd.cc). A usage error for docker:// and for a :REF after the path.
std::string archive_to_load(const std::string& operand);
// The path and format of a docker-archive: or oci-archive: operand, as save and push write it;
// nothing for a bare path or a registry (image_cmd.cc).
std::optional<std::pair<std::string, store::ArchiveFormat>> archive_to_save(
    const std::string& operand);

// Completes the lazy layers of the images named (registry_cmd.cc; docs/lazy.md), one line on
// stderr for each done; throws StoreError with one line when one cannot be completed (the registry
// gone). Save and push need the blobs complete layers have.
void complete_lazy_layers(Context& ctx, const std::vector<std::string>& image_refs,
                          const std::optional<bool>& tls_verify);
// Starts lamina-lazy-fetch --complete for the image's lazy layers, detached (its own session,
// stdio on /dev/null): it outlives this command, and a completer already at work on a layer
// keeps it. Prints one line on stderr saying so; nothing for an image without lazy layers
// (registry_cmd.cc).
void start_lazy_completer(store::Store& st, const std::string& image_id,
                          const std::optional<bool>& tls_verify);
// An image as `images --format json` and `system df --format json` show it (image_cmd.cc).
nlohmann::json image_json(const store::ImageSummary& s);
// How much of a lazy layer is local, as inspect, ps -s and system df show it (image_cmd.cc).
nlohmann::json lazy_progress_json(const std::string& chain_id, const store::LazyProgress& p);
// "12.3kB of 1.05MB local (3 of 9 files)"
std::string lazy_progress_text(const store::LazyProgress& p);

using Handler = std::function<int(Context&, const Args&)>;
using CommandTable = std::map<std::string, Handler>;

// images, history, inspect, tag, rmi, load, import, save, image prune (image_cmd.cc).
void add_image_commands(CommandTable& commands);
// create, mount, umount, ps, rm, diff, commit, export, rename, cp, container prune
// (container_cmd.cc; cp's copying in container_copy.cc).
void add_container_commands(CommandTable& commands);
// `lamina volume ...` (volume_cmd.cc).
void add_volume_commands(CommandTable& commands);
// system df, system prune, info (system_cmd.cc).
void add_system_commands(CommandTable& commands);

// pull, push, login, logout (tools/registry_cmd.cc).
void add_registry_commands(CommandTable& commands);

}  // namespace lamina::cli
