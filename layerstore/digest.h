// SHA-256 digests in the "sha256:HEX" form OCI uses, and the chain IDs built from them.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>

namespace lamina::store {

// A streaming SHA-256; digest() may be called once.
class Sha256 {
public:
    Sha256();
    ~Sha256();
    Sha256(const Sha256&) = delete;
    Sha256& operator=(const Sha256&) = delete;
    void update(const void* data, size_t len);
    std::string hex();     // 64 lowercase hex digits
    std::string digest();  // "sha256:" + hex()

private:
    struct Ctx;
    std::unique_ptr<Ctx> ctx_;
};

std::string sha256_digest(std::string_view data);
// "sha256:..." of a file's content (no symlink followed); throws StoreError.
std::string file_sha256(const std::string& path);

// True for "sha256:" followed by exactly 64 lowercase hex digits.
bool is_sha256_digest(std::string_view digest);
// The 64 hex digits of a valid digest (throws StoreError otherwise).
std::string digest_hex(std::string_view digest);

// The OCI chain ID of a layer: its diffID for the bottom layer, otherwise
// sha256(parent_chain + " " + diff_id).
std::string chain_id(std::string_view parent_chain, std::string_view diff_id);

}  // namespace lamina::store
