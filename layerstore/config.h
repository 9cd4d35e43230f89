// Where the store lives and what it keeps free: --root/--reserve, then the config file's "root"
// and "reserve", then the defaults.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace lamina::store {

// The config file consulted: /etc/lamina/config.json as root, $XDG_CONFIG_HOME/lamina/config.json
// (default ~/.config) otherwise.
std::string config_file_path();
// explicit_root when non-empty; else the config file's "root"; else /var/lib/lamina as root and
// $XDG_DATA_HOME/lamina (default ~/.local/share/lamina) otherwise.
std::string resolve_store_root(const std::string& explicit_root);
// The free-space reserve: explicit_value when non-empty, else the config file's "reserve", else
// nullopt (the store's default). A size is bytes or a number with K, M or G (powers of 1024).
std::optional<uint64_t> resolve_free_space_reserve(const std::string& explicit_value);
// "512M" -> 536870912; throws StoreError naming `what` for anything else.
uint64_t parse_byte_size(const std::string& text, const std::string& what);

}  // namespace lamina::store
