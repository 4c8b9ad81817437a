#include "tools/vmmu/convert_command.hpp"

#include <cstdio>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "sim/workload_input.hpp"
#include "sim/workload_output.hpp"

namespace vmmu::tools {

int convert_main(int argc, char** argv) {
  CLI::App app{"vmmu convert: a .vmt workload from any form into any form (same ops, same line numbers)", "vmmu convert"};
  std::string in_path, out_path, form;
  int level = 3;
  app.add_option("input", in_path, "the workload: text or binary, either may be zstd-compressed (told by its bytes); - for stdin")->required();
  app.add_option("-o,--output", out_path,
                 "the workload to write: NAME.vmt text, NAME.vmtb binary, NAME.zst (NAME.vmt.zst, NAME.vmtb.zst) binary + zstd; - for stdout (text)")
      ->required();
  app.add_option("--form", form, "text or binary, whatever the output's name says (NAME.vmt.zst --form=text: text + zstd)")
      ->check(CLI::IsMember({"text", "binary"}));
  app.add_option("--level", level, "zstd compression level")->check(CLI::Range(1, 19));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  sim::OutputFormat format = sim::output_format_for(out_path);
  if (form == "text") format.form = sim::WorkloadForm::Text;
  if (form == "binary") format.form = sim::WorkloadForm::Binary;

  auto remove_output = [&](std::unique_ptr<sim::WorkloadOutput>& out) {
    out.reset();
    if (out_path != "-") std::remove(out_path.c_str());  // no half-written workload
  };
  std::unique_ptr<sim::WorkloadOutput> out;
  try {
    sim::WorkloadInput in(in_path);
    sim::Op op;
    // The first op first: a binary input's note is known once its header is read.
    const bool any = in.next(op);
    const std::string note = in.note().empty() ? fmt::format("converted from {} by vmmu convert", in_path) : in.note();
    out = std::make_unique<sim::WorkloadOutput>(out_path, format, note, level);
    if (any) {
      do {
        out->write(op);
      } while (in.next(op));
    }
    out->finish();
  } catch (const sim::OpSourceError& e) {
    std::fprintf(stderr, "%s\n", e.what());
    remove_output(out);
    return 2;
  } catch (const std::exception& e) {  // cannot create or write the output
    std::fprintf(stderr, "vmmu convert: %s\n", e.what());
    remove_output(out);
    return 2;
  }
  return 0;
}

}  // namespace vmmu::tools
