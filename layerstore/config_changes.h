// `commit --change` and `import --change`: Dockerfile instructions that set fields of an image's
// config (ENV, CMD, ENTRYPOINT, WORKDIR, USER, EXPOSE, LABEL, VOLUME), as docker applies them.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace lamina::store {

// Applies each instruction, in order, to the "config" object of image_config (made when
// missing). Throws std::invalid_argument naming the first line it cannot take; image_config is
// then unchanged.
void apply_config_changes(nlohmann::json& image_config, const std::vector<std::string>& changes);

// Sets KEY=VALUE in an Env list, replacing the entry of the same KEY.
void set_env(nlohmann::json& env, const std::string& key_value);

}  // namespace lamina::store
