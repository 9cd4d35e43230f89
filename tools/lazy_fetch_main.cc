// lamina-lazy-fetch: the helper of lazy layers (docs/lazy.md), with registry code kept out of the
// daemon and out of lamina's foreground.
//   lamina-lazy-fetch LAYER PATH: laminafs runs it (lazy_fetch= mount option) on the first open
//     of a file in a lazy lower layer. Exits 0 once PATH has its verified content, or was never
//     a placeholder; 1 with one line on stderr otherwise.
//   lamina-lazy-fetch --complete [--tls-verify=false] STORE_ROOT CHAIN_ID...: the background
//     completer `pull --lazy --background` starts, detached. Completes each layer in turn (one
//     another completer holds is left to it); a failure is one line in the layer's
//     lazy/complete.log, and the next layer goes on.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "registry/transfer.h"

namespace {

using namespace lamina;

// The line a failed background completion leaves where `lamina inspect` users can find it.
void log_failure(const std::string& layer_dir, const std::string& text) {
    std::string path = layer_dir + "/lazy/complete.log";
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) return;
    std::string line = text + "\n";
    if (::write(fd, line.data(), line.size()) < 0) {
    }
    ::close(fd);
}

int complete_layers(int argc, char** argv) {
    registry::ClientOptions options;
    int i = 2;
    if (i < argc && strcmp(argv[i], "--tls-verify=false") == 0) {
        options.tls_verify = false;
        ++i;
    }
    if (argc - i < 2) {
        fprintf(stderr,
                "usage: lamina-lazy-fetch --complete [--tls-verify=false] STORE_ROOT "
                "CHAIN_ID...\n");
        return 2;
    }
    int failed = 0;
    try {
        store::Store st(argv[i]);
        registry::Settings settings = registry::Settings::load();
        for (int k = i + 1; k < argc; ++k) {
            std::string chain = argv[k];
            try {
                registry::complete_lazy_layer(st, chain, settings, options,
                                              registry::lazy_timeout_seconds(), false,
                                              [](const std::string&) {});
            } catch (const std::exception& e) {
                ++failed;
                fprintf(stderr, "lamina-lazy-fetch: %s: %s\n", chain.c_str(), e.what());
                try {
                    log_failure(st.lazy_layer_dir(chain), e.what());
                } catch (const std::exception&) {
                }
            }
        }
    } catch (const std::exception& e) {
        fprintf(stderr, "lamina-lazy-fetch: %s\n", e.what());
        return 1;
    }
    return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc >= 2 && strcmp(argv[1], "--complete") == 0) return complete_layers(argc, argv);
    if (argc != 3) {
        fprintf(stderr, "usage: lamina-lazy-fetch LAYER_DIR PATH (run by laminafs)\n");
        return 2;
    }
    std::unique_ptr<char, decltype(&free)> real(realpath(argv[1], nullptr), free);
    std::string diff = real ? real.get() : "";
    if (!diff.ends_with("/diff")) {
        fprintf(stderr, "lamina-lazy-fetch: %s is not a store layer's diff directory\n", argv[1]);
        return 1;
    }
    try {
        registry::LazyLayerFiller filler(diff.substr(0, diff.size() - 5),
                                         registry::Settings::load(), {},
                                         registry::lazy_timeout_seconds());
        if (const auto* p = filler.placeholder_for(argv[2])) filler.fill(*p);
        return 0;
    } catch (const std::exception& e) {
        fprintf(stderr, "lamina-lazy-fetch: %s: %s\n", argv[2], e.what());
        return 1;
    }
}
