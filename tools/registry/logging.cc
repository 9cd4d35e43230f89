// Logging registry requests through spdlog; quiet unless the level is debug.
#include "logging.h"

#include <spdlog/spdlog.h>

#include <chrono>

namespace lamina::registry {

HttpResponse LoggingTransport::round_trip(const HttpRequest& req) {
    if (!spdlog::should_log(spdlog::level::debug)) return inner_->round_trip(req);
    std::string range;
    for (const auto& h : req.headers)
        if (h.starts_with("Range:")) range = " (" + h + ")";
    auto start = std::chrono::steady_clock::now();
    auto ms = [&] {
        return std::chrono::duration_cast<std::chrono::milliseconds>(
                   std::chrono::steady_clock::now() - start)
            .count();
    };
    try {
        HttpResponse r = inner_->round_trip(req);
        spdlog::debug("registry: {} {}{} -> {} in {} ms", req.method, req.url, range, r.status,
                      ms());
        return r;
    } catch (const std::exception& e) {
        spdlog::debug("registry: {} {}{} -> failed in {} ms: {}", req.method, req.url, range, ms(),
                      e.what());
        throw;
    }
}

}  // namespace lamina::registry
