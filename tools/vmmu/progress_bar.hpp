#pragma once
// A one-line progress bar on a terminal: it appears only once the work has lasted a second,
// redraws at most ten times a second, and erases itself when done. Disabled (not a terminal),
// it prints nothing at all, so piped or redirected output stays clean.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace vmmu::tools {

class ProgressBar {
 public:
  // `out` is normally stderr; `enabled` normally isatty(fileno(out)).
  ProgressBar(std::FILE* out, bool enabled);
  ~ProgressBar();
  ProgressBar(const ProgressBar&) = delete;
  ProgressBar& operator=(const ProgressBar&) = delete;

  // `done` of `total` units of `label` (total 0: unknown). Cheap but reads the clock: call it
  // every few thousand units of work, not for each.
  void update(const std::string& label, uint64_t done, uint64_t total);
  // Erases the bar if it was drawn (the timer keeps running: the bar shows total elapsed time).
  void clear();

  // The bar's text for a width of `columns` characters (public for tests).
  static std::string render(const std::string& label, uint64_t done, uint64_t total, double seconds, unsigned columns);

 private:
  using Clock = std::chrono::steady_clock;
  std::FILE* out_;
  bool enabled_;
  bool drawn_ = false;
  Clock::time_point start_;
  Clock::time_point last_draw_{};
};

}  // namespace vmmu::tools
