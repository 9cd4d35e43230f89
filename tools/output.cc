// Tables, sizes and ages for lamina's human output.
#include "output.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "store.h"

namespace lamina::cli {

std::string Table::render() const {
    std::vector<size_t> width;
    for (const auto& r : rows_)
        for (size_t i = 0; i < r.size(); ++i) {
            if (width.size() <= i) width.push_back(0);
            width[i] = std::max(width[i], r[i].size());
        }
    std::string out;
    for (const auto& r : rows_) {
        std::string line;
        for (size_t i = 0; i < r.size(); ++i) {
            line += r[i];
            if (i + 1 < r.size()) line += std::string(width[i] - r[i].size() + 3, ' ');
        }
        while (!line.empty() && line.back() == ' ') line.pop_back();
        out += line + "\n";
    }
    return out;
}

std::string human_size(int64_t bytes) {
    static const char* units[] = {"B", "kB", "MB", "GB", "TB", "PB"};
    double v = static_cast<double>(bytes);
    int u = 0;
    while (v >= 1000 && u < 5) {
        v /= 1000;
        ++u;
    }
    char buf[32];
    if (u == 0) {
        snprintf(buf, sizeof buf, "%lldB", static_cast<long long>(bytes));
    } else {
        snprintf(buf, sizeof buf, "%.3g%s", v, units[u]);
    }
    return buf;
}

std::string human_age(int64_t then, int64_t now) {
    if (then <= 0) return "N/A";
    int64_t s = std::max<int64_t>(0, now - then);
    auto plural = [](int64_t n, const char* unit) {
        return std::to_string(n) + " " + unit + (n == 1 ? "" : "s") + " ago";
    };
    if (s < 1) return "Less than a second ago";
    if (s < 60) return plural(s, "second");
    if (s < 3600) return s / 60 == 1 ? "About a minute ago" : plural(s / 60, "minute");
    if (s < 86400) return s / 3600 == 1 ? "About an hour ago" : plural(s / 3600, "hour");
    if (s < 86400 * 14) return plural(s / 86400, "day");
    if (s < 86400 * 60) return plural(s / (86400 * 7), "week");
    if (s < 86400 * 365 * 2) return plural(s / (86400 * 30), "month");
    return plural(s / (86400 * 365), "year");
}

std::string docker_time(int64_t seconds) {
    if (seconds <= 0) return "N/A";
    std::string t = store::format_rfc3339(seconds);  // 2024-01-02T03:04:05Z
    t[10] = ' ';
    t.pop_back();
    return t + " +0000 UTC";
}

std::string short_id(const std::string& id) {
    std::string hex = id.starts_with("sha256:") ? id.substr(7) : id;
    return hex.substr(0, 12);
}

std::string truncate(const std::string& s, size_t n) {
    if (s.size() <= n) return s;
    return s.substr(0, n - 3) + "...";
}

}  // namespace lamina::cli
