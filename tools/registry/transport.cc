// The libcurl transport: one easy handle per thread, reset for each request so connections are
// reused; the TLS settings and time limits of every exchange are set here and nowhere else.
#include "transport.h"

#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <exception>
#include <mutex>

namespace lamina::registry {

namespace {

struct Exchange {
    const HttpRequest* req;
    HttpResponse* resp;
    CURL* curl;
    std::exception_ptr error;
    int64_t sent = 0;
};

size_t on_header(char* data, size_t size, size_t n, void* user) {
    auto* ex = static_cast<Exchange*>(user);
    std::string line(data, size * n);
    if (line.starts_with("HTTP/")) {
        ex->resp->headers.clear();  // a new reply (after a redirect or 100 Continue)
        return size * n;
    }
    auto colon = line.find(':');
    if (colon == std::string::npos) return size * n;
    std::string name = line.substr(0, colon);
    std::transform(name.begin(), name.end(), name.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::string value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.erase(0, 1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' '))
        value.pop_back();
    ex->resp->headers[name] = value;
    return size * n;
}

size_t on_body(char* data, size_t size, size_t n, void* user) {
    auto* ex = static_cast<Exchange*>(user);
    long status = 0;
    curl_easy_getinfo(ex->curl, CURLINFO_RESPONSE_CODE, &status);
    ex->resp->status = status;
    if (status >= 200 && status < 300 && ex->req->sink) {
        try {
            ex->req->sink(*ex->resp, data, size * n);
        } catch (...) {
            ex->error = std::current_exception();
            return 0;
        }
    } else {
        // Kept in memory: error bodies up to 1 MiB, replies (manifests) just past the 4 MiB the
        // client accepts, so an oversized manifest is refused as such rather than cut short.
        size_t cap = status >= 200 && status < 300 ? (4u << 20) + 1 : 1u << 20;
        if (ex->resp->body.size() < cap) ex->resp->body.append(data, size * n);
    }
    return size * n;
}

size_t on_upload(char* buf, size_t size, size_t n, void* user) {
    auto* ex = static_cast<Exchange*>(user);
    int64_t left = ex->req->upload_size - ex->sent;
    size_t want = std::min<size_t>(size * n, static_cast<size_t>(std::max<int64_t>(left, 0)));
    if (want == 0) return 0;
    ssize_t got = ::pread(ex->req->upload_fd, buf, want, ex->req->upload_offset + ex->sent);
    if (got <= 0) return CURL_READFUNC_ABORT;
    ex->sent += got;
    return static_cast<size_t>(got);
}

struct HandleOwner {
    CURL* h = nullptr;
    ~HandleOwner() {
        if (h) curl_easy_cleanup(h);
    }
};

CURL* thread_handle() {
    static std::once_flag once;
    std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    thread_local HandleOwner owner;
    if (!owner.h) owner.h = curl_easy_init();
    if (!owner.h) throw TransportError("cannot initialise libcurl", false, false, false);
    curl_easy_reset(owner.h);
    return owner.h;
}

bool is_tls_error(CURLcode c) {
    return c == CURLE_SSL_CONNECT_ERROR || c == CURLE_PEER_FAILED_VERIFICATION ||
           c == CURLE_SSL_CERTPROBLEM || c == CURLE_SSL_CIPHER || c == CURLE_SSL_CACERT_BADFILE ||
           c == CURLE_SSL_ISSUER_ERROR || c == CURLE_SSL_CRL_BADFILE ||
           c == CURLE_SSL_PINNEDPUBKEYNOTMATCH || c == CURLE_SSL_ENGINE_INITFAILED ||
           c == CURLE_USE_SSL_FAILED;
}

}  // namespace

std::string percent_encode(const std::string& s) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += '%';
            out += hex[c >> 4];
            out += hex[c & 15];
        }
    }
    return out;
}

Limits probe_limits() {
    Limits l;
    l.connect_timeout_s = 2;  // a connect that takes longer counts as a dead mirror
    l.total_timeout_s = 10;
    return l;
}

HttpResponse CurlTransport::round_trip(const HttpRequest& req) {
    const TlsOptions& tls = tls_;
    CURL* c = thread_handle();
    HttpResponse resp;
    Exchange ex{&req, &resp, c, nullptr, 0};
    char errbuf[CURL_ERROR_SIZE] = {};
    curl_easy_setopt(c, CURLOPT_URL, req.url.c_str());
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_USERAGENT, "lamina/" LAMINA_VERSION);
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, req.follow_redirects ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_MAXREDIRS, 10L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, limits_.connect_timeout_s);
    if (limits_.total_timeout_s > 0) curl_easy_setopt(c, CURLOPT_TIMEOUT, limits_.total_timeout_s);
    // A stalled transfer counts as dropped (a TransportError the retry layer may try again).
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_LIMIT, limits_.stall_bytes_per_s);
    curl_easy_setopt(c, CURLOPT_LOW_SPEED_TIME, limits_.stall_seconds);
    curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(c, CURLOPT_HEADERDATA, &ex);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &ex);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, tls.verify ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, tls.verify ? 2L : 0L);
    if (!tls.system_ca_file.empty())
        curl_easy_setopt(c, CURLOPT_CAINFO, tls.system_ca_file.c_str());
    if (!tls.system_ca_dir.empty()) curl_easy_setopt(c, CURLOPT_CAPATH, tls.system_ca_dir.c_str());
    curl_blob cas{};
    if (!tls.ca_bundle.empty()) {
        // The blob replaces CURLOPT_CAINFO, so it holds the system bundle as well (certs.cc).
        cas.data = const_cast<char*>(tls.ca_bundle.data());
        cas.len = tls.ca_bundle.size();
        cas.flags = CURL_BLOB_NOCOPY;
        curl_easy_setopt(c, CURLOPT_CAINFO_BLOB, &cas);
    }
    if (!tls.client_cert.empty()) curl_easy_setopt(c, CURLOPT_SSLCERT, tls.client_cert.c_str());
    if (!tls.client_key.empty()) curl_easy_setopt(c, CURLOPT_SSLKEY, tls.client_key.c_str());

    curl_slist* headers = nullptr;
    for (const auto& h : req.headers) headers = curl_slist_append(headers, h.c_str());
    // Uploads go in one request; curl's "Expect: 100-continue" only adds a round trip.
    headers = curl_slist_append(headers, "Expect:");
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, headers);

    if (req.method == "HEAD") {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    } else if (req.method != "GET") {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req.method.c_str());
        if (req.upload_fd >= 0) {
            curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
            curl_easy_setopt(c, CURLOPT_READFUNCTION, on_upload);
            curl_easy_setopt(c, CURLOPT_READDATA, &ex);
            curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(req.upload_size));
        } else {
            curl_easy_setopt(c, CURLOPT_POSTFIELDS, req.body.data());
            curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE,
                             static_cast<curl_off_t>(req.body.size()));
        }
    }
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(headers);
    if (ex.error) std::rethrow_exception(ex.error);
    if (rc != CURLE_OK) {
        std::string why = errbuf[0] ? errbuf : curl_easy_strerror(rc);
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        bool refused = rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST;
        throw TransportError(why, is_tls_error(rc), status != 0, refused);
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp.status);
    return resp;
}

}  // namespace lamina::registry
