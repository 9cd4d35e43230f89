// The registry test fixtures: processes started with posix_spawn and always killed.
#include "registry_fixture.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include <nlohmann/json.hpp>

extern char** environ;

namespace lamina::test {

using nlohmann::json;

int free_port() {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        close(s);
        ADD_FAILURE() << "cannot find a free port";
        return 0;
    }
    close(s);
    return ntohs(a.sin_port);
}

bool wait_for_port(int port, int timeout_ms) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (std::chrono::steady_clock::now() < deadline) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = htons(static_cast<uint16_t>(port));
        bool ok = connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
        close(s);
        if (ok) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
}

HangingPort::HangingPort() {
    listener_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (bind(listener_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        listen(listener_, 0) != 0 ||
        getsockname(listener_, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        ADD_FAILURE() << "cannot listen on 127.0.0.1";
        return;
    }
    port_ = ntohs(a.sin_port);
    // With a backlog of 0 the queue holds one connection; nobody accepts it, so the kernel
    // drops every later SYN and those connects wait.
    for (int i = 0; i < 2; ++i) {
        int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
        queued_.push_back(s);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
}

HangingPort::~HangingPort() {
    for (int s : queued_) close(s);
    if (listener_ >= 0) close(listener_);
}

Child::Child(const std::vector<std::string>& argv, const std::string& log) {
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    if (posix_spawnp(&pid_, args[0], &fa, nullptr, args.data(), environ) != 0) pid_ = -1;
    posix_spawn_file_actions_destroy(&fa);
    if (pid_ < 0) ADD_FAILURE() << "cannot start " << argv[0];
}

Child& Child::operator=(Child&& o) noexcept {
    if (this != &o) {
        stop();
        pid_ = o.pid_;
        o.pid_ = -1;
    }
    return *this;
}

void Child::stop() {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    int st;
    waitpid(pid_, &st, 0);
    pid_ = -1;
}

Cert make_cert(const std::string& dir, const std::string& cn) {
    Cert c{dir + "/" + cn + ".crt", dir + "/" + cn + ".key"};
    auto r = run_command({"openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                          c.key, "-out", c.cert, "-days", "2", "-subj", "/CN=" + cn, "-addext",
                          "subjectAltName=IP:127.0.0.1,DNS:localhost"});
    EXPECT_EQ(r.status, 0) << r.err;
    return c;
}

RegistryOptions basic_auth(const std::string& user, const std::string& password) {
    RegistryOptions o;
    o.htpasswd_user = user;
    o.htpasswd_password = password;
    return o;
}

Registry::Registry(const RegistryOptions& o) : opts_(o) {
    storage_ = dir_ / "storage";
    config_ = dir_ / "config.yml";
    make_dirs(storage_);
    port_ = free_port();
    if (o.tls) cert_ = make_cert(dir_.path(), "127.0.0.1");
    std::string yml =
        "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n"
        "storage:\n  filesystem:\n    rootdirectory: " +
        storage_ +
        "\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:" + std::to_string(port_) + "\n";
    if (o.tls) yml += "  tls:\n    certificate: " + cert_.cert + "\n    key: " + cert_.key + "\n";
    if (o.tls && !o.client_ca.empty()) yml += "    clientcas:\n      - " + o.client_ca + "\n";
    if (!o.htpasswd_user.empty()) {
        auto r = run_command({"htpasswd", "-Bbn", o.htpasswd_user, o.htpasswd_password});
        EXPECT_EQ(r.status, 0) << r.err;
        write_file(dir_ / "htpasswd", r.out);
        yml +=
            "auth:\n  htpasswd:\n    realm: lamina-test\n    path: " + (dir_ / "htpasswd") + "\n";
    } else if (!o.token_realm.empty()) {
        yml += "auth:\n  token:\n    realm: " + o.token_realm +
               "\n    service: lamina-test-registry\n    issuer: lamina-test-issuer\n"
               "    rootcertbundle: " +
               o.token_cert + "\n";
    }
    if (!o.proxy_remote.empty()) yml += "proxy:\n  remoteurl: " + o.proxy_remote + "\n";
    write_file(config_, yml);
    start();
}

void Registry::start() {
    proc_ = Child({"docker-registry", "serve", config_}, dir_ / "registry.log");
    if (!wait_for_port(port_, 10000))
        ADD_FAILURE() << "docker-registry did not start: " << read_file(dir_ / "registry.log");
}

void Registry::kill() {
    proc_.stop();
}

void Registry::restart() {
    proc_.stop();
    start();
}

void Registry::push_layout(const std::string& layout, const std::string& ref_name,
                           const std::string& repo_tag, bool all, const std::string& format) {
    std::vector<std::string> argv = {"skopeo", "copy", "--quiet", "--dest-tls-verify=false"};
    if (all) argv.push_back("--all");
    if (!format.empty()) argv.push_back("--format=" + format);
    if (!opts_.htpasswd_user.empty())
        argv.push_back("--dest-creds=" + opts_.htpasswd_user + ":" + opts_.htpasswd_password);
    argv.push_back("oci:" + layout + ":" + ref_name);
    argv.push_back("docker://" + host() + "/" + repo_tag);
    auto r = run_command(argv, 60);
    ASSERT_EQ(r.status, 0) << r.err;
}

std::string Registry::blob_data(const std::string& digest) const {
    std::string hex = digest.substr(7);
    return storage_ + "/docker/registry/v2/blobs/sha256/" + hex.substr(0, 2) + "/" + hex + "/data";
}

namespace {

const char* kTokenServer = R"PY(
import base64, http.server, json, sys, time, urllib.parse, uuid
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
port, user, password, certfile, keyfile = sys.argv[1:6]
cert = x509.load_pem_x509_certificate(open(certfile, 'rb').read())
chain = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
key = open(keyfile, 'rb').read()
good = 'Basic ' + base64.b64encode(f'{user}:{password}'.encode()).decode()

class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        query = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        auth = self.headers.get('Authorization', '')
        if auth and auth != good:
            return self.reply(401, {'details': 'incorrect username or password'})
        access = []
        for scope in query.get('scope', []) if auth == good else []:
            kind, rest = scope.split(':', 1)
            name, actions = rest.rsplit(':', 1)
            access.append({'type': kind, 'name': name, 'actions': actions.split(',')})
        now = int(time.time())
        claims = {'iss': 'lamina-test-issuer', 'sub': user if auth else '',
                  'aud': query.get('service', [''])[0], 'exp': now + 300, 'nbf': now - 10,
                  'iat': now, 'jti': uuid.uuid4().hex, 'access': access}
        token = jwt.encode(claims, key, algorithm='RS256', headers={'x5c': chain})
        self.reply(200, {'token': token, 'expires_in': 300})

http.server.ThreadingHTTPServer(('127.0.0.1', int(port)), Handler).serve_forever()
)PY";

const char* kProxy = R"PY(
import os, socket, sys, threading, time
listen_port, target_port, rate = (int(a) for a in sys.argv[1:4])
log = sys.argv[4]
# The connections whose first request line holds `match` meet `steps` in turn, one step each,
# then go through untouched: a number answers with that status, "cutN" forwards the reply but
# closes the connection after N bytes of it.
match = sys.argv[5].encode()
steps = [s for s in sys.argv[6].split(',') if s]
lock = threading.Lock()
# Bytes of replies sent to clients so far, kept in LOG.bytes.
sent_total = [0]

def count_sent(n):
    with lock:
        sent_total[0] += n
        with open(log + '.bytes.tmp', 'w') as f:
            f.write(str(sent_total[0]))
        os.replace(log + '.bytes.tmp', log + '.bytes')

def close(*socks):
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        s.close()

def upstream_to_client(up, client, cut):
    sent = 0
    try:
        while cut is None or sent < cut:
            data = up.recv(16384)
            if not data:
                break
            if cut is not None:
                data = data[:cut - sent]
            client.sendall(data)
            sent += len(data)
            count_sent(len(data))
            time.sleep(len(data) / rate)
    except OSError:
        pass
    close(up, client)

def client_to_upstream(client, up):
    try:
        while True:
            data = client.recv(65536)
            if not data:
                break
            for line in data.split(b'\r\n'):
                if line.lower().startswith(b'range:'):
                    with lock, open(log, 'ab') as f:
                        f.write(line + b'\n')
                elif line.split(b' ', 1)[0] in (b'GET', b'HEAD', b'POST', b'PUT', b'PATCH'):
                    with lock, open(log + '.requests', 'ab') as f:
                        f.write(line + b'\n')
            up.sendall(data)
    except OSError:
        pass

def handle(client):
    step = None
    if steps:
        head = client.recv(65536, socket.MSG_PEEK)
        line = head.split(b'\r\n', 1)[0]
        with lock:
            if match in line and steps:
                step = steps.pop(0)
    if step is not None and not step.startswith('cut'):
        client.recv(65536)
        client.sendall(b'HTTP/1.1 %d Injected\r\nContent-Length: 0\r\nConnection: close\r\n\r\n'
                       % int(step))
        close(client)
        return
    up = socket.socket()
    # A small window: the registry cannot run far ahead of what the client has received.
    up.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    try:
        up.connect(('127.0.0.1', target_port))
    except OSError:
        close(client, up)
        return
    threading.Thread(target=client_to_upstream, args=(client, up), daemon=True).start()
    upstream_to_client(up, client, int(step[3:]) if step else None)

server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(('127.0.0.1', listen_port))
server.listen(64)
while True:
    conn, _ = server.accept()
    threading.Thread(target=handle, args=(conn,), daemon=True).start()
)PY";

}  // namespace

TokenServer::TokenServer(const std::string& user, const std::string& password) {
    cert_ = make_cert(dir_.path(), "token-signer");
    write_file(dir_ / "token_server.py", kTokenServer);
    port_ = free_port();
    proc_ = Child({"/usr/bin/python3", dir_ / "token_server.py", std::to_string(port_), user,
                   password, cert_.cert, cert_.key},
                  dir_ / "token.log");
    if (!wait_for_port(port_, 10000))
        ADD_FAILURE() << "token server did not start: " << read_file(dir_ / "token.log");
}

ThrottlingProxy::ThrottlingProxy(int target_port, int bytes_per_second, int fail_status,
                                 const std::string& fail_match, int fail_times)
    : ThrottlingProxy(target_port, bytes_per_second,
                      ProxyFaults{fail_match, std::vector<std::string>(
                                                  static_cast<size_t>(std::max(fail_times, 0)),
                                                  std::to_string(fail_status))}) {}

ThrottlingProxy::ThrottlingProxy(int target_port, int bytes_per_second, const ProxyFaults& faults) {
    write_file(dir_ / "proxy.py", kProxy);
    port_ = free_port();
    std::string steps;
    for (const auto& s : faults.steps) steps += (steps.empty() ? "" : ",") + s;
    proc_ = Child({"/usr/bin/python3", dir_ / "proxy.py", std::to_string(port_),
                   std::to_string(target_port), std::to_string(bytes_per_second),
                   dir_ / "ranges.log", faults.match.empty() ? "-" : faults.match, steps},
                  dir_ / "proxy.log");
    if (!wait_for_port(port_, 10000))
        ADD_FAILURE() << "proxy did not start: " << read_file(dir_ / "proxy.log");
}

int64_t ThrottlingProxy::bytes_sent() const {
    std::string p = dir_ / "ranges.log.bytes";
    return access(p.c_str(), F_OK) == 0 ? std::stoll(read_file(p)) : 0;
}

std::string ThrottlingProxy::requests_seen() const {
    std::string p = dir_ / "ranges.log.requests";
    return access(p.c_str(), F_OK) == 0 ? read_file(p) : "";
}

std::string ThrottlingProxy::ranges_seen() const {
    return access((dir_ / "ranges.log").c_str(), F_OK) == 0 ? read_file(dir_ / "ranges.log") : "";
}

RegistryEnv::RegistryEnv() {
    config_ = dir_ / "config";
    docker_ = dir_ / "docker";
    make_dirs(config_);
    make_dirs(docker_);
    setenv("LAMINA_CONFIG_DIR", config_.c_str(), 1);
    setenv("DOCKER_CONFIG", docker_.c_str(), 1);
    setenv("CONTAINERS_REGISTRIES_CONF", (dir_ / "system-registries.conf").c_str(), 1);
}

RegistryEnv::~RegistryEnv() {
    unsetenv("LAMINA_CONFIG_DIR");
    unsetenv("DOCKER_CONFIG");
    unsetenv("CONTAINERS_REGISTRIES_CONF");
}

void RegistryEnv::registries_conf(const std::string& toml) {
    write_file(config_ + "/registries.conf", toml);
}

void RegistryEnv::system_registries_conf(const std::string& toml) {
    write_file(dir_ / "system-registries.conf", toml);
}

void RegistryEnv::secure(const std::string& host) {
    std::string conf = config_ + "/registries.conf";
    std::string old = access(conf.c_str(), F_OK) == 0 ? read_file(conf) : "";
    registries_conf(old + "[[registry]]\nlocation = \"" + host + "\"\ninsecure = false\n");
}

void RegistryEnv::write_config(const std::string& text) {
    write_file(config_ + "/config.json", text);
}

void RegistryEnv::trust(const std::string& host, const std::string& ca_pem_file) {
    make_dirs(config_ + "/certs.d/" + host);
    write_file(config_ + "/certs.d/" + host + "/ca.crt", read_file(ca_pem_file));
}

void RegistryEnv::docker_auth(const std::string& host, const std::string& user,
                              const std::string& pw) {
    auto r = run_shell("printf '%s' '" + user + ":" + pw + "' | base64 -w0");
    json j = {{"auths", {{host, {{"auth", r.out}}}}}};
    write_file(docker_ + "/config.json", j.dump());
}

namespace {

RegistryOptions cache_options(const Registry& upstream) {
    RegistryOptions co;
    co.tls = true;
    co.htpasswd_user = "dave";
    co.htpasswd_password = "pw-dave";
    co.proxy_remote = "http://" + upstream.host();
    return co;
}

}  // namespace

CacheMirror::CacheMirror(RegistryEnv& env, const Registry& upstream, const std::string& auth_file)
    : cache(cache_options(upstream)),
      ca_file(env.config_dir() + "/certs.d/" + cache.host() + "/myca.crt") {
    env.registries_conf("[[registry]]\nlocation = \"" + upstream.host() +
                        "\"\n[[registry.mirror]]\nlocation = \"" + cache.host() +
                        "\"\ninsecure = false\n");
    make_dirs(env.config_dir() + "/certs.d/" + cache.host());
    write_file(ca_file, read_file(cache.cert().cert));
    auto auth = run_shell("printf dave:pw-dave | base64 -w0").out;
    write_file(auth_file, json({{"auths", {{cache.host(), {{"auth", auth}}}}}}).dump());
}

std::string registry_skip_reason() {
    for (const char* p : {"docker-registry", "skopeo", "openssl", "htpasswd"})
        if (!have_program(p))
            return "[needs program:" + std::string(p) + "] " + p + " is not installed";
    if (run_command({"/usr/bin/python3", "-c", "import jwt, cryptography"}).status != 0)
        return "[needs python3:jwt,cryptography] /usr/bin/python3 with python3-jwt is not "
               "installed";
    return "";
}

namespace {

std::string put_blob(const std::string& dir, const std::string& data) {
    std::string digest = sha256(data);
    write_file(dir + "/blobs/sha256/" + digest.substr(7), data);
    return digest;
}

}  // namespace

void write_multiplatform_layout(const std::string& dir, const std::string& name,
                                const std::vector<std::pair<std::string, Layer>>& per_arch) {
    make_dirs(dir + "/blobs/sha256");
    json index = {{"schemaVersion", 2},
                  {"mediaType", "application/vnd.oci.image.index.v1+json"},
                  {"manifests", json::array()}};
    for (const auto& [arch, layer] : per_arch) {
        std::string blob = compress(layer.tar, layer.compression);
        std::string mt = "application/vnd.oci.image.layer.v1.tar";
        if (!layer.compression.empty()) mt += "+" + layer.compression;
        json config = {{"architecture", arch},
                       {"os", "linux"},
                       {"created", "2024-01-02T03:04:05Z"},
                       {"rootfs", {{"type", "layers"}, {"diff_ids", {sha256(layer.tar)}}}}};
        std::string cfg = config.dump();
        json manifest = {
            {"schemaVersion", 2},
            {"mediaType", "application/vnd.oci.image.manifest.v1+json"},
            {"config",
             {{"mediaType", "application/vnd.oci.image.config.v1+json"},
              {"digest", put_blob(dir, cfg)},
              {"size", cfg.size()}}},
            {"layers",
             {{{"mediaType", mt}, {"digest", put_blob(dir, blob)}, {"size", blob.size()}}}}};
        std::string m = manifest.dump();
        index["manifests"].push_back({{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                                      {"digest", put_blob(dir, m)},
                                      {"size", m.size()},
                                      {"platform", {{"os", "linux"}, {"architecture", arch}}}});
    }
    std::string idx = index.dump();
    json top = {{"schemaVersion", 2},
                {"manifests",
                 {{{"mediaType", "application/vnd.oci.image.index.v1+json"},
                   {"digest", put_blob(dir, idx)},
                   {"size", idx.size()},
                   {"annotations", {{"org.opencontainers.image.ref.name", name}}}}}}};
    write_file(dir + "/index.json", top.dump());
    write_file(dir + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
}

std::string random_bytes(size_t n, uint64_t seed) {
    Rng rng(seed);
    std::string out(n, '\0');
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v = rng.next();
        for (size_t k = 0; k < 8 && i + k < n; ++k) out[i + k] = static_cast<char>(v >> (8 * k));
    }
    return out;
}

std::string last_line_of(const CommandResult& r) {
    std::string s = out_of(r);
    return s.substr(s.rfind('\n') == std::string::npos ? 0 : s.rfind('\n') + 1);
}

bool contains(const std::string& hay, const std::string& needle) {
    return hay.find(needle) != std::string::npos;
}

void expect_one_line_failure(const CommandResult& r, const std::string& needle) {
    EXPECT_NE(r.status, 0) << r.out;
    EXPECT_TRUE(contains(r.err, needle)) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
}

json images_json(const Lamina& lamina) {
    auto r = lamina({"images", "--format", "json"});
    EXPECT_EQ(r.status, 0) << r.err;
    return json::parse(r.out);
}

BuiltImage push_demo(Registry& reg, const TempDir& tmp, const std::string& repo_tag) {
    auto built = write_oci_layout(tmp / "demo-layout", demo_image("zstd"), "demo");
    reg.push_layout(tmp / "demo-layout", "demo", repo_tag);
    return built;
}

std::string first_layer_digest(const std::string& layout) {
    json index = json::parse(read_file(layout + "/index.json"));
    std::string mdigest = index["manifests"][0]["digest"];
    json manifest = json::parse(read_file(layout + "/blobs/sha256/" + mdigest.substr(7)));
    return manifest["layers"][0]["digest"];
}

std::string push_estargz(Registry& reg, const TempDir& tmp, const std::vector<Layer>& layers,
                         const std::string& repo) {
    std::string layout = tmp / (repo.substr(repo.rfind('/') + 1) + "-layout");
    write_oci_layout(layout, layers, "img");
    reg.push_layout(layout, "img", repo + ":v1");
    std::string plain = reg.host() + "/" + repo + ":v1", lazy = reg.host() + "/" + repo + ":ez";
    Lamina src(layout + "-store");
    auto pull = src({"pull", "--tls-verify=false", plain});
    EXPECT_EQ(pull.status, 0) << pull.err;
    auto push = src({"push", "--tls-verify=false", "--compression-format", "estargz", plain, lazy});
    EXPECT_EQ(push.status, 0) << push.err;
    return lazy;
}

}  // namespace lamina::test
