// How lamina shows things to people: aligned tables, sizes and ages in Docker's style.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lamina::cli {

// Columns separated by at least three spaces, headers first, as `docker images` prints.
class Table {
public:
    explicit Table(std::vector<std::string> headers) : rows_{std::move(headers)} {}
    void add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
    std::string render() const;

private:
    std::vector<std::vector<std::string>> rows_;
};

// 1000-based with three significant digits: "5.58MB", "912kB", "0B".
std::string human_size(int64_t bytes);
// "3 minutes ago", "2 days ago", "About an hour ago".
std::string human_age(int64_t then, int64_t now);
// "2024-01-02 03:04:05 +0000 UTC", as docker's CreatedAt.
std::string docker_time(int64_t seconds);
// The first 12 hex digits of an ID, without "sha256:".
std::string short_id(const std::string& id);
// Shortens s to at most n characters with "…" replaced by "...".
std::string truncate(const std::string& s, size_t n);

}  // namespace lamina::cli
