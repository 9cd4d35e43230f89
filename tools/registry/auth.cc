// Registry auth: challenges, bearer tokens from the realm's token server, basic credentials.
#include "auth.h"
#include "error.h"
#include "json_input.h"

#include <nlohmann/json.hpp>

namespace lamina::registry {

using nlohmann::json;

namespace {

std::string lower(std::string s) {
    for (auto& c : s) c = static_cast<char>(tolower(static_cast<unsigned char>(c)));
    return s;
}

}  // namespace

Challenge parse_challenge(const std::string& header) {
    Challenge out;
    size_t sp = header.find(' ');
    out.scheme = lower(header.substr(0, sp));
    if (sp == std::string::npos) return out;
    size_t i = sp + 1;
    while (i < header.size()) {
        while (i < header.size() && (header[i] == ' ' || header[i] == ',')) ++i;
        size_t eq = header.find('=', i);
        if (eq == std::string::npos) break;
        std::string key = lower(header.substr(i, eq - i));
        std::string value;
        i = eq + 1;
        if (i < header.size() && header[i] == '"') {
            for (++i; i < header.size() && header[i] != '"'; ++i) {
                if (header[i] == '\\' && i + 1 < header.size()) ++i;
                value += header[i];
            }
            ++i;
        } else {
            size_t end = header.find(',', i);
            value = header.substr(i, end == std::string::npos ? std::string::npos : end - i);
            i = end == std::string::npos ? header.size() : end;
        }
        out.params[key] = value;
    }
    return out;
}

std::string basic_authorization(const Credentials& c) {
    return "Basic " + base64_encode(c.username + ":" + c.password);
}

AuthTransport::AuthTransport(std::unique_ptr<Transport> inner, std::string registry,
                             std::string host, std::optional<Credentials> credentials,
                             AuthScope scope)
    : inner_(std::move(inner)),
      registry_(std::move(registry)),
      host_(std::move(host)),
      credentials_(std::move(credentials)),
      scope_(std::move(scope)) {}

void AuthTransport::set_credentials(const Credentials& c) {
    std::lock_guard lk(mu_);
    credentials_ = c;
    header_.clear();
}

void AuthTransport::add_pull_scope(const std::string& repository) {
    std::lock_guard lk(mu_);
    if (repository != scope_.repository && extra_pull_scopes_.insert(repository).second &&
        challenge_.scheme == "bearer")
        header_.clear();  // fetched again with the new scope on the next request
}

std::string AuthTransport::fetch_token() {
    const std::string realm = challenge_.params["realm"];
    std::string u = realm + (realm.find('?') == std::string::npos ? "?" : "&");
    u += "service=" + percent_encode(challenge_.params["service"]);
    if (!scope_.repository.empty())
        u += "&scope=" + percent_encode("repository:" + scope_.repository +
                                        (scope_.push ? ":pull,push" : ":pull"));
    for (const auto& r : extra_pull_scopes_)
        u += "&scope=" + percent_encode("repository:" + r + ":pull");
    HttpRequest req;
    req.url = u;
    if (credentials_) req.headers.push_back("Authorization: " + basic_authorization(*credentials_));
    HttpResponse r;
    try {
        r = inner_->round_trip(req);
    } catch (const TransportError& e) {
        // Still a transport failure: the retry layer above may try the request again.
        throw TransportError("cannot get a token from " + realm + ": " + e.what(), e.tls_failure,
                             e.partial_transfer, e.connection_refused);
    }
    if (r.status >= 500)
        throw TransportError(
            "cannot get a token from " + realm + ": HTTP " + std::to_string(r.status), false, false,
            false);
    if (r.status == 401 || r.status == 403)
        throw RegistryError(host_ + ": " +
                                (credentials_ ? "the token server refused the credentials for " +
                                                    credentials_->username
                                              : "the token server asks for credentials (lamina "
                                                "login " +
                                                    registry_ + ")"),
                            r.status);
    if (r.status != 200)
        throw RegistryError(
            "cannot get a token from " + realm + ": HTTP " + std::to_string(r.status), r.status);
    try {
        json j = store::parse_json_limited(r.body, "token reply", store::kMaxManifestBytes);
        std::string t = store::string_member(j, "token", "token reply", "");
        if (t.empty()) t = store::string_member(j, "access_token", "token reply", "");
        if (t.empty()) throw RegistryError("the token server's reply holds no token");
        return t;
    } catch (const store::StoreError& e) {
        throw RegistryError(std::string("the token server's reply: ") + e.what());
    }
}

std::string AuthTransport::current_header() {
    std::lock_guard lk(mu_);
    if (header_.empty() && challenge_.scheme == "bearer") header_ = "Bearer " + fetch_token();
    if (header_.empty() && challenge_.scheme == "basic" && credentials_)
        header_ = basic_authorization(*credentials_);
    return header_;
}

void AuthTransport::refresh(const HttpResponse& unauthorized, const std::string& used) {
    std::lock_guard lk(mu_);
    if (header_ != used) return;  // another thread refreshed it already
    if (std::string h = unauthorized.header("www-authenticate"); !h.empty())
        challenge_ = parse_challenge(h);
    header_.clear();
    if (challenge_.scheme == "bearer") {
        if (challenge_.params["realm"].empty())
            throw RegistryError(host_ + ": bearer challenge without a realm", 401);
        header_ = "Bearer " + fetch_token();
    } else if (challenge_.scheme == "basic" && credentials_) {
        header_ = basic_authorization(*credentials_);
    }
}

HttpResponse AuthTransport::round_trip(const HttpRequest& req) {
    auto send = [&](const std::string& auth) {
        if (auth.empty()) return inner_->round_trip(req);
        HttpRequest with = req;
        with.headers.push_back("Authorization: " + auth);
        return inner_->round_trip(with);
    };
    std::string used = current_header();
    HttpResponse r = send(used);
    if (r.status != 401) return r;
    refresh(r, used);
    std::string now = current_header();
    // Once more with new or first credentials; a second 401 is final.
    if (!now.empty() && (now != used || used.empty())) r = send(now);
    return r;
}

void AuthTransport::authenticate_now() {
    std::lock_guard lk(mu_);
    if (challenge_.scheme == "bearer") {
        extra_pull_scopes_.clear();
        header_ = "Bearer " + fetch_token();
    } else if (challenge_.scheme == "basic") {
        if (!credentials_) throw RegistryError(host_ + ": the registry asks for credentials", 401);
        header_ = basic_authorization(*credentials_);
    }
}

}  // namespace lamina::registry
