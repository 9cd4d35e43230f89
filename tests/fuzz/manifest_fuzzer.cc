// libFuzzer target: the registry client's manifest and index parser (layerstore/image_format),
// on any bytes. The first byte picks the Content-Type the reply claims; the rest is the body.
// A manifest it cannot take must be refused with one line (std::runtime_error), never a crash,
// another exception type or a message spread over several lines; an index it accepts must
// answer a platform choice the same way. The normal build replays the corpus through it
// (fuzz_corpus_test).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "fuzz_check.h"
#include "image_format.h"

namespace {

void check_one_line(const std::exception& e) {
    lamina::fuzz::check(std::string(e.what()).find('\n') == std::string::npos,
                        std::string("a refusal is one line: ") + e.what());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace lamina::store;
    static const char* const kTypes[] = {"",
                                         kOciManifest,
                                         kOciIndex,
                                         kDockerManifest,
                                         kDockerManifestList,
                                         kDockerSchema1,
                                         "application/json",
                                         "text/html"};
    if (size == 0) return 0;
    std::string content_type = kTypes[data[0] % (sizeof kTypes / sizeof *kTypes)];
    std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);
    Manifest m;
    try {
        m = parse_manifest(body, content_type);
    } catch (const std::runtime_error& e) {
        check_one_line(e);
        return 0;
    }
    if (m.is_index) {
        for (const char* want : {"linux/amd64", "linux/arm64", "linux/arm/v7"}) {
            try {
                (void)select_platform(m, parse_platform(want));
            } catch (const std::runtime_error& e) {
                check_one_line(e);
            }
        }
    }
    for (const Descriptor& l : m.layers) (void)layer_media_type_compression(l.media_type);
    return 0;
}
