// `vmmu run --report`: a self-contained HTML page whose charts render. The file is checked as
// text (no network references, every chart present with something plotted), then opened in
// headless Chromium: the screenshot must be a real image of the window's size with colour in
// it, and the DOM Chromium built must still hold every chart with its lines and bars.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>

#include "tests/tools/png_image.hpp"
#include "tests/tools/vmmu_cli.hpp"

namespace {

const std::string WORKLOAD = std::string(VMMU_SOURCE_DIR) + "/workloads/default.vmt";  // 321 ops: fast in every mode

using vmmu::test::temp_path;
std::string read_file(const std::string& path) { return vmmu::test::read_whole_file(path); }
int shell(const std::string& command) { return vmmu::test::shell_status(command); }

// The charts the page must have for --modes=none,tdp,shadow.
const char* const CHARTS[] = {"chart-metadata-total", "chart-metadata-none", "chart-metadata-tdp", "chart-metadata-shadow",
                              "chart-events-none",    "chart-events-tdp",    "chart-events-shadow", "chart-walk-refs"};

// The text of `<svg ... id="ID" ...>...</svg>`, or "" when there is none.
std::string svg_element(const std::string& html, const std::string& id) {
  const size_t at = html.find("id=\"" + id + "\"");
  if (at == std::string::npos) return "";
  const size_t start = html.rfind("<svg", at), end = html.find("</svg>", at);
  if (start == std::string::npos || end == std::string::npos) return "";
  return html.substr(start, end + 6 - start);
}

size_t count(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

// Lines and bars plotted in a chart.
size_t plotted(const std::string& svg) { return count(svg, "class=\"series\"") + count(svg, "class=\"bar\""); }

std::string write_report(const std::string& name) {
  const std::string html = temp_path(name);
  std::remove(html.c_str());
  const int status = shell(std::string(VMMU_BINARY) + " run --workload " + WORKLOAD + " --report " + html + " >/dev/null 2>&1");
  EXPECT_EQ(status, 0);
  return html;
}

TEST(VmmuRunReport, IsSelfContainedAndHasEveryChart) {
  const std::string html = read_file(write_report("text.html"));
  ASSERT_FALSE(html.empty());
  // Nothing loaded from elsewhere: the only URL is the SVG namespace name, which is not fetched.
  std::string rest = html;
  for (size_t at; (at = rest.find("http://www.w3.org/2000/svg")) != std::string::npos;) rest.erase(at, 26);
  EXPECT_EQ(rest.find("http://"), std::string::npos);
  EXPECT_EQ(rest.find("https://"), std::string::npos);
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find("url("), std::string::npos);
  EXPECT_NE(html.find("id=\"summary-table\""), std::string::npos);
  EXPECT_NE(html.find("results: identical in every mode"), std::string::npos);
  for (const char* id : CHARTS) {
    const std::string svg = svg_element(html, id);
    ASSERT_FALSE(svg.empty()) << id;
    EXPECT_NE(svg.find("class=\"chart\""), std::string::npos) << id;
    EXPECT_NE(svg.find("<title"), std::string::npos) << id;
    EXPECT_NE(svg.find("class=\"axis-label\""), std::string::npos) << id;
    EXPECT_NE(svg.find("class=\"legend\""), std::string::npos) << id;
    EXPECT_GT(plotted(svg), 0u) << id << " plots nothing";
  }
  // The shadow engine's metadata chart has a line per non-zero category, mapping_total among them.
  EXPECT_NE(svg_element(html, "chart-metadata-shadow").find("data-series=\"mapping_total\""), std::string::npos);
}

TEST(VmmuRunReport, AnUnwritableReportIsRefused) {
  EXPECT_EQ(shell(std::string(VMMU_BINARY) + " run --workload " + WORKLOAD + " --report /nonexistent-dir/x.html >/dev/null 2>&1"), 2);
}

// Where Chromium is (Debian's package installs /usr/bin/chromium), or "".
std::string find_chromium() {
  for (const char* name : {"chromium", "chromium-browser"}) {
    const std::string path = temp_path("which");
    if (shell(std::string("command -v ") + name + " >" + path + " 2>/dev/null") == 0) {
      std::string found = read_file(path);
      std::remove(path.c_str());
      while (!found.empty() && (found.back() == '\n' || found.back() == '\r')) found.pop_back();
      if (!found.empty()) return found;
    }
  }
  return "";
}

TEST(VmmuRunReport, RendersInHeadlessChromium) {
  const std::string chromium = find_chromium();
  if (chromium.empty()) GTEST_SKIP() << "chromium is not installed (scripts/install-deps.sh installs it)";
  const std::string html = write_report("browser.html"), png = temp_path("shot.png"), dom = temp_path("dom.html"),
                    profile = temp_path("profile");
  std::remove(png.c_str());
  // --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start; a private profile
  // directory and /tmp instead of /dev/shm keep it from depending on the machine; `timeout`
  // bounds a browser that hangs.
  const std::string browser = "timeout 120 " + chromium +
                              " --headless --no-sandbox --disable-gpu --disable-dev-shm-usage --no-first-run --hide-scrollbars"
                              " --user-data-dir=" + profile;
  // One start of the browser does both; an older Chromium that only takes a screenshot then
  // gets a second start for the DOM.
  ASSERT_EQ(shell(browser + " --window-size=1400,3000 --screenshot=" + png + " --dump-dom file://" + html + " >" + dom + " 2>/dev/null"), 0);
  if (read_file(dom).find("<svg") == std::string::npos) {
    ASSERT_EQ(shell(browser + " --dump-dom file://" + html + " >" + dom + " 2>/dev/null"), 0);
  }
  shell("rm -rf " + profile);

  std::string why;
  const auto image = vmmu::test::decode_png(read_file(png), why);
  ASSERT_TRUE(image) << png << ": " << why;
  EXPECT_EQ(image->width, 1400u);
  EXPECT_EQ(image->height, 3000u);
  // Not blank: many colours (the palette of the lines and bars, anti-aliasing) and a fair share
  // of pixels that are not the white background.
  std::set<uint32_t> colours;
  size_t drawn = 0;
  for (size_t p = 0; p + 2 < image->pixels.size(); p += image->channels) {
    const uint32_t rgb = uint32_t(image->pixels[p]) << 16 | uint32_t(image->pixels[p + 1]) << 8 | image->pixels[p + 2];
    if (colours.size() < 10000) colours.insert(rgb);
    drawn += rgb != 0xffffff;
  }
  EXPECT_GE(colours.size(), 12u);
  EXPECT_GT(drawn, size_t(image->width) * image->height / 50);

  const std::string rendered = read_file(dom);
  ASSERT_FALSE(rendered.empty());
  for (const char* id : CHARTS) {
    const std::string svg = svg_element(rendered, id);
    ASSERT_FALSE(svg.empty()) << id << " is not in the DOM Chromium built";
    EXPECT_GT(plotted(svg), 0u) << id << " plots nothing once rendered";
  }
  std::remove(html.c_str());
  std::remove(png.c_str());
  std::remove(dom.c_str());
}

}  // namespace
