// Where the store lives: --root, then the config file's "root", then the per-user default.
#pragma once

#include <string>

namespace lamina::store {

// The config file consulted: /etc/lamina/config.json as root, $XDG_CONFIG_HOME/lamina/config.json
// (default ~/.config) otherwise.
std::string config_file_path();
// explicit_root when non-empty; else the config file's "root"; else /var/lib/lamina as root and
// $XDG_DATA_HOME/lamina (default ~/.local/share/lamina) otherwise.
std::string resolve_store_root(const std::string& explicit_root);

}  // namespace lamina::store
