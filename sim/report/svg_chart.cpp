#include "sim/report/svg_chart.hpp"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace vmmu::sim::report {

namespace {

// Geometry of every chart: the plot area, with room for tick labels on the left, the title
// above, the axis label below and the legend on the right.
constexpr double WIDTH = 800, HEIGHT = 340;
constexpr double PLOT_LEFT = 78, PLOT_RIGHT = 570, PLOT_TOP = 40, PLOT_BOTTOM = 282;
constexpr double LEGEND_X = 584, LEGEND_Y = 48, LEGEND_STEP = 17;

// Colour-blind-safe first (Okabe and Ito), then darker extras; all readable on white.
constexpr const char* PALETTE[] = {"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
                                   "#2F4F4F", "#8C564B", "#7F3C8D", "#999999", "#B8860B", "#1F78B4"};
constexpr size_t PALETTE_SIZE = sizeof PALETTE / sizeof PALETTE[0];

const char* colour(size_t i) { return PALETTE[i % PALETTE_SIZE]; }
// Past the palette, series are told apart by a dash pattern as well.
bool dashed_by_index(size_t i) { return i >= PALETTE_SIZE; }

struct LegendEntry {
  std::string name, colour;
  bool dashed;
};

// Ticks from 0 to at least `max` in steps of 1, 2 or 5 times a power of ten (of 1024 for bytes,
// so that ticks fall on whole KiB or MiB).
std::vector<double> linear_ticks(double max, Unit unit) {
  if (!(max > 0)) max = 1;
  double scale = 1;
  if (unit == Unit::Bytes)
    while (max / scale >= 1024) scale *= 1024;
  const double raw = max / scale / 5;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  double step = power;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * power;
    if (step >= raw) break;
  }
  if (scale == 1) step = std::max(step, 1.0);  // counts and bytes are whole numbers
  step *= scale;
  std::vector<double> ticks;
  for (double t = 0; ticks.size() < 12; t += step) {
    ticks.push_back(t);
    if (t >= max) break;
  }
  return ticks;
}

class Svg {
 public:
  Svg(const std::string& id, const std::string& title) {
    text_ = fmt::format(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" id=\"{0}\" viewBox=\"0 0 {1} {2}\" width=\"{1}\" height=\"{2}\" "
        "role=\"img\" aria-labelledby=\"{0}-title\" font-family=\"sans-serif\" font-size=\"12\">\n"
        "<title id=\"{0}-title\">{3}</title>\n<rect class=\"background\" x=\"0\" y=\"0\" width=\"{1}\" height=\"{2}\" fill=\"#ffffff\"/>\n"
        "<text class=\"chart-title\" x=\"{4}\" y=\"24\" font-size=\"15\" font-weight=\"bold\" fill=\"#111\">{3}</text>\n",
        escape_xml(id), WIDTH, HEIGHT, escape_xml(title), PLOT_LEFT);
  }
  void add(const std::string& s) { text_ += s; }
  std::string finish() { return text_ + "</svg>\n"; }

  void axis_labels(const std::string& x_label, const std::string& y_label) {
    add(fmt::format("<text class=\"axis-label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#222\">{}</text>\n",
                    (PLOT_LEFT + PLOT_RIGHT) / 2, HEIGHT - 12, escape_xml(x_label)));
    add(fmt::format("<text class=\"axis-label\" x=\"0\" y=\"0\" transform=\"translate(16 {}) rotate(-90)\" text-anchor=\"middle\" "
                    "fill=\"#222\">{}</text>\n",
                    (PLOT_TOP + PLOT_BOTTOM) / 2, escape_xml(y_label)));
  }
  void y_tick(double y, const std::string& label) {
    add(fmt::format("<line class=\"grid\" x1=\"{0}\" y1=\"{2:.1f}\" x2=\"{1}\" y2=\"{2:.1f}\" stroke=\"#e4e4e4\"/>"
                    "<text x=\"{3}\" y=\"{4:.1f}\" text-anchor=\"end\" fill=\"#333\">{5}</text>\n",
                    PLOT_LEFT, PLOT_RIGHT, y, PLOT_LEFT - 6, y + 4, escape_xml(label)));
  }
  void x_tick(double x, const std::string& label) {
    add(fmt::format("<line class=\"tick\" x1=\"{0:.1f}\" y1=\"{1}\" x2=\"{0:.1f}\" y2=\"{2}\" stroke=\"#333\"/>"
                    "<text x=\"{0:.1f}\" y=\"{3}\" text-anchor=\"middle\" fill=\"#333\">{4}</text>\n",
                    x, PLOT_BOTTOM, PLOT_BOTTOM + 5, PLOT_BOTTOM + 18, escape_xml(label)));
  }
  void frame() {
    add(fmt::format("<path class=\"axes\" d=\"M{0} {1} V{2} H{3}\" fill=\"none\" stroke=\"#333\"/>\n", PLOT_LEFT, PLOT_TOP, PLOT_BOTTOM,
                    PLOT_RIGHT));
  }
  void legend(const std::vector<LegendEntry>& entries, bool as_lines) {
    add("<g class=\"legend\">\n");
    for (size_t i = 0; i < entries.size(); ++i) {
      const double y = LEGEND_Y + double(i) * LEGEND_STEP;
      if (as_lines)
        add(fmt::format("<line x1=\"{}\" y1=\"{:.1f}\" x2=\"{}\" y2=\"{:.1f}\" stroke=\"{}\" stroke-width=\"3\"{}/>", LEGEND_X, y - 4,
                        LEGEND_X + 20, y - 4, entries[i].colour, entries[i].dashed ? " stroke-dasharray=\"5 3\"" : ""));
      else
        add(fmt::format("<rect x=\"{}\" y=\"{:.1f}\" width=\"14\" height=\"10\" fill=\"{}\"/>", LEGEND_X + 3, y - 9, entries[i].colour));
      add(fmt::format("<text x=\"{}\" y=\"{:.1f}\" fill=\"#222\">{}</text>\n", LEGEND_X + 26, y, escape_xml(entries[i].name)));
    }
    add("</g>\n");
  }
  void empty_note(const std::string& note) {
    add(fmt::format("<text class=\"empty-note\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#666\" font-size=\"14\">{}</text>\n",
                    (PLOT_LEFT + PLOT_RIGHT) / 2, (PLOT_TOP + PLOT_BOTTOM) / 2, escape_xml(note)));
  }

 private:
  std::string text_;
};

double plot_y(double v, double max) { return PLOT_BOTTOM - (max > 0 ? v / max : 0) * (PLOT_BOTTOM - PLOT_TOP); }

}  // namespace

std::string escape_xml(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string format_value(double v, Unit unit) {
  const double a = std::fabs(v);
  if (unit == Unit::Bytes) {
    if (a < 1024) return fmt::format("{:.4g} B", v);
    if (a < 1024.0 * 1024) return fmt::format("{:.4g} KiB", v / 1024);
    if (a < 1024.0 * 1024 * 1024) return fmt::format("{:.4g} MiB", v / (1024.0 * 1024));
    return fmt::format("{:.4g} GiB", v / (1024.0 * 1024 * 1024));
  }
  if (a < 1e3) return fmt::format("{:.4g}", v);
  if (a < 1e6) return fmt::format("{:.4g}k", v / 1e3);
  if (a < 1e9) return fmt::format("{:.4g}M", v / 1e6);
  return fmt::format("{:.4g}G", v / 1e9);
}

std::string svg_line_chart(const LineChart& c) {
  Svg svg(c.id, c.title);
  double x_max = 0, y_max = 0;
  size_t points = 0;
  for (const LineSeries& s : c.series) {
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      x_max = std::max(x_max, s.x[i]);
      y_max = std::max(y_max, s.y[i]);
      ++points;
    }
  }
  const std::vector<double> y_ticks = linear_ticks(y_max, c.y_unit);
  const std::vector<double> x_ticks = linear_ticks(x_max, c.x_unit);
  const double y_top = y_ticks.back(), x_right = x_ticks.back();
  for (double t : y_ticks) svg.y_tick(plot_y(t, y_top), format_value(t, c.y_unit));
  auto plot_x = [&](double x) { return PLOT_LEFT + (x_right > 0 ? x / x_right : 0) * (PLOT_RIGHT - PLOT_LEFT); };
  for (double t : x_ticks) svg.x_tick(plot_x(t), format_value(t, c.x_unit));
  svg.frame();
  svg.axis_labels(c.x_label, c.y_label);
  if (!points) svg.empty_note(c.empty_note);
  std::vector<LegendEntry> legend;
  for (size_t k = 0; k < c.series.size(); ++k) {
    const LineSeries& s = c.series[k];
    const std::string stroke = s.colour.empty() ? colour(k) : s.colour;
    const bool dashed = s.dashed || dashed_by_index(k);
    std::string d;
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i)
      d += fmt::format("{}{:.1f} {:.1f}", i ? " L" : "M", plot_x(s.x[i]), plot_y(s.y[i], y_top));
    if (s.x.size() == 1) d += " h1";  // a single sample still shows as a dot
    if (!d.empty())
      svg.add(fmt::format("<path class=\"series\" data-series=\"{0}\" d=\"{1}\" fill=\"none\" stroke=\"{2}\" stroke-width=\"2\" "
                          "stroke-linejoin=\"round\"{3}><title>{0}</title></path>\n",
                          escape_xml(s.name), d, stroke, dashed ? " stroke-dasharray=\"6 4\"" : ""));
    legend.push_back(LegendEntry{s.name, stroke, dashed});
  }
  svg.legend(legend, true);
  return svg.finish();
}

std::string svg_bar_chart(const BarChart& c) {
  Svg svg(c.id, c.title);
  double y_max = 0;
  for (const BarGroup& g : c.groups)
    for (double v : g.values) y_max = std::max(y_max, v);
  // Log scale: heights are log10(v), ticks at powers of ten from 1.
  auto height_of = [&](double v) { return c.log_scale ? (v >= 1 ? std::log10(v) + 1 : 0) : v; };
  std::vector<double> ticks;
  if (c.log_scale) {
    for (double t = 1; ticks.size() < 14; t *= 10) {
      ticks.push_back(t);
      if (t >= y_max) break;
    }
  } else {
    ticks = linear_ticks(y_max, Unit::Count);
  }
  const double top = height_of(ticks.back());
  for (double t : ticks) svg.y_tick(plot_y(height_of(t), top), format_value(t, Unit::Count));
  const size_t n = c.categories.size();
  const double band = n ? (PLOT_RIGHT - PLOT_LEFT) / double(n) : 0;
  const size_t label_every = n > 24 ? (n + 23) / 24 : 1;
  for (size_t i = 0; i < n; i += label_every) svg.x_tick(PLOT_LEFT + band * (double(i) + 0.5), c.categories[i]);
  svg.frame();
  svg.axis_labels(c.x_label, c.y_label);
  size_t bars = 0;
  const double bar_width = c.groups.empty() ? 0 : band * 0.8 / double(c.groups.size());
  for (size_t g = 0; g < c.groups.size(); ++g) {
    for (size_t i = 0; i < std::min(n, c.groups[g].values.size()); ++i) {
      const double v = c.groups[g].values[i];
      if (height_of(v) <= 0) continue;
      const double y = plot_y(height_of(v), top);
      svg.add(fmt::format("<rect class=\"bar\" data-group=\"{0}\" x=\"{1:.1f}\" y=\"{2:.1f}\" width=\"{3:.1f}\" height=\"{4:.1f}\" "
                          "fill=\"{5}\"><title>{0}, {6}: {7}</title></rect>\n",
                          escape_xml(c.groups[g].name), PLOT_LEFT + band * (double(i) + 0.1) + bar_width * double(g), y,
                          std::max(bar_width - 1, 1.0), PLOT_BOTTOM - y, colour(g), escape_xml(c.categories[i]), v));
      ++bars;
    }
  }
  if (!bars) svg.empty_note(c.empty_note);
  std::vector<LegendEntry> legend;
  for (size_t g = 0; g < c.groups.size(); ++g) legend.push_back(LegendEntry{c.groups[g].name, colour(g), false});
  svg.legend(legend, false);
  return svg.finish();
}

}  // namespace vmmu::sim::report
