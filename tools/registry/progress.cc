// Live per-layer progress lines (ANSI cursor movement) or plain status lines.
#include "progress.h"

#include <cstdio>

namespace lamina::registry {

std::string format_bytes(int64_t n) {
    const char* units[] = {"B", "kB", "MB", "GB", "TB"};
    double v = static_cast<double>(n);
    int u = 0;
    while (v >= 1000 && u < 4) {
        v /= 1000;
        ++u;
    }
    char buf[32];
    if (u == 0)
        std::snprintf(buf, sizeof buf, "%lldB", static_cast<long long>(n));
    else
        std::snprintf(buf, sizeof buf, "%.3g%s", v, units[u]);
    return buf;
}

Progress::Progress(std::ostream& out, bool live) : out_(out), live_(live) {}

Progress::Line* Progress::find(const std::string& id) {
    for (auto& l : lines_)
        if (l.id == id) return &l;
    return nullptr;
}

void Progress::redraw() {
    if (drawn_ > 0) out_ << "\033[" << drawn_ << "A";
    for (const auto& l : lines_) out_ << "\r\033[K" << l.id << ": " << l.text << "\n";
    drawn_ = lines_.size();
    out_.flush();
    last_draw_ = std::chrono::steady_clock::now();
}

void Progress::add(const std::string& id, const std::string& text) {
    std::lock_guard lk(mu_);
    lines_.push_back({id, text});
    if (live_) {
        redraw();
    } else {
        out_ << id << ": " << text << "\n";
        out_.flush();
    }
}

void Progress::status(const std::string& id, const std::string& text) {
    std::lock_guard lk(mu_);
    Line* l = find(id);
    if (!l) {
        lines_.push_back({id, text});
        l = &lines_.back();
    }
    l->text = text;
    if (live_) {
        redraw();
    } else {
        out_ << id << ": " << text << "\n";
        out_.flush();
    }
}

void Progress::bytes(const std::string& id, const std::string& verb, int64_t done, int64_t total) {
    if (!live_) return;
    std::lock_guard lk(mu_);
    Line* l = find(id);
    if (!l) return;
    constexpr int kWidth = 40;
    int filled = total > 0 ? static_cast<int>(kWidth * done / total) : 0;
    std::string bar(static_cast<size_t>(filled), '=');
    if (filled < kWidth) bar += '>';
    bar.resize(kWidth, ' ');
    l->text = verb + " [" + bar + "] " + format_bytes(done) + "/" + format_bytes(total);
    auto now = std::chrono::steady_clock::now();
    if (done == total || now - last_draw_ > std::chrono::milliseconds(100)) redraw();
}

void Progress::note(const std::string& id, const std::string& text) {
    std::lock_guard lk(mu_);
    if (live_) {
        // Notes go above the live block, which is drawn again below them.
        if (drawn_ > 0) out_ << "\033[" << drawn_ << "A\r\033[J";
        out_ << id << ": " << text << "\n";
        drawn_ = 0;
        redraw();
    } else {
        out_ << id << ": " << text << "\n";
        out_.flush();
    }
}

}  // namespace lamina::registry
