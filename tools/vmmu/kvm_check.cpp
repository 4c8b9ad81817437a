#include "tools/vmmu/kvm_check.hpp"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include "oracle/check.hpp"
#include "oracle/kvm_runner.hpp"
#include "oracle/qemu_runner.hpp"
#include "oracle/random_cases.hpp"

namespace vmmu::tools {

namespace {

std::vector<MmuKind> mmus_of(const std::string& s) {
  if (s == "all") return {MmuKind::None, MmuKind::Tdp, MmuKind::Shadow};
  return {*parse_mmu_kind(s)};
}

}  // namespace

int kvm_check_main(int argc, char** argv) {
  CLI::App app{"vmmu kvm-check: compare vmmu with an outside oracle (QEMU or KVM)", "vmmu kvm-check"};
  std::string file, oracle_name = "auto", mmu = "none", mode = "4level", repro_dir = ".";
  uint64_t random = 0, seed = 1, per_image = 2000;
  app.add_option("file", file, "the .vmt workload");
  app.add_option("--oracle", oracle_name, "qemu, kvm or auto")->check(CLI::IsMember({"qemu", "kvm", "auto"}));
  app.add_option("--mmu", mmu, "none, tdp, shadow or all")->check(CLI::IsMember({"none", "tdp", "shadow", "all"}));
  app.add_option("--random", random, "check N random cases instead of a file");
  app.add_option("--seed", seed, "seed of the random cases");
  app.add_option("--mode", mode, "paging mode of the random cases: 32bit, pse, pae, 4level, 5level")
      ->check(CLI::IsMember({"32bit", "pse", "pae", "4level", "5level"}));
  app.add_option("--cases-per-image", per_image, "random cases batched into one oracle run");
  app.add_option("--reproducer-dir", repro_dir, "where a reproducer .vmt of a random difference is written");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (file.empty() == (random == 0)) {
    std::fprintf(stderr, "vmmu kvm-check: give a FILE or --random N\n");
    return 2;
  }
  // --oracle=auto: QEMU where it is installed (every paging mode), else KVM (long mode only).
  const auto qemu = oracle::find_qemu();
  const auto no_kvm = oracle::kvm_unavailable();
  std::string use = oracle_name;
  if (use == "auto") use = qemu ? "qemu" : "kvm";
  if (use == "qemu" && !qemu) {
    std::fprintf(stderr, "vmmu kvm-check: no oracle here: qemu-system-x86_64 not found (set VMMU_QEMU or install qemu-system-x86)\n");
    return 77;
  }
  if (use == "kvm" && no_kvm) {
    std::fprintf(stderr, "vmmu kvm-check: no oracle here: %s%s\n", no_kvm->c_str(),
                 qemu ? "" : "; qemu-system-x86_64 not found either");
    return 77;
  }
  auto check = [&](const std::vector<sim::Op>& ops, const std::vector<MmuKind>& m) {
    return use == "kvm" ? oracle::check_with_kvm(ops, m) : oracle::check_with_qemu(ops, m, *qemu);
  };
  const std::vector<MmuKind> mmus = mmus_of(mmu);

  if (!file.empty()) {
    std::ifstream in(file, std::ios::binary);
    if (!in) {
      std::fprintf(stderr, "%s: cannot open\n", file.c_str());
      return 2;
    }
    std::vector<sim::Op> ops;
    try {
      ops = oracle::parse_vmt(in, file);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s\n", e.what());
      return 2;
    }
    const oracle::CheckReport r = check(ops, mmus);
    for (const std::string& s : r.mmus_skipped) fmt::print("note: --mmu={} skipped\n", s);
    fmt::print("{}: {}\n", file, oracle::describe(r));
    if (r.difference) return 1;
    return r.error.empty() ? 0 : 2;
  }

  const auto hm = oracle::parse_harness_mode(mode);
  const bool pse = mode == "pse";
  uint64_t done = 0, compared = 0;
  std::map<std::string, uint64_t> masked;
  double seconds = 0;
  for (uint64_t batch = 0; done < random; ++batch) {
    const uint64_t n = std::min<uint64_t>(per_image, random - done);
    const oracle::RandomBatch b = oracle::random_batch(seed, batch, *hm, pse, unsigned(n), use == "qemu");
    std::istringstream in(b.vmt);
    const std::vector<sim::Op> ops = oracle::parse_vmt(in, "random");
    const oracle::CheckReport r = check(ops, mmus);
    seconds += r.oracle_seconds;
    if (r.difference || !r.error.empty()) {
      std::string where = r.difference ? oracle::describe(r) : r.error;
      std::string path;
      if (r.difference) {
        const std::string repro = oracle::reproducer(b, r.difference->line);
        path = fmt::format("{}/kvm-check-{}-seed{}-batch{}.vmt", repro_dir, mode, seed, batch);
        std::ofstream(path) << repro;
      }
      fmt::print("random --mode={} --seed={} batch {}: {}\n", mode, seed, batch, where);
      if (!path.empty()) fmt::print("reproducer: {}\n", path);
      return r.difference ? 1 : 2;
    }
    for (const auto& [k, v] : r.masked) masked[k] += v;
    compared += r.compared;
    done += n;
  }
  std::string m;
  for (const auto& [k, v] : masked) m += fmt::format("; masked {} {}", k, v);
  fmt::print("{} random cases (--mode={} --seed={} --mmu={}), {} results compared with {} in {:.1f} s, 0 differences{}\n",
             random, mode, seed, mmu, compared, use, seconds, m);
  return 0;
}

}  // namespace vmmu::tools
