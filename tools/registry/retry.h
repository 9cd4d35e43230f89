// The one retry policy of the registry client: which failures are tried again, how long to
// wait between tries, and when to give up (after attempts in a row that brought no progress).
#pragma once

#include <chrono>
#include <memory>
#include <optional>

#include "transport.h"

namespace lamina::registry {

struct RetryPolicy {
    int attempts = 6;  // tries in a row without progress; backoff 0.5 + 1 + 2 + 4 + 8 s between
    std::chrono::milliseconds first_backoff{500};  // doubling after each failure

    // One try and no wait: a mirror being probed, with the registry to fall back on.
    static RetryPolicy once() { return RetryPolicy{1, std::chrono::milliseconds(0)}; }
};

// True when a reply or a transport failure is worth another try under rule.
bool is_retryable(const HttpResponse& reply, Retry rule);
bool is_retryable(const TransportError& e, Retry rule);

// Failures of one piece of work (a request, a blob, an upload). The rule that makes a flaky
// but advancing transfer finish: an attempt that brought the work further than ever before
// starts the count again.
class RetryBudget {
public:
    explicit RetryBudget(const RetryPolicy& policy) : policy_(policy) {}
    // After a failed attempt: the wait before the next one, or nothing when the attempts
    // are spent. progressed: the attempt got further than any before it.
    std::optional<std::chrono::milliseconds> after_failure(bool progressed);
    int attempts() const { return policy_.attempts; }

private:
    RetryPolicy policy_;
    int failures_ = 0;  // in a row without progress
};

// Tries a request again (as its Retry rule allows) with backoff; the last reply or failure
// is handed up. Outside auth, so a retried request is authorised afresh.
class RetryTransport : public Transport {
public:
    RetryTransport(std::unique_ptr<Transport> inner, RetryPolicy policy)
        : inner_(std::move(inner)), policy_(policy) {}
    HttpResponse round_trip(const HttpRequest& req) override;
    void set_policy(const RetryPolicy& p) { policy_ = p; }
    const RetryPolicy& policy() const { return policy_; }

private:
    std::unique_ptr<Transport> inner_;
    RetryPolicy policy_;
};

}  // namespace lamina::registry
