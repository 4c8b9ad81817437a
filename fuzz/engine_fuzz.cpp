// libFuzzer target for the engines: fuzzer-chosen op sequences run under `--mmu=none`, `tdp` and
// `shadow` at once, every op's JSON result compared across the three and every Vm audited after
// every op.
//
// The sequences come from the random workload generator (sim/random_workload.hpp), its choices
// made by the input's bytes (RandomWorkloadParams::entropy) before its PRNG takes over, so they
// keep the contract's rule on cached translations by construction: the generator replays each op
// on a reference Vm as it goes and emits the invlpg/flush the rule asks for. The input:
//   byte 0     ops of the main phase: 8 + (b & 127)
//   byte 1     bits 0-1: vcpus 1..4; bits 2-3: guest memory 4, 8, 16 or 32 MiB; bit 4: a random
//              CPU model; bits 5-6: shadow as is, --max-mmu-pages=64, --unsync=off, or both;
//              bit 7: tdp with --dirty-log=dbit --eager-split=off
//   byte 2     paging modes allowed, bits 0-4: off, 32-bit, PAE, 4-level, 5-level (none: 4-level)
//   bytes 3-5  features turned off, bits 0-16 in RandomWorkloadFeatures order
//   bytes 6-7  the PRNG's seed
//   the rest   the generator's entropy
//
// A result that differs, a Vm that refuses an op the others take, or an audit violation prints a
// reproducer .vmt (the workload up to that op; $VMMU_FUZZ_REPRO, else ./engine-fuzz-repro.vmt)
// and aborts. Debug builds (the fuzz preset) audit through the Replayer, which aborts itself on a
// violation: VMMU_FUZZ_VMT=FILE writes each input's whole workload there first, to replay it with
// `vmmu replay`. A generator that breaks its own contract (std::logic_error) is a bug too.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include "fuzz/result_comparison.hpp"
#include "sim/random_workload.hpp"
#include "sim/replayer.hpp"
#include "vm/vm.hpp"

namespace {

using vmmu::MmuKind;
using vmmu::VmConfig;
using vmmu::sim::Op;
using vmmu::sim::RandomWorkload;
using vmmu::sim::RandomWorkloadParams;
using vmmu::x86::PagingMode;

constexpr size_t HEADER_BYTES = 8;

RandomWorkloadParams params_of(const uint8_t* h, const uint8_t* entropy, size_t entropy_size) {
  RandomWorkloadParams p;
  p.ops = 8 + (h[0] & 127u);
  p.vcpus = 1 + (h[1] & 3u);
  p.guest_memory = (4ull << ((h[1] >> 2) & 3u)) << 20;
  p.random_cpu_model = (h[1] & 16) != 0;
  p.modes.clear();
  static const PagingMode modes[] = {PagingMode::Off, PagingMode::Bits32, PagingMode::Pae, PagingMode::Level4, PagingMode::Level5};
  for (unsigned i = 0; i < 5; ++i)
    if (h[2] & (1u << i)) p.modes.push_back(modes[i]);
  if (p.modes.empty()) p.modes.push_back(PagingMode::Level4);
  const uint32_t off = h[3] | uint32_t{h[4]} << 8 | uint32_t{h[5]} << 16;
  bool* const features[] = {&p.features.huge_pages,    &p.features.global_pages, &p.features.reserved_bits, &p.features.table_writes,
                            &p.features.aliases,       &p.features.address_spaces, &p.features.control_bits, &p.features.cpl_ac_pkru,
                            &p.features.mmio,          &p.features.readonly_slot, &p.features.memslot_changes, &p.features.dirty_log,
                            &p.features.unmap,         &p.features.age,          &p.features.peek,          &p.features.stats,
                            &p.features.self_map};
  for (unsigned i = 0; i < std::size(features); ++i)
    if (off & (1u << i)) *features[i] = false;
  p.seed = h[6] | uint64_t{h[7]} << 8;
  p.big_slot_1g = false;      // keeps every input's guest small (and audited after every op)
  p.audit_every_op = false;   // the target audits after every op itself
  p.entropy.assign(entropy, entropy + entropy_size);
  return p;
}

// One mode under test: a Vm, the Replayer driving it, and its JSON Lines in memory.
class Mode {
 public:
  Mode(std::string name, const VmConfig& config)
      : name_(std::move(name)), vm_(config), out_(open_memstream(&buf_, &len_)),
        replayer_(std::make_unique<vmmu::sim::Replayer>(vm_, out_)) {}
  ~Mode() {
    replayer_.reset();  // it flushes into out_ as it goes
    std::fclose(out_);
    std::free(buf_);
  }
  Mode(const Mode&) = delete;
  Mode& operator=(const Mode&) = delete;

  // Runs one op; returns what it printed (or why the Vm refused it).
  std::string apply(const Op& op) {
    const size_t before = len_;
    try {
      replayer_->apply(op);
    } catch (const std::exception& e) {
      replayer_->flush();
      return fmt::format("refused: {}", e.what());
    }
    replayer_->flush();
    return std::string(buf_ + before, len_ - before);
  }
  std::vector<std::string> audit() const { return vm_.audit(); }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  vmmu::Vm vm_;
  char* buf_ = nullptr;
  size_t len_ = 0;
  std::FILE* out_;
  std::unique_ptr<vmmu::sim::Replayer> replayer_;
};

void write_vmt(const char* path, const RandomWorkload& w, uint64_t upto_line, const std::string& note) {
  std::vector<Op> ops;
  for (const Op& op : w.ops())
    if (upto_line == 0 || op.line <= upto_line) ops.push_back(op);
  std::ofstream f(path);
  vmmu::sim::write_vmt(f, ops, fmt::format("engine_fuzz: {}; {}", w.params().describe(), note));
}

[[noreturn]] void fail(const RandomWorkload& w, const Op& op, const std::string& what) {
  const char* env = std::getenv("VMMU_FUZZ_REPRO");
  const std::string path = env && *env ? env : "engine-fuzz-repro.vmt";
  write_vmt(path.c_str(), w, op.line, what);
  std::fprintf(stderr, "engine_fuzz: line %llu `%s`: %s\n  params: %s\n  reproducer: %s\n", static_cast<unsigned long long>(op.line),
               vmmu::sim::format_op(op).c_str(), what.c_str(), w.params().describe().c_str(), path.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < HEADER_BYTES) return 0;
  const RandomWorkloadParams params = params_of(data, data + HEADER_BYTES, size - HEADER_BYTES);
  const RandomWorkload workload(params);  // a std::logic_error escapes: a generator bug
  if (const char* vmt = std::getenv("VMMU_FUZZ_VMT"); vmt && *vmt) write_vmt(vmt, workload, 0, "the whole workload");

  VmConfig tdp{.mmu = MmuKind::Tdp};
  std::string tdp_name = "tdp";
  if (data[1] & 128) {
    tdp.tdp.dirty_log = vmmu::mmu::DirtyLogMode::DirtyBit;
    tdp.tdp.eager_split = false;
    tdp_name += " --dirty-log=dbit --eager-split=off";
  }
  VmConfig shadow{.mmu = MmuKind::Shadow};
  std::string shadow_name = "shadow";
  if (data[1] & 32) {
    shadow.shadow.max_mmu_pages = vmmu::mmu::MIN_MAX_MMU_PAGES;
    shadow_name += fmt::format(" --max-mmu-pages={}", vmmu::mmu::MIN_MAX_MMU_PAGES);
  }
  if (data[1] & 64) {
    shadow.shadow.unsync = false;
    shadow_name += " --unsync=off";
  }
  Mode none("none", VmConfig{.mmu = MmuKind::None});
  Mode engines[] = {Mode(tdp_name, tdp), Mode(shadow_name, shadow)};

  vmmu::fuzz::SlotLayout slots;
  for (const Op& op : workload.ops()) {
    slots.apply(op);
    const std::string expected = none.apply(op);
    if (expected.starts_with("refused: ")) fail(workload, op, "--mmu=none " + expected);
    for (Mode& m : engines) {
      const std::string got = m.apply(op);
      if (auto why = vmmu::fuzz::result_difference(expected, got, slots))
        fail(workload, op, fmt::format("--mmu={} differs from --mmu=none: {}\n  none: {}  {}: {}", m.name(), *why, expected, m.name(), got));
    }
#ifdef NDEBUG  // debug builds: the Replayer audits after every op of a small guest
    for (const Mode* m : {&none, &engines[0], &engines[1]})
      if (const auto v = m->audit(); !v.empty()) fail(workload, op, fmt::format("--mmu={}: the audit fails: {}", m->name(), v.front()));
#endif
    // An `audit` op's result: the engines' are compared with this one, "ok" included.
    if (op.kind == vmmu::sim::OpKind::Audit && expected.find("\"ok\":true") == std::string::npos)
      fail(workload, op, "--mmu=none: the audit op fails: " + expected);
  }
  return 0;
}
