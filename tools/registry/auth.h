// The auth layer of the registry client: reads WWW-Authenticate challenges, fetches bearer
// tokens or sends basic credentials, and tries a request once more after a 401.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>

#include "credentials.h"
#include "transport.h"

namespace lamina::registry {

struct Challenge {
    std::string scheme;                         // "bearer", "basic" or "" (none asked)
    std::map<std::string, std::string> params;  // realm, service, scope; lowercase keys
};
// `Bearer realm="...",service="..."` as a scheme (lowercase) and its parameters.
Challenge parse_challenge(const std::string& header);

// The Authorization header value for basic auth: "Basic base64(user:password)".
std::string basic_authorization(const Credentials& c);

// What a token is asked for: pull (and push) on one repository, pull on others (the sources
// of cross-repository mounts). An empty repository asks for none (login).
struct AuthScope {
    std::string repository;
    bool push = false;
};

class AuthTransport : public Transport {
public:
    // registry: the name users log in to (for messages); host: where requests go.
    AuthTransport(std::unique_ptr<Transport> inner, std::string registry, std::string host,
                  std::optional<Credentials> credentials, AuthScope scope);
    // Adds an Authorization header when one is known; on a 401 learns the challenge, gets a
    // token (or picks basic) and sends the request once more. A second 401 is handed up.
    HttpResponse round_trip(const HttpRequest& req) override;

    // Fetches a token (bearer) or checks that there are credentials (basic), now, without
    // touching a repository: login. Call after a request has met the challenge (the ping).
    void authenticate_now();
    void set_credentials(const Credentials& c);
    const std::optional<Credentials>& credentials() const { return credentials_; }
    // Also asks for pull access to another repository (for cross-repository mounts).
    void add_pull_scope(const std::string& repository);

private:
    std::string current_header();
    void refresh(const HttpResponse& unauthorized, const std::string& used);
    std::string fetch_token();  // with auth_mu_ held

    std::unique_ptr<Transport> inner_;
    std::string registry_, host_;
    std::optional<Credentials> credentials_;
    AuthScope scope_;

    std::mutex mu_;  // the parallel downloads share one token
    Challenge challenge_;
    std::set<std::string> extra_pull_scopes_;
    std::string header_;  // the Authorization value in use, "" for none
};

}  // namespace lamina::registry
