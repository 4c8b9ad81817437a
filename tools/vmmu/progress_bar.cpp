#include "tools/vmmu/progress_bar.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace vmmu::tools {

namespace {

constexpr double SHOW_AFTER_SECONDS = 1.0;
constexpr double REDRAW_SECONDS = 0.1;
constexpr unsigned COLUMNS = 78;  // fits an 80-column terminal; no ioctl needed

}  // namespace

ProgressBar::ProgressBar(std::FILE* out, bool enabled) : out_(out), enabled_(enabled && out), start_(Clock::now()) {}

ProgressBar::~ProgressBar() { clear(); }

std::string ProgressBar::render(const std::string& label, uint64_t done, uint64_t total, double seconds, unsigned columns) {
  const std::string elapsed = fmt::format("{:.1f} s", seconds);
  if (!total) return fmt::format("{}: {} {}", label, done, elapsed).substr(0, columns);
  done = std::min(done, total);
  const double fraction = double(done) / double(total);
  const std::string tail = fmt::format(" {}/{} {:3.0f}% {}", done, total, fraction * 100, elapsed);
  const std::string head = label + " [";
  const size_t room = columns > head.size() + tail.size() + 1 ? columns - head.size() - tail.size() - 1 : 0;
  const size_t filled = static_cast<size_t>(fraction * double(room));
  return (head + std::string(filled, '#') + std::string(room - filled, '.') + "]" + tail).substr(0, columns);
}

void ProgressBar::update(const std::string& label, uint64_t done, uint64_t total) {
  if (!enabled_) return;
  const Clock::time_point now = Clock::now();
  const double seconds = std::chrono::duration<double>(now - start_).count();
  if (seconds < SHOW_AFTER_SECONDS || std::chrono::duration<double>(now - last_draw_).count() < REDRAW_SECONDS) return;
  last_draw_ = now;
  // \r and erase-to-end-of-line: the bar overwrites itself in place.
  std::fprintf(out_, "\r%s\x1b[K", render(label, done, total, seconds, COLUMNS).c_str());
  std::fflush(out_);
  drawn_ = true;
}

void ProgressBar::clear() {
  if (!drawn_) return;
  std::fprintf(out_, "\r\x1b[K");
  std::fflush(out_);
  drawn_ = false;
}

}  // namespace vmmu::tools
