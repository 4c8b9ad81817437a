#pragma once
// Drives a Vm with the ops of a .vmt workload and writes one JSON object per result
// (VMT-FORMAT.md, "Output"), while counting what happened for a human summary.
#include <array>
#include <cstdint>
#include <cstdio>
#include <istream>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "sim/json_lines.hpp"
#include "sim/op.hpp"
#include "sim/op_source.hpp"
#include "sim/tlb_config.hpp"
#include "sim/tlb_counters.hpp"
#include "vm/vm.hpp"

namespace vmmu::sim {

// A line the contract does not allow, found while executing it (unknown vcpu, overlapping slot,
// PG without PE, ...): the replay stops with FILE:LINE: message.
class ReplayError : public std::runtime_error {
 public:
  ReplayError(uint64_t line, const std::string& what) : std::runtime_error(what), line_(line) {}
  uint64_t line() const { return line_; }

 private:
  uint64_t line_;
};

// What a replay did, for people (the JSON Lines are for machines). The maps keyed by names are
// filled from array counters when the summary is asked for: the hot loop counts by index.
struct ReplaySummary {
  uint64_t ops = 0;
  std::map<std::string, uint64_t> ops_by_kind;
  uint64_t accesses = 0, translated = 0, page_faults = 0, gp_faults = 0, mmio = 0, readonly_writes = 0;
  std::map<uint32_t, uint64_t> pf_by_error_code;
  std::map<std::string, uint64_t> accesses_by_mode;  // paging mode at the time of the access
  uint64_t pdpte_gp = 0;                               // #GP from loading PDPTEs (regs/cr3/flush)
  uint64_t audits = 0, audit_failures = 0, host_errors = 0;
  bool tlb_model = false;  // the TLB model ran: `tlb` holds its counters
  TlbCounters tlb;
};

class TlbReplay;

// Which results a replay prints: every one (the contract's output), or only those of `stats`
// and `audit` ops and host errors (a trace of billions of accesses, replayed for its counters).
enum class ReplayResults : uint8_t { All, Stats };

struct ReplayOptions {
  bool tlb = false;  // run the TLB cost model (sim/tlb_model.hpp); it changes no result
  TlbConfig tlb_config{};
  ReplayResults results = ReplayResults::All;
};

class Replayer {
 public:
  // `out` may be null: then nothing is printed and only the summary is kept.
  Replayer(Vm& vm, std::FILE* out, const ReplayOptions& options = {});
  ~Replayer();
  Replayer(const Replayer&) = delete;  // the TLB model counts into summary_
  Replayer& operator=(const Replayer&) = delete;

  // Executes one op. Throws ReplayError for a malformed line; a host allocation failure prints
  // the contract's "error" result and the replay goes on (exit status 3).
  void apply(const Op& op);
  // Executes the run's accesses from `done` on, as apply() would one by one, counting them in
  // `done` (on a ReplayError, the failed one is not counted).
  void apply(const AccessRun& run, uint32_t& done);
  void flush() { out_.flush(); }

  const ReplaySummary& summary() const;
  // 0, or 3 when some op failed for lack of host memory.
  int exit_status() const { return summary_.host_errors ? 3 : 0; }

 private:
  void execute(const Op& op);
  bool small_guest() const;  // at most 64 MiB of memslots: cheap enough to audit after every op
  Vcpu& vcpu(uint32_t id);    // the Vm's, remembering the last one asked for
  // A read, write or fetch; `WellFormed`: decoded by a binary reader, which checked its width,
  // value and page already.
  template <bool WellFormed>
  void access(uint64_t line, OpKind op, uint32_t id, uint64_t gva, unsigned width, uint64_t value);
  // Called in a catch block: the op on `line` threw. A refused op stops the replay (ReplayError);
  // a host allocation failure is its result (the contract's "error") and the replay goes on;
  // anything else propagates.
  void failed(uint64_t line, OpKind kind);
  void debug_audit(uint64_t line);
  void print_access(uint64_t line, OpKind kind, const AccessResult& r) {
    if (r.status == AccessResult::Status::Ok && !print_all_) [[likely]]
      return;
    print_result(line, kind, r);
  }
  void print_result(uint64_t line, OpKind kind, const AccessResult& r);
  void print_fault(uint64_t line, OpKind kind, const x86::Fault& f);
  // Whether an op of this kind prints its result.
  bool prints(OpKind kind) const { return print_all_ || (print_stats_ && (kind == OpKind::Stats || kind == OpKind::Audit)); }

  Vm& vm_;
  JsonLines out_;
  const bool print_all_, print_stats_;
  mutable ReplaySummary summary_;
  static constexpr size_t OP_KINDS = static_cast<size_t>(OpKind::Stats) + 1;
  static constexpr size_t PAGING_MODES = static_cast<size_t>(x86::PagingMode::Level5) + 1;
  std::array<uint64_t, OP_KINDS> ops_by_kind_{};
  std::array<uint64_t, PAGING_MODES> accesses_by_mode_{};
  std::map<uint32_t, std::vector<uint64_t>> last_dirty_get_;  // slot -> slot-relative pages
  std::unique_ptr<TlbReplay> tlb_;  // when ReplayOptions::tlb
  Vcpu* last_vcpu_ = nullptr;
  uint64_t last_vcpu_id_ = UINT64_MAX;  // last_vcpu_'s ID (none yet: no 32-bit ID matches)
};

// Replays a whole .vmt stream. Malformed lines: `FILE:LINE: what is wrong` on `err`, status 2,
// with every earlier result already written. Returns the exit status (0, 2 or 3).
int replay_stream(std::istream& in, const std::string& file_name, Vm& vm, std::FILE* out, std::FILE* err,
                  ReplaySummary* summary = nullptr, const ReplayOptions& options = {});

// The same from any op source (sim::WorkloadInput: every form of a .vmt file). A bad input or an
// op the library refuses stops it with one message on `err` (the source's own, or
// `WHERE: what is wrong` with the source's `where`), status 2.
int replay_stream(OpSource& in, Vm& vm, std::FILE* out, std::FILE* err, ReplaySummary* summary = nullptr,
                  const ReplayOptions& options = {});

}  // namespace vmmu::sim
