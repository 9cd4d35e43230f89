// `lamina convert`: a stored image rewritten with eStargz or zstd:chunked layers, stored anew.
#pragma once

#include <string>

#include "estargz.h"
#include "store.h"

namespace lamina::store {

// Converts image ref (its layers' blobs must be in the store: complete lazy layers first) to
// options.format as push --compression-format does, and stores the result as new_ref: new
// blobs, new diff IDs and config, the OCI manifest with each layer's TOC annotations, so that a plain push
// of new_ref sends it as it is. Refused with one line, nothing stored, when new_ref names an
// image already or ref none. The warnings of the prefetch list come back in the result.
LoadedImage convert_stored_image(Store& store, const std::string& ref, const std::string& new_ref,
                                 const estargz::WriteOptions& options);

}  // namespace lamina::store
