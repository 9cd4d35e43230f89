// Image references as Docker reads them: registry host, repository path, tag and digest.
#pragma once

#include <string>

#include "reference_grammar.h"

namespace lamina::registry {

using store::kDockerHub;

struct Reference {
    std::string registry;    // "docker.io", "127.0.0.1:5000", "quay.io"
    std::string repository;  // "library/busybox", "test/app"
    std::string tag;         // "latest" when neither tag nor digest is given
    std::string digest;      // "sha256:..." or ""

    // What the manifest request names: the digest when there is one, else the tag.
    std::string manifest_ref() const { return digest.empty() ? tag : digest; }
    // registry/repository[:tag][@digest], fully spelt.
    std::string str() const;
    // The name the store keeps: Docker's familiar form ("busybox:latest", "test/app:v1",
    // "127.0.0.1:5000/test/app:v1"); "" when only a digest was given.
    std::string store_name() const;
};

// Parses "busybox", "user/app:tag", "host:port/path@sha256:..." (throws std::invalid_argument
// with a one-line reason).
Reference parse_reference(const std::string& text);

// True when text names no registry ("busybox", "user/app:1"): its first path component has no
// "." or ":" and is not "localhost". Such names are resolved by Settings::resolve.
bool is_short_name(const std::string& text);

// An image location as skopeo and podman users write it: "docker://REF" (a registry),
// "docker-archive:PATH", "oci-archive:PATH", "oci:DIR" (archives and layouts), or a bare
// reference, which is a registry's.
struct ImageLocation {
    enum class Kind { kRegistry, kDockerArchive, kOciArchive, kOciLayout } kind = Kind::kRegistry;
    std::string text;  // the reference (kRegistry) or the path
    std::string ref;   // what followed PATH after a colon ("" for none)
    bool archive() const { return kind != Kind::kRegistry; }
};
// Splits the transport off; the reference itself is not checked here.
ImageLocation parse_image_location(const std::string& text);

// The registry whose credentials serve host: "index.docker.io" and "registry-1.docker.io" (where
// docker.io's requests go) are docker.io; other hosts are returned as given. References do not
// use it: as in Docker, "registry-1.docker.io/x" names that host, not docker.io.
std::string canonical_registry(const std::string& host);

}  // namespace lamina::registry
