// The store's name for the shared file-descriptor owner.
#pragma once

#include "unique_fd.h"

namespace lamina::store {

using Fd = lamina::UniqueFd;

}  // namespace lamina::store
