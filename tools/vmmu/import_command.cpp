#include "tools/vmmu/import_command.hpp"

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "sim/guest_os/vmt_stream_writer.hpp"
#include "sim/trace_import/trace_error.hpp"
#include "sim/trace_import/trace_importer.hpp"
#include "sim/workload_output.hpp"

namespace vmmu::tools {

namespace {

using sim::guest_os::DirectMapPages;

x86::PagingMode mode_of(const std::string& s) {
  if (s == "32bit") return x86::PagingMode::Bits32;
  if (s == "pae") return x86::PagingMode::Pae;
  if (s == "5level") return x86::PagingMode::Level5;
  return x86::PagingMode::Level4;
}

DirectMapPages direct_map_of(const std::string& s) {
  if (s == "4k") return DirectMapPages::Size4K;
  if (s == "2m") return DirectMapPages::Size2M;
  if (s == "1g") return DirectMapPages::Size1G;
  return DirectMapPages::Largest;
}

}  // namespace

int import_main(int argc, char** argv) {
  CLI::App app{"vmmu import: a real memory trace driving the guest OS model, written as a .vmt workload", "vmmu import"};
  std::string kind_name, out_path, mode = "4level", direct_map = "largest", thp = "on";
  std::vector<std::string> files;
  uint64_t memory = 4ull << 30, seed = 1, quantum = 10000, limit = 0;
  uint32_t vcpus = 2, copy_words = 512;
  app.add_option("kind", kind_name, "the trace format: lackey, pin or champsim")->required()->check(CLI::IsMember({"lackey", "pin", "champsim"}));
  app.add_option("files", files, "trace files (.xz and .gz are decompressed); several run as interleaved processes")->required();
  app.add_option("-o,--output", out_path, "the workload to write: NAME.vmt text, NAME.vmtb binary, NAME.vmt.zst binary + zstd")->required();
  app.add_option("--mode", mode, "the guest's paging: 32bit, pae, 4level or 5level")->check(CLI::IsMember({"32bit", "pae", "4level", "5level"}));
  app.add_option("--memory", memory, "guest memory in bytes (K, M, G suffixes)")->transform(CLI::AsSizeValue(false));
  app.add_option("--vcpus", vcpus, "vCPUs the processes run on")->check(CLI::Range(1, 64));
  app.add_option("--direct-map", direct_map, "leaves of the kernel direct map: largest, 4k, 2m or 1g")
      ->check(CLI::IsMember({"largest", "4k", "2m", "1g"}));
  app.add_option("--thp", thp, "transparent huge pages: on or off")->check(CLI::IsMember({"on", "off"}));
  app.add_option("--copy-words", copy_words, "8-byte accesses the kernel uses to clear or copy a page (512: all)")->check(CLI::Range(1, 512));
  app.add_option("--quantum", quantum, "accesses a process makes before the next trace's process runs");
  app.add_option("--limit", limit, "traced accesses to take from each trace (0: all)");
  app.add_option("--seed", seed, "seed of the values stores write (traces record none)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }

  sim::trace_import::TraceImportParams params;
  params.os.mode = mode_of(mode);
  params.os.memory = memory;
  params.os.vcpus = vcpus;
  params.os.direct_map = direct_map_of(direct_map);
  params.os.thp = thp == "on";
  params.os.page_copy_words = copy_words;
  params.quantum = quantum;
  params.max_accesses = limit;
  params.seed = seed;
  const auto kind = *sim::trace_import::parse_trace_kind(kind_name);

  std::string files_text;
  for (const std::string& f : files) files_text += " " + f;
  // The form by the output's name (NAME.vmt text, NAME.vmtb or NAME.vmt.zst binary; docs/RUN.md).
  std::unique_ptr<sim::WorkloadOutput> out;
  try {
    out = std::make_unique<sim::WorkloadOutput>(out_path, sim::output_format_for(out_path),
                                                fmt::format("vmmu import {}{} ({} seed={})", kind_name, files_text, params.os.describe(), seed));
  } catch (const std::runtime_error& e) {
    std::fprintf(stderr, "vmmu import: %s\n", e.what());
    return 2;
  }
  sim::guest_os::VmtStreamWriter writer(*out);
  try {
    const auto r = sim::trace_import::import_traces(kind, files, params, [&](const sim::Op& op) { writer(op); });
    try {
      out->finish();
    } catch (const std::runtime_error& e) {
      std::fprintf(stderr, "vmmu import: %s\n", e.what());
      out.reset();
      if (out_path != "-") std::remove(out_path.c_str());
      return 2;
    }
    std::fprintf(stderr, "vmmu import: %llu traced accesses -> %llu guest accesses, %llu ops (%llu page faults, %llu huge pages) in %s\n",
                 static_cast<unsigned long long>(r.traced_accesses), static_cast<unsigned long long>(r.guest_accesses),
                 static_cast<unsigned long long>(writer.ops()), static_cast<unsigned long long>(r.counts.page_faults),
                 static_cast<unsigned long long>(r.counts.huge_pages), out_path.c_str());
    return 0;
  } catch (const sim::trace_import::TraceError& e) {
    std::fprintf(stderr, "%s\n", e.what());
  } catch (const sim::guest_os::OutOfGuestMemory& e) {
    std::fprintf(stderr, "vmmu import: %s\n", e.what());
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "vmmu import: %s\n", e.what());
  } catch (const std::logic_error& e) {  // a bug in the model, not in the input
    std::fprintf(stderr, "vmmu import: internal error: %s\n", e.what());
    out.reset();
    if (out_path != "-") std::remove(out_path.c_str());
    return 1;
  }
  out.reset();
  if (out_path != "-") std::remove(out_path.c_str());  // no half-written workload
  return 2;
}

}  // namespace vmmu::tools
