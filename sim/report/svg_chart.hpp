#pragma once
// Charts as inline SVG text, for self-contained HTML reports: no scripts, fonts or network.
// Each chart is `<svg class="chart" id="ID">` with a title, labelled axes with units, grid
// lines and a legend; lines are `<path class="series">`, bars `<rect class="bar">`.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace vmmu::sim::report {

// How axis values are written: plain counts (1.5k, 2M) or bytes (KiB, MiB).
enum class Unit { Count, Bytes };

struct LineSeries {
  std::string name;
  std::vector<double> x, y;  // the same length
  bool dashed = false;
  std::string colour;  // empty: the next colour of the palette
};

struct LineChart {
  std::string id, title, x_label, y_label;
  Unit x_unit = Unit::Count, y_unit = Unit::Count;
  std::vector<LineSeries> series;
  std::string empty_note = "no data";  // written across the plot when there is nothing to draw
};

// One bar per category for each group (a group is one colour in the legend).
struct BarGroup {
  std::string name;
  std::vector<double> values;  // one per category
};

struct BarChart {
  std::string id, title, x_label, y_label;
  std::vector<std::string> categories;
  std::vector<BarGroup> groups;
  bool log_scale = false;  // y on a log10 scale (bars of very different heights)
  std::string empty_note = "no data";
};

std::string svg_line_chart(const LineChart& chart);
std::string svg_bar_chart(const BarChart& chart);

// Text and attribute values made safe for XML/HTML.
std::string escape_xml(std::string_view text);
// 1234 -> "1.23k", 5 << 20 -> "5 MiB": the tick labels.
std::string format_value(double v, Unit unit);

}  // namespace vmmu::sim::report
