// What a pull or push shows while it works: one live line per layer on a terminal (redrawn in
// place), plain status lines otherwise.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <ostream>
#include <string>
#include <vector>

namespace lamina::registry {

class Progress {
public:
    Progress(std::ostream& out, bool live);

    // A new line for id (a short digest) with its first status.
    void add(const std::string& id, const std::string& status);
    // A new status for id ("Download complete", "Already exists"); printed in both modes.
    void status(const std::string& id, const std::string& status);
    // Bytes so far; drawn as a bar on a terminal (at most ten times a second), not printed
    // otherwise.
    void bytes(const std::string& id, const std::string& verb, int64_t done, int64_t total);
    // A line that is not about one layer (a retry, a warning).
    void note(const std::string& id, const std::string& text);

private:
    struct Line {
        std::string id;
        std::string text;
    };
    Line* find(const std::string& id);
    void redraw();

    std::ostream& out_;
    bool live_;
    std::mutex mu_;
    std::vector<Line> lines_;
    size_t drawn_ = 0;  // lines currently on screen below the cursor's start
    std::chrono::steady_clock::time_point last_draw_{};
};

// 1000-based, as Docker prints sizes: "5.24MB", "912kB", "17B".
std::string format_bytes(int64_t n);

}  // namespace lamina::registry
