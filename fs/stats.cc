// Statistics: what the daemon holds (nodes, cached listings, handles, descriptors, memory), so a
// user can see that the caches stay within their limits.
#include <dirent.h>

#include <fstream>
#include <sstream>
#include <string>

#include "overlay.h"

namespace lamina {

namespace {

long count_own_fds() {
    DIR* dir = ::opendir("/proc/self/fd");
    if (!dir) return -1;
    long n = 0;
    while (dirent* e = ::readdir(dir)) {
        if (e->d_name[0] != '.') ++n;
    }
    ::closedir(dir);
    return n - 1;  // the descriptor reading the directory
}

long own_rss_kib() {
    std::ifstream status("/proc/self/status");
    std::string line;
    while (std::getline(status, line)) {
        if (line.starts_with("VmRSS:")) return std::stol(line.substr(6));
    }
    return -1;
}

}  // namespace

CacheStats Overlay::cache_stats() {
    CacheStats s;
    {
        // Kept descriptors change under the exclusive lock; the node walk takes the table's mutex.
        std::shared_lock lock(tree_);
        s.table = table_.stats();
    }
    s.open_files = LiveCounter<FileHandle>::count;
    s.dir_listings = LiveCounter<DirListing>::count;
    s.dir_fds = OnceFd::live();
    s.dir_fd_limit = dir_fd_limit_;
    s.read_fds = read_fds_.stats();
    s.process_fds = count_own_fds();
    s.rss_kib = own_rss_kib();
    return s;
}

std::string format_cache_stats(const CacheStats& s) {
    std::ostringstream out;
    out << "nodes=" << s.table.nodes << " unhashed_nodes=" << s.table.unhashed_nodes
        << " retired_nodes=" << s.table.retired_nodes << " retired_limit=" << s.table.retired_limit
        << " kernel_refs=" << s.table.kernel_refs << " open_file_nodes=" << s.table.open_file_nodes
        << " kept_fds=" << s.table.kept_fds << " dir_indexes=" << s.table.dir_indexes
        << " dir_index_entries=" << s.table.dir_index_entries
        << " dir_index_limit=" << s.table.dir_index_entry_limit
        << " dir_index_builds=" << s.table.dir_index_builds
        << " dir_index_evictions=" << s.table.dir_index_evictions << " open_files=" << s.open_files
        << " dir_listings=" << s.dir_listings << " read_fds=" << s.read_fds.entries
        << " read_fd_limit=" << s.read_fds.limit << " read_fd_opens=" << s.read_fds.opens
        << " read_fd_evictions=" << s.read_fds.evictions << " dir_fds=" << s.dir_fds
        << " dir_fd_limit=" << s.dir_fd_limit << " fds=" << s.process_fds
        << " rss_kib=" << s.rss_kib << " uring_requests=" << s.uring_requests;
    return out.str();
}

}  // namespace lamina
