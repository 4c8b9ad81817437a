#pragma once
// The HTML report of `vmmu run --report`: one self-contained page (inline CSS and SVG, no
// scripts, fonts or network) with the side-by-side table, metadata and faults/exits over time
// per mode, and the walk-reference histogram (docs/RUN.md describes each chart).
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "sim/report/timeline.hpp"

namespace vmmu::sim::report {

struct ReportTable {
  std::vector<std::string> columns;                                      // the modes
  std::vector<std::pair<std::string, std::vector<std::string>>> rows;   // label, one cell per column
};

// How many walks read 0, 1, 2, ... table entries (the last bucket may be "N or more").
struct WalkHistogram {
  std::string mode;
  std::vector<double> counts;
};

struct RunReport {
  std::string workload;  // what was replayed, one sentence
  std::string verdict;   // whether every mode gave the same results
  ReportTable table;
  std::vector<Timeline> timelines;  // one per mode, in table order
  std::vector<WalkHistogram> histograms;
  std::vector<std::string> histogram_buckets;  // the x labels: "0", "1", ..., "24+"
  std::string histogram_x_label = "table entries read by one walk";
  std::string histogram_note;  // shown under the chart (where the figures come from, or why none)
};

// The page. Its charts' ids: chart-metadata-total, chart-metadata-MODE, chart-events-MODE and
// chart-walk-refs (MODE in lower case; a mode listed twice gets -N after it).
std::string html_report(const RunReport& report);

}  // namespace vmmu::sim::report
