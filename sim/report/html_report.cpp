#include "sim/report/html_report.hpp"

#include <algorithm>
#include <cctype>
#include <set>

#include <fmt/format.h>

#include "sim/report/svg_chart.hpp"

namespace vmmu::sim::report {

namespace {

constexpr const char* STYLE = R"(
body { font-family: sans-serif; color: #111; background: #fff; margin: 24px auto; max-width: 1640px; padding: 0 16px; }
h1 { font-size: 24px; margin-bottom: 4px; }
h2 { font-size: 19px; margin-top: 32px; border-bottom: 1px solid #ccc; padding-bottom: 4px; }
p.lead { color: #333; max-width: 1100px; }
p.verdict { font-weight: bold; }
table.summary { border-collapse: collapse; font-size: 14px; }
table.summary th, table.summary td { border: 1px solid #d0d0d0; padding: 3px 10px; }
table.summary td.value { text-align: right; font-variant-numeric: tabular-nums; }
table.summary td.label { text-align: left; white-space: pre; }
table.summary tr:nth-child(even) { background: #f6f6f6; }
div.charts { display: flex; flex-wrap: wrap; gap: 16px; }
figure { margin: 0; flex: 1 1 660px; max-width: 800px; }
figure svg.chart { width: 100%; height: auto; border: 1px solid #ddd; }
figcaption { font-size: 13px; color: #333; margin-top: 4px; }
footer { margin-top: 32px; font-size: 12px; color: #555; }
)";

// An id fragment from a mode name: lower-case letters, digits and dashes.
std::string id_fragment(const std::string& name) {
  std::string s;
  for (char c : name) s += std::isalnum(static_cast<unsigned char>(c)) ? char(std::tolower(static_cast<unsigned char>(c))) : '-';
  return s.empty() ? "mode" : s;
}

// One id fragment per timeline, unique even when a mode is listed twice.
std::vector<std::string> mode_ids(const RunReport& r) {
  std::vector<std::string> ids;
  std::set<std::string> seen;
  for (size_t i = 0; i < r.timelines.size(); ++i) {
    std::string id = id_fragment(r.timelines[i].mode);
    if (!seen.insert(id).second) id += fmt::format("-{}", i + 1);
    seen.insert(id);
    ids.push_back(id);
  }
  return ids;
}

bool all_zero(const NamedSeries& s) {
  return std::all_of(s.values.begin(), s.values.end(), [](double v) { return v == 0; });
}

LineChart line_chart(std::string id, std::string title, std::string y_label, Unit y_unit) {
  LineChart c;
  c.id = std::move(id);
  c.title = std::move(title);
  c.x_label = "ops replayed";
  c.y_label = std::move(y_label);
  c.y_unit = y_unit;
  return c;
}

LineSeries line(const std::string& name, const std::vector<double>& x, const std::vector<double>& y) {
  LineSeries s;
  s.name = name;
  s.x = x;
  s.y = y;
  if (name == "mapping_total") {  // the sum of the mapping categories: black, dashed
    s.dashed = true;
    s.colour = "#000000";
  }
  return s;
}

std::string figure(const std::string& svg, const std::string& caption) {
  return fmt::format("<figure>\n{}<figcaption>{}</figcaption>\n</figure>\n", svg, escape_xml(caption));
}

std::string table_html(const ReportTable& t) {
  std::string s = "<table class=\"summary\" id=\"summary-table\">\n<thead><tr><th></th>";
  for (const std::string& c : t.columns) s += fmt::format("<th>{}</th>", escape_xml(c));
  s += "</tr></thead>\n<tbody>\n";
  for (const auto& [label, cells] : t.rows) {
    s += fmt::format("<tr><td class=\"label\">{}</td>", escape_xml(label));
    for (const std::string& c : cells) s += fmt::format("<td class=\"value\">{}</td>", escape_xml(c));
    s += "</tr>\n";
  }
  return s + "</tbody>\n</table>\n";
}

}  // namespace

std::string html_report(const RunReport& r) {
  const std::vector<std::string> ids = mode_ids(r);
  std::string page = fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>vmmu run report</title>\n"
      "<style>{}</style>\n</head>\n<body>\n<h1>vmmu run report</h1>\n<p class=\"lead\">{}</p>\n<p class=\"verdict\">{}</p>\n",
      STYLE, escape_xml(r.workload), escape_xml(r.verdict));

  page += "<h2>Side by side</h2>\n" + table_html(r.table);

  page += "<h2>Metadata over time</h2>\n<div class=\"charts\">\n";
  LineChart total = line_chart("chart-metadata-total", "Mapping metadata (mapping_total), every mode", "bytes held", Unit::Bytes);
  for (const Timeline& t : r.timelines)
    for (const NamedSeries& s : t.memory)
      if (s.name == "mapping_total") total.series.push_back(line(t.mode, t.ops, s.values));
  page += figure(svg_line_chart(total),
                 "Bytes the engine holds for mappings (table pages, headers, reverse map, parent lists, hashes) as the workload "
                 "runs; the reference (none) holds none.");
  for (size_t i = 0; i < r.timelines.size(); ++i) {
    const Timeline& t = r.timelines[i];
    LineChart c = line_chart("chart-metadata-" + ids[i], fmt::format("Memory by category, --mmu={}", t.mode), "bytes held", Unit::Bytes);
    c.empty_note = "every category stayed at 0 bytes";
    for (const NamedSeries& s : t.memory)
      if (!all_zero(s)) c.series.push_back(line(s.name, t.ops, s.values));
    page += figure(svg_line_chart(c), fmt::format("--mmu={}: each category of Vm::stats()[\"memory\"] that was ever non-zero "
                                                  "(mapping_total, dashed, is the sum of the mapping categories).",
                                                  t.mode));
  }
  page += "</div>\n";

  page += "<h2>Faults and exits over time</h2>\n<div class=\"charts\">\n";
  for (size_t i = 0; i < r.timelines.size(); ++i) {
    const Timeline& t = r.timelines[i];
    LineChart c = line_chart("chart-events-" + ids[i], fmt::format("Faults and exits, --mmu={}", t.mode), "events so far (cumulative)",
                             Unit::Count);
    for (const NamedSeries& s : t.events) c.series.push_back(line(s.name, t.ops, s.values));
    page += figure(svg_line_chart(c),
                   fmt::format("--mmu={}: page faults delivered to the guest and, under an engine, exits to the hypervisor and "
                               "what caused them, counted from the start of the run.",
                               t.mode));
  }
  page += "</div>\n";

  page += "<h2>Walk references</h2>\n<div class=\"charts\">\n";
  BarChart h;
  h.id = "chart-walk-refs";
  h.title = "Memory references per hardware page walk";
  h.x_label = r.histogram_x_label;
  h.y_label = "walks (log scale)";
  h.categories = r.histogram_buckets;
  h.log_scale = true;
  h.empty_note = "no walk-reference histogram in this build";
  for (const WalkHistogram& w : r.histograms) h.groups.push_back(BarGroup{w.mode, w.counts});
  page += figure(svg_bar_chart(h), r.histogram_note);
  page += "</div>\n";

  std::string sampling;
  for (const Timeline& t : r.timelines)
    sampling += fmt::format("{}{}: {} samples, {:.1f} ms", sampling.empty() ? "" : "; ", t.mode, t.ops.size(), t.sampling_seconds * 1e3);
  page += fmt::format("<footer>Written by <code>vmmu run --report</code>: one self-contained file (inline CSS and SVG; no scripts, "
                      "fonts or network). Sampling for the charts (left out of the wall times above): {}.</footer>\n</body>\n</html>\n",
                      escape_xml(sampling));
  return page;
}

}  // namespace vmmu::sim::report
