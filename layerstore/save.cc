// `lamina save`: images out as docker-archive (uncompressed layer tars, manifest.json) or
// oci-archive (the OCI layout with the blobs exactly as stored, so digests survive the trip).
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <memory>
#include <set>

#include <nlohmann/json.hpp>

#include "archive_error.h"
#include "db.h"
#include "digest.h"
#include "error.h"
#include "fd.h"
#include "fsutil.h"
#include "internal.h"
#include "lock.h"
#include "store.h"

namespace lamina::store {

using nlohmann::json;

namespace {

class ArchiveOut {
public:
    // Writes path; errors name shown (the file path is renamed to).
    ArchiveOut(const std::string& path, const std::string& shown)
        : path_(shown), a_(archive_write_new()) {
        archive_write_set_format_pax_restricted(a_.get());
        if (archive_write_open_filename(a_.get(), path.c_str()) != ARCHIVE_OK)
            throw StoreError("cannot create " + shown + ": " + archive_error_text(a_.get()));
    }

    void add_data(const std::string& name, const std::string& data) {
        if (!names_.insert(name).second) return;
        header(name, static_cast<int64_t>(data.size()), AE_IFREG);
        if (!data.empty() && archive_write_data(a_.get(), data.data(), data.size()) !=
                                 static_cast<la_ssize_t>(data.size()))
            fail(name);
    }

    void add_file(const std::string& name, const std::string& src) {
        if (!names_.insert(name).second) return;
        Fd fd(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
        struct stat st;
        if (!fd || ::fstat(fd.get(), &st) != 0) throw_errno("cannot open", src, errno);
        header(name, st.st_size, AE_IFREG);
        char buf[1 << 16];
        int64_t left = st.st_size;
        while (left > 0) {
            ssize_t n = ::read(fd.get(), buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) throw_errno("cannot read", src, n < 0 ? errno : EIO);
            if (archive_write_data(a_.get(), buf, static_cast<size_t>(n)) != n) fail(name);
            left -= n;
        }
    }

    void add_dir(const std::string& name) {
        if (names_.insert(name).second) header(name, 0, AE_IFDIR);
    }

    void close() {
        if (archive_write_close(a_.get()) != ARCHIVE_OK) fail("end of archive");
    }

private:
    void header(const std::string& name, int64_t size, int type) {
        std::unique_ptr<archive_entry, void (*)(archive_entry*)> e(archive_entry_new(),
                                                                   archive_entry_free);
        archive_entry_set_pathname(e.get(), name.c_str());
        archive_entry_set_filetype(e.get(), static_cast<unsigned>(type));
        archive_entry_set_perm(e.get(), type == AE_IFDIR ? 0755 : 0644);
        archive_entry_set_size(e.get(), size);
        archive_entry_set_mtime(e.get(), 0, 0);
        if (archive_write_header(a_.get(), e.get()) != ARCHIVE_OK) fail(name);
    }
    [[noreturn]] void fail(const std::string& what) {
        throw StoreError("cannot write " + what + " to " + path_ + ": " +
                         archive_error_text(a_.get()));
    }

    std::string path_;
    WriteArchive a_;
    std::set<std::string> names_;
};

// The uncompressed tar of a stored blob, for docker-archive, which carries layers uncompressed.
void decompress(const std::string& src, const std::string& dst) {
    ReadArchive a(archive_read_new());
    archive_read_support_filter_all(a.get());
    archive_read_support_format_raw(a.get());
    archive_entry* e;
    if (archive_read_open_filename(a.get(), src.c_str(), 1 << 17) != ARCHIVE_OK ||
        archive_read_next_header(a.get(), &e) != ARCHIVE_OK)
        throw StoreError("cannot read " + src + ": " + archive_error_text(a.get()));
    Fd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!out) throw_errno("cannot create", dst, errno);
    char buf[1 << 17];
    for (;;) {
        la_ssize_t n = archive_read_data(a.get(), buf, sizeof buf);
        if (n < 0)
            throw StoreError("cannot decompress " + src + ": " + archive_error_text(a.get()));
        if (n == 0) break;
        if (::write(out.get(), buf, static_cast<size_t>(n)) != n)
            throw_errno("cannot write", dst, errno);
    }
}

// The name the user asked for when it is one of the image's names, else all of them.
std::vector<std::string> names_to_save(const std::string& ref, const ImageRecord& img) {
    std::string familiar;
    try {
        familiar = normalize_reference(ref);
    } catch (const StoreError&) {
    }
    for (const auto& n : img.names)
        if (n == ref || n == familiar) return {n};
    return img.names;
}

}  // namespace

void Store::save(const std::vector<std::string>& refs, const std::string& output,
                 ArchiveFormat format) {
    Layout l{root_};
    if (refs.empty()) throw StoreError("save: no image given");
    // A shared lock keeps blobs from being removed under us while other readers carry on.
    StoreLock lock(l.lock(), StoreLock::Mode::Shared);
    std::vector<std::pair<std::string, ImageRecord>> images;
    for (const auto& r : refs) images.emplace_back(r, image(r));
    std::string staging = l.tmp() + "/save-" + random_hex(12);
    make_dirs(staging, 0700);
    std::string partial = output + ".partial-" + random_hex(8);
    try {
        ArchiveOut out(partial, output);
        if (format == ArchiveFormat::DockerArchive) {
            json manifest = json::array();
            for (const auto& [ref, img] : images) {
                json cfg = json::parse(img.config);
                std::string config_name = digest_hex(img.id) + ".json";
                out.add_data(config_name, img.config);
                json entry = {{"Config", config_name},
                              {"RepoTags", json::array()},
                              {"Layers", json::array()}};
                for (const auto& n : names_to_save(ref, img)) entry["RepoTags"].push_back(n);
                for (size_t i = 0; i < img.layers.size(); ++i) {
                    std::string diff_id = cfg["rootfs"]["diff_ids"][i].get<std::string>();
                    std::string dir = digest_hex(diff_id);
                    std::string name = dir + "/layer.tar";
                    const auto& lr = img.layers[i];
                    std::string blob = l.blob(lr.blob);
                    out.add_dir(dir);
                    if (lr.blob == diff_id) {
                        out.add_file(name, blob);
                    } else {
                        std::string tmp = staging + "/" + dir + ".tar";
                        if (!path_exists(tmp)) decompress(blob, tmp);
                        out.add_file(name, tmp);
                        ::unlink(tmp.c_str());
                    }
                    entry["Layers"].push_back(name);
                }
                manifest.push_back(entry);
            }
            out.add_data("manifest.json", manifest.dump());
        } else {
            json index = {
                {"schemaVersion", 2}, {"mediaType", kOciIndex}, {"manifests", json::array()}};
            out.add_data("oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
            out.add_dir("blobs");
            out.add_dir("blobs/sha256");
            for (const auto& [ref, img] : images) {
                json m = json::parse(img.manifest);
                std::string mdigest = sha256_digest(img.manifest);
                out.add_data("blobs/sha256/" + digest_hex(mdigest), img.manifest);
                out.add_data("blobs/sha256/" + digest_hex(img.id), img.config);
                for (const auto& lr : img.layers)
                    out.add_file("blobs/sha256/" + digest_hex(lr.blob), l.blob(lr.blob));
                json desc = {{"mediaType", m.value("mediaType", kOciManifest)},
                             {"digest", mdigest},
                             {"size", img.manifest.size()}};
                std::vector<std::string> names = names_to_save(ref, img);
                if (names.empty()) index["manifests"].push_back(desc);
                for (const auto& n : names) {
                    json d = desc;
                    d["annotations"] = {{"org.opencontainers.image.ref.name", n},
                                        {"io.containerd.image.name", n}};
                    index["manifests"].push_back(d);
                }
            }
            out.add_data("index.json", index.dump());
        }
        out.close();
        if (::rename(partial.c_str(), output.c_str()) != 0)
            throw_errno("cannot rename into place", output, errno);
    } catch (...) {
        ::unlink(partial.c_str());
        remove_tree(staging);
        throw;
    }
    remove_tree(staging);
}

}  // namespace lamina::store
