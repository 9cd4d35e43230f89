// lamina-lazy-fetch LAYER PATH: the helper laminafs runs (lazy_fetch= mount option) on the first
// open of a file in a lazy lower layer. Exits 0 once PATH has its verified content, or was never a
// placeholder; 1 with one line on stderr otherwise. The registry code stays out of the daemon.
#include <stdio.h>
#include <stdlib.h>

#include <algorithm>
#include <memory>
#include <string>

#include "registry/transfer.h"

int main(int argc, char** argv) {
    using namespace lamina;
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
    int timeout_s = 30;
    if (const char* t = getenv("LAMINA_LAZY_TIMEOUT")) timeout_s = std::max(1, atoi(t));
    try {
        registry::LazyLayerFiller filler(diff.substr(0, diff.size() - 5),
                                         registry::Settings::load(), {}, timeout_s);
        if (const auto* p = filler.placeholder_for(argv[2])) filler.fill(*p);
        return 0;
    } catch (const std::exception& e) {
        fprintf(stderr, "lamina-lazy-fetch: %s: %s\n", argv[2], e.what());
        return 1;
    }
}
