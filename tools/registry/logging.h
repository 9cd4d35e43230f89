// The outermost layer of the registry client: every request and its outcome at debug level
// (`lamina --log-level debug`), with credentials left out.
#pragma once

#include <memory>

#include "transport.h"

namespace lamina::registry {

class LoggingTransport : public Transport {
public:
    explicit LoggingTransport(std::unique_ptr<Transport> inner) : inner_(std::move(inner)) {}
    HttpResponse round_trip(const HttpRequest& req) override;

private:
    std::unique_ptr<Transport> inner_;
};

}  // namespace lamina::registry
