// SHA-256 through OpenSSL's EVP interface, and chain IDs.
#include "digest.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include "error.h"
#include "fd.h"

namespace lamina::store {

struct Sha256::Ctx {
    EVP_MD_CTX* md = nullptr;
    ~Ctx() { EVP_MD_CTX_free(md); }
};

Sha256::Sha256() : ctx_(std::make_unique<Ctx>()) {
    ctx_->md = EVP_MD_CTX_new();
    if (!ctx_->md || EVP_DigestInit_ex(ctx_->md, EVP_sha256(), nullptr) != 1)
        throw StoreError("sha256: cannot initialise OpenSSL digest");
}

Sha256::~Sha256() = default;

void Sha256::update(const void* data, size_t len) {
    if (len) EVP_DigestUpdate(ctx_->md, data, len);
}

std::string Sha256::hex() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx_->md, out, &n);
    static const char* digits = "0123456789abcdef";
    std::string s;
    s.reserve(n * 2);
    for (unsigned i = 0; i < n; ++i) {
        s.push_back(digits[out[i] >> 4]);
        s.push_back(digits[out[i] & 15]);
    }
    return s;
}

std::string Sha256::digest() {
    return "sha256:" + hex();
}

std::string sha256_digest(std::string_view data) {
    Sha256 h;
    h.update(data.data(), data.size());
    return h.digest();
}

std::string file_sha256(const std::string& path) {
    Fd f(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!f) throw_errno("cannot open", path, errno);
    Sha256 h;
    char buf[1 << 16];
    for (;;) {
        ssize_t n = ::read(f.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw_errno("cannot read", path, errno);
        if (n == 0) break;
        h.update(buf, static_cast<size_t>(n));
    }
    return h.digest();
}

bool is_sha256_digest(std::string_view d) {
    if (!d.starts_with("sha256:") || d.size() != 7 + 64) return false;
    for (char c : d.substr(7)) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

std::string digest_hex(std::string_view d) {
    if (!is_sha256_digest(d)) throw StoreError("invalid digest \"" + std::string(d) + "\"");
    return std::string(d.substr(7));
}

std::string chain_id(std::string_view parent_chain, std::string_view diff_id) {
    if (parent_chain.empty()) return std::string(diff_id);
    std::string s(parent_chain);
    s += ' ';
    s += diff_id;
    return sha256_digest(s);
}

}  // namespace lamina::store
