// Retrying registry requests with backoff, and the failure count that progress resets.
#include "retry.h"

#include <thread>

namespace lamina::registry {

bool is_retryable(const HttpResponse& reply, Retry rule) {
    return rule != Retry::kNone && reply.status >= 500;
}

bool is_retryable(const TransportError& e, Retry rule) {
    if (rule == Retry::kNone || e.tls_failure) return false;
    return !(e.connection_refused && rule == Retry::kNotRefused);
}

std::optional<std::chrono::milliseconds> RetryBudget::after_failure(bool progressed) {
    if (progressed) failures_ = 0;
    if (++failures_ >= policy_.attempts) return std::nullopt;
    return policy_.first_backoff * (1 << (failures_ - 1));
}

HttpResponse RetryTransport::round_trip(const HttpRequest& req) {
    RetryBudget budget(policy_);
    for (;;) {
        std::optional<std::chrono::milliseconds> wait;
        try {
            HttpResponse r = inner_->round_trip(req);
            if (!is_retryable(r, req.retry) || !(wait = budget.after_failure(false))) return r;
        } catch (const TransportError& e) {
            if (!is_retryable(e, req.retry) || !(wait = budget.after_failure(false))) throw;
        }
        std::this_thread::sleep_for(*wait);
    }
}

}  // namespace lamina::registry
