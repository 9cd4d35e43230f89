// The mount itself, as the kernel's super.c has it: the overlay over a layer stack, its root,
// and the share of descriptors its nodes may hold.
#include <sys/resource.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "overlay.h"
#include "ownership.h"

namespace lamina {

Overlay::Overlay(const MountOptions& opts, LayerStack& stack)
    : opts_(opts),
      stack_(stack),
      read_only_(opts.read_only || !stack.has_upper()),
      flavour_(opts.userxattr || !daemon_is_privileged() ? XattrFlavour::User
                                                         : XattrFlavour::Trusted),
      ids_(opts),
      use_override_(!daemon_is_privileged()),
      read_fds_(read_fd_pool_limit()),
      dir_fd_limit_(static_cast<long>(upper_dir_fd_limit())) {
    table_.set_index_entry_limit(opts.dir_cache_entries);
    table_.set_retired_limit(opts.nfs_export ? opts.handle_cache : 0);
}

std::string Overlay::init() {
    Node* root = table_.root();
    root->in_upper = stack_.has_upper();
    for (LayerNo n = stack_.first_lower(); n < stack_.end(); ++n) root->lowers.push_back(n);
    root->lower_path.clear();
    if (root->in_upper) {
        char opaque = read_dir_marks(stack_.proc_path(kUpperLayer, ""), false).opaque;
        root->opaque = opaque == 'y';
        root->xwhiteouts = opaque == 'x';
    }
    struct stat st;
    if (fstatat(stack_.fd(root->top_layer()), ".", &st, 0) != 0)
        return "cannot stat the top layer: " + std::string(strerror(errno));
    root->ino = make_ino(root->top_layer(), st.st_ino);
    return "";
}

Overlay::~Overlay() {
    for (FileHandle* fh : handed_) delete fh;
}

size_t upper_dir_fd_limit() {
    // A quarter of the descriptor limit: the read pool takes an eighth, write handles and kept
    // copies the rest. Past the limit a directory is found again per request, which costs one
    // openat2 and one fstat.
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 64;
    return std::clamp<size_t>(rl.rlim_cur / 4, 64, 65536);
}

}  // namespace lamina
