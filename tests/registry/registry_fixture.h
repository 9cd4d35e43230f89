// A real registry for the tests: Debian's docker-registry on 127.0.0.1 with a free port and
// storage in a temp dir (plain, TLS, htpasswd or token auth), a token server and a throttling
// proxy in python3, certificates made with openssl, images pushed with skopeo.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "store_fixture.h"

#define REQUIRE_REGISTRY()                                        \
    do {                                                          \
        std::string why = ::lamina::test::registry_skip_reason(); \
        if (!why.empty()) GTEST_SKIP() << why;                    \
    } while (0)

namespace lamina::test {

// The last line of a command that must succeed (pull prints progress before the image).
std::string last_line_of(const CommandResult& r);
bool contains(const std::string& hay, const std::string& needle);
// One line on stderr, non-zero exit, needle in it.
void expect_one_line_failure(const CommandResult& r, const std::string& needle);
// `lamina images --format json`.
nlohmann::json images_json(const Lamina& lamina);

// A port nothing listens on right now.
int free_port();
// Waits until something accepts connections on 127.0.0.1:port.
bool wait_for_port(int port, int timeout_ms);

// A port on 127.0.0.1 where connecting hangs, as with a host that drops packets: a listener
// whose accept queue is kept full, so the kernel ignores new connection requests.
class HangingPort {
public:
    HangingPort();
    ~HangingPort();
    HangingPort(const HangingPort&) = delete;
    HangingPort& operator=(const HangingPort&) = delete;
    int port() const { return port_; }

private:
    int listener_ = -1;
    std::vector<int> queued_;
    int port_ = 0;
};

// A child process that is killed (and reaped) when this object goes.
class Child {
public:
    Child() = default;
    Child(const std::vector<std::string>& argv, const std::string& log);
    ~Child() { stop(); }
    Child(Child&& o) noexcept : pid_(o.pid_) { o.pid_ = -1; }
    Child& operator=(Child&& o) noexcept;
    void stop();  // SIGKILL and wait
    pid_t pid() const { return pid_; }

private:
    pid_t pid_ = -1;
};

// A self-signed certificate for 127.0.0.1 (cert.pem, key.pem in dir).
struct Cert {
    std::string cert, key;
};
Cert make_cert(const std::string& dir, const std::string& cn);

struct RegistryOptions {
    bool tls = false;
    std::string client_ca;  // with tls: clients must show a certificate this CA signed
    std::string htpasswd_user, htpasswd_password;  // basic auth when set
    // Token auth when set: realm URL, and the token signer's certificate.
    std::string token_realm, token_cert;
    // A pull-through cache of this registry URL ("http://127.0.0.1:5000") when set.
    std::string proxy_remote;
};

// Options for a registry with htpasswd basic auth for one user.
RegistryOptions basic_auth(const std::string& user, const std::string& password);

class Registry {
public:
    explicit Registry(const RegistryOptions& o = {});
    ~Registry() = default;
    int port() const { return port_; }
    std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
    const std::string& storage() const { return storage_; }
    const Cert& cert() const { return cert_; }
    void kill();     // SIGKILL, as a crash would
    void restart();  // same port, same storage
    // skopeo copy of an OCI layout's image (by its ref name) into repo:tag here; all copies
    // every image of an index, format "v2s2" converts to Docker schema 2.
    void push_layout(const std::string& layout, const std::string& ref_name,
                     const std::string& repo_tag, bool all = false, const std::string& format = "");
    // The file the registry keeps a blob in.
    std::string blob_data(const std::string& digest) const;

private:
    void start();
    RegistryOptions opts_;
    TempDir dir_{"lamina-registry"};
    std::string storage_, config_;
    Cert cert_;
    int port_ = 0;
    Child proc_;
};

// A bearer-token server for the registry's token auth: grants what is asked to user/password.
class TokenServer {
public:
    TokenServer(const std::string& user, const std::string& password);
    std::string realm() const { return "http://127.0.0.1:" + std::to_string(port_) + "/token"; }
    const std::string& cert() const { return cert_.cert; }

private:
    TempDir dir_{"lamina-token"};
    Cert cert_;
    int port_ = 0;
    Child proc_;
};

// What a ThrottlingProxy does to the connections whose first request line contains match:
// each meets the next step, then the rest go through. A step is an HTTP status ("503") sent
// instead of the reply, or "cutN": the reply is forwarded but the connection closed after
// N bytes of it.
struct ProxyFaults {
    std::string match;
    std::vector<std::string> steps;
};

// Forwards 127.0.0.1:port() to target_port, sending replies at bytes_per_second. The first
// fail_times connections whose first request line contains fail_match get fail_status instead.
class ThrottlingProxy {
public:
    ThrottlingProxy(int target_port, int bytes_per_second, int fail_status = 0,
                    const std::string& fail_match = "-", int fail_times = 0);
    ThrottlingProxy(int target_port, int bytes_per_second, const ProxyFaults& faults);
    int port() const { return port_; }
    // The Range headers of the requests that went through, one a line.
    std::string ranges_seen() const;
    // Their request lines ("GET /v2/... HTTP/1.1"), one a line.
    std::string requests_seen() const;
    // The bytes of replies (headers included) sent to clients so far.
    int64_t bytes_sent() const;

private:
    TempDir dir_{"lamina-proxy"};
    int port_ = 0;
    Child proc_;
};

// A registry config dir (LAMINA_CONFIG_DIR), an empty Docker config (DOCKER_CONFIG) and
// system registries.conf (CONTAINERS_REGISTRIES_CONF) for this process and the lamina it
// runs; all are reset when the object goes.
class RegistryEnv {
public:
    RegistryEnv();
    ~RegistryEnv();
    const std::string& config_dir() const { return config_; }
    void write_config(const std::string& json);
    // <config dir>/registries.conf; the system's is never read (CONTAINERS_REGISTRIES_CONF
    // names a file of this env's, empty until system_registries_conf writes it).
    void registries_conf(const std::string& toml);
    void system_registries_conf(const std::string& toml);
    // A registries.conf entry saying host is not insecure, against the 127.0.0.0/8 default.
    void secure(const std::string& host);
    // certs.d/<host>/ca.crt
    void trust(const std::string& host, const std::string& ca_pem_file);
    void docker_auth(const std::string& host, const std::string& user, const std::string& pw);

private:
    TempDir dir_{"lamina-regenv"};
    std::string config_, docker_;
};

// A pull-through cache (TLS, htpasswd user dave, password pw-dave) in front of upstream, set up
// in env's registries.conf as upstream's mirror with insecure = false, trusted through a CA file
// named certs.d/HOST/myca.crt (not ca.crt), its credentials written to auth_file (for
// $REGISTRY_AUTH_FILE).
class CacheMirror {
public:
    CacheMirror(RegistryEnv& env, const Registry& upstream, const std::string& auth_file);
    Registry cache;
    std::string ca_file;  // the myca.crt
};

// Why registry tests cannot run here, with its needs.h tag ("" when they can).
std::string registry_skip_reason();

// An OCI layout at dir whose index (ref name `name`) lists one image per platform.
void write_multiplatform_layout(const std::string& dir, const std::string& name,
                                const std::vector<std::pair<std::string, Layer>>& per_arch);

// Incompressible bytes (a layer that takes a while to download).
std::string random_bytes(size_t n, uint64_t seed);

class Registry;
// The demo image (gzip bottom, zstd top) in the registry as repo_tag; its layout is
// tmp/demo-layout.
BuiltImage push_demo(Registry& reg, const TempDir& tmp, const std::string& repo_tag);
// layers as repo:v1 in the registry, pulled into a store of its own under tmp and pushed back
// with --compression-format estargz as repo:ez; returns "HOST/repo:ez".
std::string push_estargz(Registry& reg, const TempDir& tmp, const std::vector<Layer>& layers,
                         const std::string& repo);
// The digest of the first layer of the first image in an OCI layout.
std::string first_layer_digest(const std::string& layout);

}  // namespace lamina::test
