// The registry commands: pull, push, login, logout (the client is in tools/registry/).
#include <fcntl.h>
#include <spawn.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include <iostream>
#include <iterator>
#include <stdexcept>

#include "cli.h"
#include "error.h"
#include "estargz.h"
#include "output.h"
#include "registry/client.h"
#include "registry/credentials.h"
#include "registry/reference.h"
#include "registry/settings.h"
#include "registry/transfer.h"

namespace lamina::cli {
namespace {

using registry::ClientOptions;
using registry::Reference;
using registry::Settings;

Reference reference_operand(const std::string& text) {
    try {
        return registry::parse_reference(text);
    } catch (const std::invalid_argument& e) {
        throw UsageError(e.what());
    }
}

std::optional<bool> tls_verify_option(const Args& a) {
    if (!a.values.count("tls-verify")) return std::nullopt;
    std::string v = a.value("tls-verify");
    if (v == "true" || v == "1") return true;
    if (v == "false" || v == "0") return false;
    throw UsageError("--tls-verify must be true or false");
}

}  // namespace

void start_lazy_completer(store::Store& st, const std::string& image_id,
                          const std::optional<bool>& tls_verify) {
    auto lazy = st.lazy_layers();
    std::vector<std::string> args = {store::Store::lazy_fetch_binary(), "--complete"};
    if (tls_verify == false) args.push_back("--tls-verify=false");
    args.push_back(st.root());
    size_t layers = 0;
    for (const auto& l : st.image(image_id).layers)
        if (lazy.count(l.chain_id)) {
            args.push_back(l.chain_id);
            ++layers;
        }
    if (layers == 0) return;
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    for (int fd = 0; fd <= 2; ++fd)
        posix_spawn_file_actions_addopen(&fa, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, &attr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) throw store::StoreError("cannot start " + args[0] + ": " + strerror(rc));
    std::cerr << "Completing " << layers << " lazy layer" << (layers == 1 ? "" : "s")
              << " in the background (pid " << pid << ")\n";
}

void complete_lazy_layers(Context& ctx, const std::vector<std::string>& image_refs,
                          const std::optional<bool>& tls_verify) {
    auto lazy = ctx.store().lazy_layers();
    if (lazy.empty()) return;
    std::set<std::string> chains;
    for (const auto& ref : image_refs) {
        store::ImageRecord img;
        try {
            img = ctx.store().image(ref);
        } catch (const store::StoreError&) {
            continue;  // the command itself says it has no such image
        }
        for (const auto& l : img.layers)
            if (lazy.count(l.chain_id)) chains.insert(l.chain_id);
    }
    if (chains.empty()) return;
    Settings settings = Settings::load();
    ClientOptions options;
    options.tls_verify = tls_verify;
    int timeout_s = registry::lazy_timeout_seconds();
    for (const auto& chain : chains) {
        try {
            registry::complete_lazy_layer(ctx.store(), chain, settings, options, timeout_s, true,
                                          [](const std::string&) {});
        } catch (const std::runtime_error& e) {
            throw store::StoreError("cannot complete lazy layer " + chain + ": " + e.what());
        }
        std::cerr << "Completed lazy layer " << short_id(chain) << "\n";
    }
}

namespace {

std::string read_password_from_terminal();

// --creds USER[:PASSWORD], skopeo's and podman's spelling; the password is asked for on a
// terminal when it is left out.
std::optional<registry::Credentials> creds_option(const Args& a) {
    if (!a.values.count("creds")) return std::nullopt;
    registry::Credentials c = registry::parse_creds_option(a.value("creds"));
    if (c.username.empty()) throw UsageError("--creds must be USER[:PASSWORD]");
    if (a.value("creds").find(':') == std::string::npos) {
        if (!isatty(STDIN_FILENO))
            throw UsageError("--creds " + c.username + ": give USER:PASSWORD");
        c.password = read_password_from_terminal();
    }
    return c;
}

// "https://host:5000/" or "host:5000" -> "host:5000"; Docker Hub's names -> docker.io.
std::string registry_operand(std::string text) {
    if (auto p = text.find("://"); p != std::string::npos) text = text.substr(p + 3);
    if (auto p = text.find('/'); p != std::string::npos) text.resize(p);
    if (text.empty()) throw UsageError("usage: lamina login [OPTIONS] REGISTRY");
    return registry::canonical_registry(text);
}

int cmd_pull(Context& ctx, const Args& a) {
    need_operands(a, 1, 1);
    registry::ImageLocation from;
    try {
        from = registry::parse_image_location(a.operands[0]);
    } catch (const std::invalid_argument& e) {
        throw UsageError(e.what());
    }
    if (from.archive()) {
        // podman's way: a pull from an archive or layout is a load.
        report_loaded(ctx.store().load(archive_to_load(a.operands[0])));
        return 0;
    }
    const std::string& name = from.text;
    reference_operand(name);  // a malformed name is a usage error before any file
    Settings settings = Settings::load();
    std::vector<Reference> candidates;
    try {
        candidates = settings.resolve(name);
    } catch (const std::invalid_argument& e) {
        throw UsageError(e.what());
    }
    registry::PullOptions o;
    if (a.values.count("platform")) {
        try {
            o.platform = store::parse_platform(a.value("platform"));
            o.platform_given = true;
        } catch (const std::invalid_argument& e) {
            throw UsageError(e.what());
        }
    }
    if (a.values.count("max-concurrent-downloads")) {
        std::string v = a.value("max-concurrent-downloads");
        size_t used = 0;
        int n = 0;
        try {
            n = std::stoi(v, &used);
        } catch (const std::exception&) {
        }
        if (used != v.size() || n < 1 || n > 64)
            throw UsageError("--max-concurrent-downloads must be a number from 1 to 64");
        o.max_concurrent_downloads = n;
    }
    o.client.tls_verify = tls_verify_option(a);
    o.client.credentials = creds_option(a);
    o.quiet = a.has("quiet");
    o.live_progress = isatty(STDOUT_FILENO);
    if (a.has("lazy") && a.has("no-lazy"))
        throw UsageError("--lazy and --no-lazy exclude each other");
    // config.json's "lazy" makes lazy the default; --no-lazy pulls whole whatever it says.
    o.lazy = a.has("lazy") || (settings.lazy && !a.has("no-lazy"));
    if (a.has("background") && !o.lazy) throw UsageError("--background goes with --lazy");
    std::string id = registry::pull_image(ctx.store(), settings, candidates, o, std::cout);
    if (a.has("background")) start_lazy_completer(ctx.store(), id, o.client.tls_verify);
    return 0;
}

int cmd_push(Context& ctx, const Args& a) {
    need_operands(a, 1, 2);
    std::string local = a.operands[0];
    std::string target = a.operands.size() == 2 ? a.operands[1] : local;
    registry::PushOptions o;
    if (a.values.count("compression-format")) {
        o.convert_to = store::estargz::format_named(a.value("compression-format"));
        if (!o.convert_to) throw UsageError("--compression-format must be estargz or zstd:chunked");
    }
    if (a.values.count("prefetch-list")) {
        if (!o.convert_to)
            throw UsageError(
                "--prefetch-list goes with --compression-format estargz or zstd:chunked");
        o.prefetch = store::estargz::read_prefetch_list(a.value("prefetch-list"));
    }
    // Lazy layers have no blob to send until they are complete.
    complete_lazy_layers(ctx, {local}, tls_verify_option(a));
    if (auto archive = archive_to_save(target)) {
        // podman's way: push to an archive is a save.
        ctx.store().save({local}, archive->first, archive->second);
        return 0;
    }
    if (target.starts_with("docker://")) target = registry::parse_image_location(target).text;
    Reference dest = reference_operand(target);
    o.client.tls_verify = tls_verify_option(a);
    o.client.credentials = creds_option(a);
    o.quiet = a.has("quiet");
    o.live_progress = isatty(STDOUT_FILENO);
    std::string digest =
        registry::push_image(ctx.store(), Settings::load(), local, dest, o, std::cout);
    // A converted push sends another image (new diff IDs, config and manifest): its digest is
    // not one of the stored image's.
    if (!o.convert_to)
        ctx.store().record_repo_digest(ctx.store().image(local).id,
                                       dest.registry + "/" + dest.repository, digest);
    return 0;
}

std::string read_password_from_terminal() {
    std::cerr << "Password: " << std::flush;
    termios old{};
    bool tty = tcgetattr(STDIN_FILENO, &old) == 0;
    if (tty) {
        termios quiet = old;
        quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
        tcsetattr(STDIN_FILENO, TCSANOW, &quiet);
    }
    std::string pw;
    std::getline(std::cin, pw);
    if (tty) tcsetattr(STDIN_FILENO, TCSANOW, &old);
    std::cerr << "\n";
    return pw;
}

int cmd_login(Context&, const Args& a) {
    need_operands(a, 1, 1);
    std::string host = registry_operand(a.operands[0]);
    registry::Credentials c;
    c.username = a.value("username");
    if (c.username.empty()) {
        if (!isatty(STDIN_FILENO)) throw UsageError("login: give the user name with -u");
        std::cerr << "Username: " << std::flush;
        std::getline(std::cin, c.username);
    }
    if (a.has("password-stdin")) {
        if (a.values.count("password"))
            throw UsageError("login: --password and --password-stdin are mutually exclusive");
        c.password.assign(std::istreambuf_iterator<char>(std::cin), {});
        while (!c.password.empty() && (c.password.back() == '\n' || c.password.back() == '\r'))
            c.password.pop_back();
    } else if (a.values.count("password")) {
        std::cerr << "WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n";
        c.password = a.value("password");
    } else {
        if (!isatty(STDIN_FILENO))
            throw UsageError("login: give the password with -p or --password-stdin");
        c.password = read_password_from_terminal();
    }
    if (c.username.empty() || c.password.empty())
        throw UsageError("login: the user name and password must not be empty");
    Settings settings = Settings::load();
    ClientOptions o;
    o.tls_verify = tls_verify_option(a);
    o.credentials = c;
    registry::Client client(settings, settings.push_endpoint(Reference{host, "", "", ""}), o);
    try {
        client.ping();
        client.check_credentials();
    } catch (const registry::TransportError& e) {
        throw registry::RegistryError("cannot log in to " + host + ": " + e.what());
    }
    registry::save_credentials(registry::login_auth_file(settings.auth_file()), host, c);
    std::cout << "Login Succeeded\n";
    return 0;
}

int cmd_logout(Context&, const Args& a) {
    need_operands(a, 1, 1);
    std::string host = registry_operand(a.operands[0]);
    Settings settings = Settings::load();
    // As docker: logging out of a registry one is not logged in to is no failure.
    if (!registry::remove_credentials(registry::login_auth_file(settings.auth_file()), host)) {
        std::cout << "Not logged in to " << host << "\n";
        return 0;
    }
    std::cout << "Removed login credentials for " << host << "\n";
    return 0;
}

}  // namespace

void add_registry_commands(CommandTable& commands) {
    commands["pull"] = cmd_pull;
    commands["push"] = cmd_push;
    commands["login"] = cmd_login;
    commands["logout"] = cmd_logout;
}

}  // namespace lamina::cli
