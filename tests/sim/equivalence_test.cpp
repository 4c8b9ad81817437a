// The randomized equivalence test, the project's main correctness oracle (DESIGN.md, "Three
// modes, one observable behaviour"): random workloads that keep VMT-FORMAT.md's rule on cached
// translations are replayed in every mode that exists, with an audit after (almost) every op, and
// each mode's JSON Lines must equal the reference's (`--mmu=none`) line by line, except the
// contents of "stats"/"memory", the text of audit violations, and `age`, where an engine may add
// gfns that share a host huge mapping with one none reports. Every audit must say ok.
//
// Besides the real engines, every workload also runs through a caching model: the reference
// behind a per-vCPU TLB that caches as much as the contract allows (global entries across `cr3`,
// neighbouring PTEs prefetched, nothing dropped on writes to page tables). It agrees with none
// only if the generator keeps the rule, so the harness checks itself before any engine exists.
//
// VMMU_EQUIV_SCALE=N multiplies the number of workloads (default 1: 320); VMMU_EQUIV_SEED=S runs
// the one workload of seed S; VMMU_EQUIV_SKIP_AGE=1 leaves `age` results uncompared;
// VMMU_EQUIV_WRITE=1 writes every workload checked to the temporary directory. A failure
// prints the seed, the op, both lines and the path of a reproducer .vmt (the workload up to the
// op that differs) in the test's temp dir.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "guest/guest_memory.hpp"
#include "guest/walker.hpp"
#include "sim/json_lines.hpp"
#include "sim/random_workload.hpp"
#include "sim/replayer.hpp"
#include "sim/vmt_reader.hpp"
#include "vm/vm.hpp"
#include "x86/page_table_entry.hpp"
#include "tests/sim/equivalence_rule.hpp"

namespace vmmu::sim {
namespace {

using nlohmann::json;
using x86::PagingMode;

constexpr int SHARDS = 8;
constexpr uint64_t WORKLOADS_PER_SHARD = 40;

double scale() {
  const char* s = std::getenv("VMMU_EQUIV_SCALE");
  if (!s || !*s) return 1.0;
  const double v = std::strtod(s, nullptr);
  return v > 0 ? v : 1.0;
}

// VMMU_EQUIV_SKIP_AGE=1 leaves `age` results uncompared (to look past an age difference).
bool skip_age() {
  static const bool skip = [] {
    const char* s = std::getenv("VMMU_EQUIV_SKIP_AGE");
    return s && *s && std::string_view(s) != "0";
  }();
  return skip;
}

std::optional<uint64_t> seed_override() {
  const char* s = std::getenv("VMMU_EQUIV_SEED");
  if (!s || !*s) return std::nullopt;
  return std::strtoull(s, nullptr, 0);
}

// A varied mix: mostly 4-level, often every mode, sometimes one family of modes; a few workloads
// without some feature, so that the rest is exercised on its own too.
RandomWorkloadParams params_for_seed(uint64_t seed) {
  uint64_t state = seed;
  auto take = [&](uint64_t n) {
    state += 0x9e3779b97f4a7c15ull;
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (z ^ (z >> 31)) % n;
  };
  RandomWorkloadParams p;
  p.seed = seed;
  p.ops = 200 + static_cast<uint32_t>(take(201));
  p.vcpus = 1 + static_cast<uint32_t>(take(4));
  p.guest_memory = (8ull << take(3)) << 20;
  switch (take(10)) {
    case 0:
    case 1:
    case 2:
    case 3: p.modes = {PagingMode::Level4}; break;
    case 4:
    case 5:
    case 6: p.modes = {PagingMode::Off, PagingMode::Bits32, PagingMode::Pae, PagingMode::Level4, PagingMode::Level5}; break;
    case 7: p.modes = {PagingMode::Bits32, PagingMode::Off}; break;
    case 8: p.modes = {PagingMode::Pae, PagingMode::Level4, PagingMode::Off}; break;
    default: p.modes = {PagingMode::Level5, PagingMode::Level4}; break;
  }
  p.big_slot_1g = take(8) == 0;
  p.audit_every_op = !p.big_slot_1g;  // a small guest: audit after every op
  if (take(10) == 0) p.features.huge_pages = false;
  if (take(10) == 0) p.features.global_pages = false;
  if (take(12) == 0) p.features.reserved_bits = false;
  if (take(12) == 0) p.features.memslot_changes = false;
  if (take(12) == 0) p.features.address_spaces = false;
  return p;
}

// ---- replaying into memory ----------------------------------------------------------------------
class MemoryFile {
 public:
  MemoryFile() : file_(open_memstream(&buf_, &len_)) {
    if (!file_) throw std::runtime_error("open_memstream failed");
  }
  ~MemoryFile() {
    if (file_) std::fclose(file_);
    std::free(buf_);
  }
  MemoryFile(const MemoryFile&) = delete;
  MemoryFile& operator=(const MemoryFile&) = delete;
  std::FILE* get() { return file_; }
  // Closes the stream and returns its lines.
  std::vector<std::string> lines() {
    std::fclose(file_);
    file_ = nullptr;
    std::vector<std::string> out;
    std::string_view text(buf_ ? buf_ : "", len_);
    while (!text.empty()) {
      const size_t nl = text.find('\n');
      out.emplace_back(text.substr(0, nl));
      if (nl == std::string_view::npos) break;
      text.remove_prefix(nl + 1);
    }
    return out;
  }

 private:
  char* buf_ = nullptr;
  size_t len_ = 0;
  std::FILE* file_;
};

struct Replay {
  bool available = true;  // false: the mode is not implemented yet
  std::vector<std::string> lines;
  std::string error;  // what stopped the replay early
  uint64_t error_line = 0;
  ReplaySummary summary;
  uint64_t model_hits = 0;  // caching model only: accesses served from its TLB
};

// A side-effect-free walk that notes whether it would have set an A/D bit.
class ProbePort {
 public:
  explicit ProbePort(const guest::Memslots& slots) : slots_(slots) {}
  template <class Entry>
  bool read_entry(uint64_t gpa, Entry& out) {
    const guest::Memslot* s = slots_.find(gpa >> x86::PAGE_SHIFT);
    if (!s) return false;
    out = static_cast<Entry>(guest::GuestMemory::load(s->host_page(gpa >> x86::PAGE_SHIFT) + (gpa & x86::PAGE_OFFSET_MASK), sizeof(Entry)));
    return true;
  }
  template <class Entry>
  guest::EntryUpdate update_entry(uint64_t, Entry, Entry) {
    ++updates;
    return guest::EntryUpdate::Done;
  }
  unsigned updates = 0;

 private:
  const guest::Memslots& slots_;
};

// The caching model (see the top of this file). It runs the reference Vm and answers an access
// from its TLB when it can, exactly as an engine that cached the translation would.
class CachingModel {
 public:
  explicit CachingModel(std::FILE* out) : replayer_(vm_, out), out_(out) {}

  void apply(const Op& op) {
    switch (op.kind) {
      case OpKind::Read:
      case OpKind::Write:
      case OpKind::Fetch:
        if (!hit(op)) fill(op);
        return;
      case OpKind::Invlpg:
        replayer_.apply(op);
        for (uint64_t size : SIZES) tlb_[op.id].erase(Key{size, op.addr & ~(size - 1)});
        return;
      case OpKind::Flush:
        replayer_.apply(op);
        tlb_[op.id].clear();
        return;
      case OpKind::Regs: {
        const x86::CpuState before = vm_.vcpu(op.id).state();
        replayer_.apply(op);
        const x86::CpuState& now = vm_.vcpu(op.id).state();
        if (now.cr0 != before.cr0 || now.cr3 != before.cr3 || now.cr4 != before.cr4 || now.efer != before.efer) tlb_[op.id].clear();
        return;
      }
      case OpKind::Cr3: {
        replayer_.apply(op);
        const x86::CpuState& now = vm_.vcpu(op.id).state();
        if (now.cr3 != op.addr) return;  // #GP: nothing happened
        const bool pge = now.cr4 & x86::cr4::PGE;
        auto& t = tlb_[op.id];
        for (auto it = t.begin(); it != t.end();) it = pge && it->second.global ? std::next(it) : t.erase(it);
        return;
      }
      case OpKind::MemslotDelete:
      case OpKind::MemslotMove: {
        // Translations read through tables of the old range go (every mode stays coherent).
        const guest::Memslot* s = vm_.memslots().by_id(op.id);
        const uint64_t lo = s ? s->base_gfn() : 0, hi = s ? s->end_gfn() : 0;
        replayer_.apply(op);
        for (auto& [id, t] : tlb_) {
          for (auto it = t.begin(); it != t.end();) {
            const auto& g = it->second.table_gfns;
            const bool used = std::any_of(g.begin(), g.end(), [&](uint64_t gfn) { return gfn >= lo && gfn < hi; });
            it = used ? t.erase(it) : std::next(it);
          }
        }
        return;
      }
      default: replayer_.apply(op); return;
    }
  }

  void flush() { replayer_.flush(); }
  const ReplaySummary& summary() const { return replayer_.summary(); }
  uint64_t hits() const { return hits_; }

 private:
  static constexpr uint64_t SIZES[] = {x86::PAGE_SIZE, x86::SIZE_2M, x86::SIZE_4M, x86::SIZE_1G};
  struct Key {
    uint64_t size, gva;
    bool operator<(const Key& o) const { return size != o.size ? size < o.size : gva < o.gva; }
  };
  struct Entry {
    uint64_t gpa;  // of the page's first byte
    uint8_t acc, pkey;
    bool global, dirty;
    std::vector<uint64_t> table_gfns;
  };

  static x86::AccessKind kind_of(const Op& op) {
    return op.kind == OpKind::Read ? x86::AccessKind::Read : op.kind == OpKind::Write ? x86::AccessKind::Write : x86::AccessKind::Fetch;
  }

  bool translatable(const mmu::VcpuContext& ctx, uint64_t gva) const {
    if (ctx.paging.mode() == PagingMode::Off) return false;
    return !x86::is_long_mode(ctx.paging.mode()) || x86::is_canonical(gva, ctx.paging.linear_width());
  }

  bool hit(const Op& op) {
    const mmu::VcpuContext& ctx = vm_.vcpu(op.id).context();
    if (!translatable(ctx, op.addr)) return false;
    auto& t = tlb_[op.id];
    const Entry* e = nullptr;
    uint64_t base = 0;
    for (uint64_t size : SIZES) {
      auto it = t.find(Key{size, op.addr & ~(size - 1)});
      if (it != t.end()) {
        e = &it->second;
        base = it->first.gva;
        break;
      }
    }
    const x86::AccessKind kind = kind_of(op);
    if (!e || (kind == x86::AccessKind::Write && !e->dirty)) return false;  // a write walks to set D
    ++hits_;
    const bool user = ctx.state.cpl == 3;
    AccessResult r;
    const bool perm = ctx.paging.permission_fault(kind, user, ctx.state.ac, e->acc);
    const bool pk = ctx.paging.pkey_fault(kind, user, e->acc, ctx.state.pkru, e->pkey);
    if (perm || pk) {
      uint32_t ec = x86::pfec::P | (pk ? x86::pfec::PK : 0);
      if (kind == x86::AccessKind::Write) ec |= x86::pfec::W;
      if (user) ec |= x86::pfec::U;
      if (kind == x86::AccessKind::Fetch && ctx.paging.fetch_sets_id()) ec |= x86::pfec::I;
      r.status = AccessResult::Status::Fault;
      r.fault = x86::Fault::page_fault(ec, op.addr);
      print(op, r);
      return true;
    }
    r.gpa = e->gpa + (op.addr - base);
    const uint64_t gfn = r.gpa >> x86::PAGE_SHIFT;
    guest::Memslot* slot = vm_.memslots().find(gfn);
    if (!slot) {
      r.status = AccessResult::Status::Mmio;
    } else if (kind == x86::AccessKind::Write && slot->readonly()) {
      r.status = AccessResult::Status::ReadOnly;
    } else {
      uint8_t* host = slot->host_page(gfn) + (r.gpa & x86::PAGE_OFFSET_MASK);
      if (kind == x86::AccessKind::Read) r.value = guest::GuestMemory::load(host, op.width);
      if (kind == x86::AccessKind::Write) {
        guest::GuestMemory::store(host, op.width, op.value);
        slot->mark_dirty(gfn);
      }
      slot->mark_accessed(gfn);
    }
    print(op, r);
    return true;
  }

  void fill(const Op& op) {
    const mmu::VcpuContext& ctx = vm_.vcpu(op.id).context();  // an access changes none of it
    if (!translatable(ctx, op.addr)) return replayer_.apply(op);
    ProbePort port(vm_.memslots());
    const guest::AccessMode m{kind_of(op), ctx.state.cpl == 3, ctx.state.ac, ctx.state.pkru};
    const guest::WalkResult w = guest::walk_guest(ctx.paging, ctx.pdptes, port, op.addr, m);
    replayer_.apply(op);
    if (!w.ok) return;
    insert(op.id, ctx, op.addr, w.walk);
    if (w.walk.level != 1) return;
    // Prefetch neighbouring PTEs that a walk would use without setting an A bit (KVM's
    // pte_prefetch), whatever the permissions: they are checked at every access.
    const unsigned bits = ctx.paging.mode() == PagingMode::Bits32 ? 10 : 9;
    const uint64_t n = 1ull << bits, i0 = (op.addr >> x86::PAGE_SHIFT) & (n - 1);
    for (uint64_t j = i0 >= 4 ? i0 - 4 : 0; j <= i0 + 4 && j < n; ++j) {
      if (j == i0) continue;
      const uint64_t gva = (op.addr & ~((n - 1) << x86::PAGE_SHIFT) & ~x86::PAGE_OFFSET_MASK) | (j << x86::PAGE_SHIFT);
      ProbePort p(vm_.memslots());
      const guest::AccessMode any{x86::AccessKind::Read, false, true, 0};  // no permission check fails
      const guest::WalkResult pw = guest::walk_guest(ctx.paging, ctx.pdptes, p, gva, any);
      if (pw.ok && p.updates == 0 && pw.walk.level == 1) insert(op.id, ctx, gva, pw.walk);
    }
  }

  void insert(uint32_t vcpu, const mmu::VcpuContext& ctx, uint64_t gva, const guest::GuestWalk& w) {
    const uint64_t size = w.level == 1 ? x86::PAGE_SIZE
                          : w.level == 3 ? x86::SIZE_1G
                          : ctx.paging.mode() == PagingMode::Bits32 ? x86::SIZE_4M
                                                                     : x86::SIZE_2M;
    Entry e;
    e.gpa = w.gpa - (gva & (size - 1));
    e.acc = w.acc;
    e.pkey = w.pkey;
    e.global = w.pte[w.level] & x86::pte::G;
    e.dirty = w.pte[w.level] & x86::pte::D;
    for (unsigned l = w.root_level; l >= w.level && l > 0; --l) e.table_gfns.push_back(w.pte_gpa[l] >> x86::PAGE_SHIFT);
    auto& t = tlb_[vcpu];
    if (t.size() > 8192) t.clear();  // an eviction
    t[Key{size, gva & ~(size - 1)}] = std::move(e);
  }

  // The same JSON as Replayer prints for an access.
  void print(const Op& op, const AccessResult& r) {
    replayer_.flush();
    JsonLines j(out_);
    j.begin(op.line, op_name(op.kind));
    switch (r.status) {
      case AccessResult::Status::Ok:
        j.boolean("ok", true);
        j.hex("gpa", r.gpa);
        if (op.kind == OpKind::Read) j.hex("value", r.value);
        break;
      case AccessResult::Status::Fault:
        j.boolean("ok", false);
        j.raw("fault", fmt::format("{{\"vector\":{},\"error_code\":\"0x{:x}\",\"address\":\"0x{:x}\"}}", r.fault.vector,
                                   r.fault.error_code, r.fault.address));
        break;
      case AccessResult::Status::Mmio:
      case AccessResult::Status::ReadOnly:
        j.boolean("ok", false);
        j.boolean("mmio", true);
        if (r.status == AccessResult::Status::ReadOnly) j.boolean("readonly", true);
        j.hex("gpa", r.gpa);
        break;
      default: break;  // nothing else comes out of hit()
    }
    j.end();
  }

  Vm vm_{VmConfig{MmuKind::None}};
  Replayer replayer_;
  std::FILE* out_;
  std::map<uint32_t, std::map<Key, Entry>> tlb_;
  uint64_t hits_ = 0;
};

template <class Apply>
void replay_ops(const std::vector<Op>& ops, Replay& r, Apply&& apply) {
  size_t k = 0;
  try {
    for (; k < ops.size(); ++k) apply(ops[k]);
  } catch (const std::exception& e) {
    r.error = e.what();
    r.error_line = ops[k].line;
  }
}

// Replays with `config`; `available` is false when that mode cannot be created yet.
Replay replay_mode(const VmConfig& config, const std::vector<Op>& ops) {
  Replay r;
  std::unique_ptr<Vm> vm;
  try {
    vm = std::make_unique<Vm>(config);
  } catch (const UsageError& e) {
    if (std::string_view(e.what()).find("not implemented") == std::string_view::npos) throw;
    r.available = false;
    return r;
  }
  MemoryFile out;
  {
    Replayer replayer(*vm, out.get());
    replay_ops(ops, r, [&](const Op& op) { replayer.apply(op); });
    replayer.flush();
    r.summary = replayer.summary();
  }
  r.lines = out.lines();
  return r;
}

Replay replay_mode(MmuKind kind, const std::vector<Op>& ops) {
  VmConfig config;
  config.mmu = kind;
  return replay_mode(config, ops);
}

// The engines compared with the reference, each under the name its reports use. Add option
// variants here (e.g. another dirty-log mode) to hold them to the same oracle.
struct Engine {
  std::string name;
  VmConfig config;
};
std::vector<Engine> engines() {
  std::vector<Engine> v;
  for (MmuKind kind : {MmuKind::Tdp, MmuKind::Shadow}) {
    VmConfig c;
    c.mmu = kind;
    v.push_back(Engine{name(kind), c});
  }
  // TDP's other dirty-logging configurations: D bits instead of write protection, lazy splits.
  VmConfig dbit;
  dbit.mmu = MmuKind::Tdp;
  dbit.tdp.dirty_log = mmu::DirtyLogMode::DirtyBit;
  dbit.tdp.eager_split = false;
  v.push_back(Engine{"tdp --dirty-log=dbit --eager-split=off", dbit});
  // Shadow paging that emulates every write to a guest table, and one held to KVM's smallest
  // page limit, so pages are recycled under the guest all the time.
  VmConfig emulate_all;
  emulate_all.mmu = MmuKind::Shadow;
  emulate_all.shadow.unsync = false;
  v.push_back(Engine{"shadow --unsync=off", emulate_all});
  VmConfig small;
  small.mmu = MmuKind::Shadow;
  small.shadow.max_mmu_pages = mmu::MIN_MAX_MMU_PAGES;
  v.push_back(Engine{"shadow --max-mmu-pages=64", small});
  return v;
}

Replay replay_model(const std::vector<Op>& ops) {
  Replay r;
  MemoryFile out;
  {
    CachingModel model(out.get());
    replay_ops(ops, r, [&](const Op& op) { model.apply(op); });
    model.flush();
    r.summary = model.summary();
    r.model_hits = model.hits();
  }
  r.lines = out.lines();
  return r;
}

// ---- comparing ----------------------------------------------------------------------------------
using test::SlotLayout;

// The memslots at each `age` op (by line), to judge the gfns an engine may add.
std::map<uint64_t, SlotLayout> age_layouts(const std::vector<Op>& ops) {
  std::map<uint64_t, SlotLayout> out;
  SlotLayout now;
  for (const Op& op : ops) {
    if (op.kind == OpKind::Age) out[op.line] = now;
    now.apply(op);
  }
  return out;
}

struct Difference {
  size_t index = 0;  // of the output line
  uint64_t line = 0;  // of the op
  std::string what, reference, engine;
};

uint64_t line_of(const std::string& text) {
  try {
    return json::parse(text).value("line", uint64_t{0});
  } catch (const std::exception&) {
    return 0;
  }
}

std::optional<Difference> compare_lines(const std::vector<std::string>& ref, const std::vector<std::string>& eng,
                                        const std::map<uint64_t, SlotLayout>& layouts) {
  const size_t n = std::max(ref.size(), eng.size());
  for (size_t i = 0; i < n; ++i) {
    if (i >= ref.size()) return Difference{i, line_of(eng[i]), "the engine printed a line more", "(nothing)", eng[i]};
    if (i >= eng.size()) return Difference{i, line_of(ref[i]), "the engine printed a line less", ref[i], "(nothing)"};
    if (ref[i] == eng[i]) continue;
    json a, b;
    try {
      a = json::parse(ref[i]);
      b = json::parse(eng[i]);
    } catch (const std::exception& e) {
      return Difference{i, line_of(ref[i]), std::string("not JSON: ") + e.what(), ref[i], eng[i]};
    }
    test::normalize_result(a);
    test::normalize_result(b);
    const uint64_t line = a.value("line", uint64_t{0});
    if (a.value("op", "") == "age" && b.value("op", "") == "age" && a["line"] == b["line"]) {
      if (skip_age()) continue;
      auto it = layouts.find(line);
      if (auto why = test::age_difference(a, b, it != layouts.end() ? it->second : SlotLayout{}))
        return Difference{i, line, "age: " + *why, ref[i], eng[i]};
      continue;
    }
    if (a != b) return Difference{i, line, "results differ", ref[i], eng[i]};
  }
  return std::nullopt;
}

// The first audit that is not ok.
std::optional<std::string> failed_audit(const std::vector<std::string>& lines) {
  for (const std::string& l : lines) {
    if (l.find("\"op\":\"audit\"") == std::string::npos) continue;
    if (l.find("\"ok\":true") == std::string::npos) return l;
  }
  return std::nullopt;
}

// ---- reporting ----------------------------------------------------------------------------------
std::string write_reproducer(const RandomWorkload& w, std::string_view mode, uint64_t upto_line) {
  std::vector<Op> ops;
  for (const Op& op : w.ops())
    if (upto_line == 0 || op.line <= upto_line) ops.push_back(op);
  const std::string path = ::testing::TempDir() + fmt::format("vmmu-equivalence-seed{}-{}.vmt", w.params().seed, mode);
  std::ofstream f(path);
  write_vmt(f, ops, fmt::format("random workload {}; differs in --mmu={} at line {}", w.params().describe(), mode, upto_line));
  return path;
}

std::string op_text(const RandomWorkload& w, uint64_t line) {
  for (const Op& op : w.ops())
    if (op.line == line) return format_op(op);
  return "?";
}

std::string report(const RandomWorkload& w, std::string_view mode, const Difference& d) {
  const std::string path = write_reproducer(w, mode, d.line);
  const std::string how = mode == "model" ? std::string("the caching model lives in this test")
                                           : fmt::format("replay it with `vmmu replay FILE --mmu={}` and `--mmu=none`", mode);
  return fmt::format(
      "seed {}: --mmu={} differs from --mmu=none at line {} `{}`: {}\n  none: {}\n  {}: {}\n  params: {}\n  reproducer: {}\n"
      "  ({}; rerun this workload with VMMU_EQUIV_SEED={})",
      w.params().seed, mode, d.line, op_text(w, d.line), d.what, d.reference, mode, d.engine, w.params().describe(), path, how,
      w.params().seed);
}

std::string report_stop(const RandomWorkload& w, std::string_view mode, const Replay& r) {
  const std::string path = write_reproducer(w, mode, r.error_line);
  return fmt::format("seed {}: --mmu={} stopped at line {} `{}`: {}\n  params: {}\n  reproducer: {}", w.params().seed, mode,
                     r.error_line, op_text(w, r.error_line), r.error, w.params().describe(), path);
}

std::string report_audit(const RandomWorkload& w, std::string_view mode, const std::string& line) {
  const uint64_t l = line_of(line);
  const std::string path = write_reproducer(w, mode, l);
  return fmt::format("seed {}: --mmu={} fails its audit at line {}: {}\n  params: {}\n  reproducer: {}", w.params().seed, mode, l,
                     line, w.params().describe(), path);
}

// Replays one workload in every mode there is and compares; "" when everything agrees.
std::string check_workload(const RandomWorkload& w, uint64_t* model_hits = nullptr) {
  const std::vector<Op>& ops = w.ops();
  const Replay ref = replay_mode(MmuKind::None, ops);
  if (!ref.error.empty()) return report_stop(w, "none", ref);
  if (auto bad = failed_audit(ref.lines)) return report_audit(w, "none", *bad);
  const auto layouts = age_layouts(ops);

  // The caching model: a difference here means the generator broke the cached-translation rule.
  const Replay model = replay_model(ops);
  if (model_hits) *model_hits = model.model_hits;
  if (!model.error.empty()) return report_stop(w, "model", model);
  if (auto d = compare_lines(ref.lines, model.lines, layouts))
    return report(w, "model", *d) + "\n  (the caching model differs: the generator broke the cached-translation rule)";

  bool engine = false;
  for (const Engine& e : engines()) {
    const Replay r = replay_mode(e.config, ops);
    if (!r.available) continue;
    engine = true;
    if (!r.error.empty()) return report_stop(w, e.name, r);
    if (auto bad = failed_audit(r.lines)) return report_audit(w, e.name, *bad);
    if (auto d = compare_lines(ref.lines, r.lines, layouts)) return report(w, e.name, *d);
  }
  if (!engine) {  // until an engine exists: the reference against itself
    const Replay again = replay_mode(MmuKind::None, ops);
    if (!again.error.empty()) return report_stop(w, "none", again);
    if (auto d = compare_lines(ref.lines, again.lines, layouts)) return report(w, "none", *d);
  }
  return "";
}

std::string check_seed(uint64_t seed, uint64_t* model_hits = nullptr, uint64_t* ops = nullptr) {
  const RandomWorkloadParams p = params_for_seed(seed);
  try {
    const RandomWorkload w(p);
    if (ops) *ops += w.ops().size();
    if (std::getenv("VMMU_EQUIV_WRITE")) write_reproducer(w, "any", 0);  // to look at one by hand
    return check_workload(w, model_hits);
  } catch (const std::exception& e) {
    return fmt::format("seed {}: generating the workload failed: {}\n  params: {}", seed, e.what(), p.describe());
  }
}

// ---- the oracle ---------------------------------------------------------------------------------
class Equivalence : public ::testing::TestWithParam<int> {};

TEST_P(Equivalence, EveryModePrintsWhatTheReferencePrints) {
  if (const auto seed = seed_override()) {
    if (GetParam() != 0) GTEST_SKIP() << "VMMU_EQUIV_SEED runs in shard 0";
    const std::string failure = check_seed(*seed);
    EXPECT_TRUE(failure.empty()) << failure;
    return;
  }
  const auto n = static_cast<uint64_t>(std::ceil(WORKLOADS_PER_SHARD * scale()));
  uint64_t hits = 0, ops = 0;
  for (uint64_t k = 0; k < n; ++k) {
    const uint64_t seed = 1 + static_cast<uint64_t>(GetParam()) + SHARDS * k;
    uint64_t h = 0;
    const std::string failure = check_seed(seed, &h, &ops);
    hits += h;
    ASSERT_TRUE(failure.empty()) << failure;
  }
  // Each op ran under the reference and under every engine configuration (engines()).
  RecordProperty("workloads", std::to_string(n));
  RecordProperty("ops", std::to_string(ops));
  std::printf("equivalence shard %d: %llu workloads, %llu ops, each under none and %zu engine configurations\n", GetParam(),
              static_cast<unsigned long long>(n), static_cast<unsigned long long>(ops), engines().size());
  // The model must have cached something, or it proves nothing about the generator.
  RecordProperty("model_hits", std::to_string(hits));
  EXPECT_GT(hits, n * 10);
}

INSTANTIATE_TEST_SUITE_P(Shards, Equivalence, ::testing::Range(0, SHARDS));

// ---- the harness itself -------------------------------------------------------------------------
const RandomWorkload& sample() {
  static const RandomWorkload w([] {
    RandomWorkloadParams p = params_for_seed(5);
    p.modes = {PagingMode::Level4, PagingMode::Pae};
    p.ops = 300;
    return p;
  }());
  return w;
}

TEST(EquivalenceHarness, FindsACorruptedLine) {
  const RandomWorkload& w = sample();
  const Replay ref = replay_mode(MmuKind::None, w.ops());
  ASSERT_TRUE(ref.error.empty()) << ref.error;
  const auto layouts = age_layouts(w.ops());
  EXPECT_FALSE(compare_lines(ref.lines, ref.lines, layouts));

  // A different value read.
  std::vector<std::string> bad = ref.lines;
  size_t at = 0;
  for (; at < bad.size(); ++at)
    if (bad[at].find("\"op\":\"read\",\"ok\":true") != std::string::npos) break;
  ASSERT_LT(at, bad.size());
  json j = json::parse(bad[at]);
  j["value"] = fmt::format("0x{:x}", std::stoull(j["value"].get<std::string>(), nullptr, 16) ^ 1);
  bad[at] = j.dump();
  auto d = compare_lines(ref.lines, bad, layouts);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->index, at);
  EXPECT_EQ(d->line, line_of(ref.lines[at]));
  EXPECT_EQ(d->what, "results differ");

  // The report names the seed and the op, and its reproducer replays up to that op.
  const std::string text = report(w, "test", *d);
  EXPECT_NE(text.find(fmt::format("seed {}", w.params().seed)), std::string::npos) << text;
  EXPECT_NE(text.find(op_text(w, d->line)), std::string::npos) << text;
  std::ifstream f(write_reproducer(w, "test", d->line));
  ASSERT_TRUE(f.good());
  Vm vm;
  MemoryFile out;
  ASSERT_EQ(replay_stream(f, "repro.vmt", vm, out.get(), stderr), 0);
  const std::vector<std::string> lines = out.lines();
  ASSERT_EQ(lines.size(), at + 1);
  EXPECT_EQ(lines.back(), ref.lines[at]);

  // A line missing, or one more.
  bad = ref.lines;
  bad.pop_back();
  d = compare_lines(ref.lines, bad, layouts);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->index, ref.lines.size() - 1);
  bad = ref.lines;
  bad.push_back(bad.back());
  EXPECT_TRUE(compare_lines(ref.lines, bad, layouts));
  // A fault instead of a translation.
  bad = ref.lines;
  bad[at] = fmt::format(R"({{"line":{},"op":"read","ok":false,"fault":{{"vector":14,"error_code":"0x0","address":"0x0"}}}})",
                        line_of(ref.lines[at]));
  EXPECT_TRUE(compare_lines(ref.lines, bad, layouts));
}

TEST(EquivalenceHarness, IgnoresStatsContentsAndViolationText) {
  const std::vector<std::string> ref = {
      R"({"line":3,"op":"stats","stats":{"pf_fixed":1},"memory":{"mapping_total":0}})",
      R"({"line":4,"op":"audit","ok":false,"violations":["a"]})",
  };
  const std::vector<std::string> eng = {
      R"({"line":3,"op":"stats","stats":{"pf_fixed":7,"x":1},"memory":{"mapping_total":4096}})",
      R"({"line":4,"op":"audit","ok":false,"violations":["b","c"]})",
  };
  EXPECT_FALSE(compare_lines(ref, eng, {}));
  EXPECT_TRUE(compare_lines(ref, {ref[0], R"({"line":4,"op":"audit","ok":true})"}, {}));
  EXPECT_TRUE(compare_lines(ref, {R"({"line":3,"op":"stats","stats":{}})", ref[1]}, {}));  // no "memory"
  EXPECT_TRUE(failed_audit(ref));
  EXPECT_FALSE(failed_audit({R"({"line":4,"op":"audit","ok":true})"}));
}

TEST(EquivalenceHarness, AgeMayOnlyAddNeighboursInAHostHugeMapping) {
  if (skip_age()) GTEST_SKIP() << "VMMU_EQUIV_SKIP_AGE is set";
  // Slot 1: host=2m at gfn 0x200 (2 MiB); slot 2: host=4k at 0x1000; slot 3: host=1g at 0x40000.
  std::map<uint64_t, SlotLayout> layouts;
  auto slot = [](uint32_t id, uint64_t gfn, uint64_t npages, guest::HostPageSize host) {
    Op op;
    op.kind = OpKind::Memslot;
    op.id = id;
    op.addr = gfn << x86::PAGE_SHIFT;
    op.size = npages << x86::PAGE_SHIFT;
    op.host_page = host;
    return op;
  };
  layouts[10].apply(slot(1, 0x200, 0x400, guest::HostPageSize::Size2M));
  layouts[10].apply(slot(2, 0x1000, 0x10, guest::HostPageSize::Size4K));
  layouts[10].apply(slot(3, 0x40000, 0x40000, guest::HostPageSize::Size1G));
  auto age = [](std::vector<uint64_t> gfns) { return fmt::format(R"({{"line":10,"op":"age","accessed":{}}})", hex_array(gfns)); };
  auto differs = [&](std::vector<uint64_t> ref, std::vector<uint64_t> eng) {
    return compare_lines({age(ref)}, {age(eng)}, layouts).has_value();
  };
  EXPECT_FALSE(differs({0x201}, {0x201}));
  EXPECT_FALSE(differs({0x201}, {0x200, 0x201, 0x3ff}));  // the same 2 MiB region of a host=2m slot
  EXPECT_TRUE(differs({0x201}, {0x201, 0x400}));          // the next 2 MiB region
  EXPECT_TRUE(differs({0x201, 0x202}, {0x201}));          // a gfn missing
  EXPECT_TRUE(differs({0x1001}, {0x1001, 0x1002}));       // host=4k: nothing may be added
  EXPECT_TRUE(differs({}, {0x201}));                      // nothing to share a mapping with
  EXPECT_FALSE(differs({0x40001}, {0x40001, 0x7ffff}));   // host=1g: the same 1 GiB region
  EXPECT_TRUE(differs({0x201}, {0x202, 0x201}));          // not sorted
  EXPECT_TRUE(compare_lines({age({1})}, {R"({"line":11,"op":"age","accessed":["0x1"]})"}, layouts).has_value());
}

TEST(EquivalenceHarness, TheCachingModelCatchesAMissingInvlpg) {
  // gva 0x1000 -> 0x5000, read, then the PTE is re-pointed at 0x6000 without an INVLPG: a TLB
  // may keep the old translation, so the model differs from none. With the INVLPG it agrees.
  auto text = [](bool invlpg) {
    return std::string(R"(vmt 1
memslot 0 0 1M
vcpu 0
poke 0x1000 8 0x2007
poke 0x2000 8 0x3007
poke 0x3000 8 0x4007
poke 0x4008 8 0x5007
poke 0x5000 8 0x55
poke 0x6000 8 0x66
regs 0 cr0=0x80010001 cr4=0x20 efer=0x100 cr3=0x1000
read 0 0x1000
poke 0x4008 8 0x6007
)") + (invlpg ? "invlpg 0 0x1000\n" : "") +
           "read 0 0x1000\n";
  };
  for (bool invlpg : {false, true}) {
    std::istringstream in(text(invlpg));
    VmtReader reader(in);
    std::vector<Op> ops;
    Op op;
    while (reader.next(op)) ops.push_back(op);
    const Replay ref = replay_mode(MmuKind::None, ops), model = replay_model(ops);
    EXPECT_EQ(model.model_hits, invlpg ? 0u : 1u);
    EXPECT_EQ(compare_lines(ref.lines, model.lines, {}).has_value(), !invlpg);
  }
}

// ---- the generator ------------------------------------------------------------------------------
TEST(RandomWorkloadTest, IsDeterministicForASeed) {
  const RandomWorkloadParams p = params_for_seed(42);
  const RandomWorkload a(p), b(p);
  ASSERT_EQ(a.ops().size(), b.ops().size());
  for (size_t i = 0; i < a.ops().size(); ++i) {
    ASSERT_EQ(a.ops()[i].line, b.ops()[i].line);
    ASSERT_EQ(format_op(a.ops()[i]), format_op(b.ops()[i])) << "op " << i;
  }
  RandomWorkloadParams q = p;
  q.seed = 43;
  const RandomWorkload c(q);
  std::ostringstream sa, sc;
  write_vmt(sa, a.ops());
  write_vmt(sc, c.ops());
  EXPECT_NE(sa.str(), sc.str());
}

TEST(RandomWorkloadTest, TextRoundTripsThroughTheReader) {
  for (uint64_t seed : {7, 8, 9}) {
    RandomWorkloadParams p = params_for_seed(seed);
    p.modes = {PagingMode::Off, PagingMode::Bits32, PagingMode::Pae, PagingMode::Level4, PagingMode::Level5};
    const RandomWorkload w(p);
    std::ostringstream text;
    write_vmt(text, w.ops(), p.describe());
    std::istringstream in(text.str());
    VmtReader reader(in);
    std::vector<Op> back;
    Op op;
    while (reader.next(op)) back.push_back(op);
    ASSERT_EQ(back.size(), w.ops().size());
    for (size_t i = 0; i < back.size(); ++i) {
      ASSERT_EQ(back[i].line, w.ops()[i].line) << format_op(w.ops()[i]);
      ASSERT_EQ(format_op(back[i]), format_op(w.ops()[i]));
    }
    // Replaying the text prints what replaying the ops prints.
    std::istringstream again(text.str());
    Vm vm;
    MemoryFile out;
    ASSERT_EQ(replay_stream(again, "w.vmt", vm, out.get(), stderr), 0);
    EXPECT_EQ(out.lines(), replay_mode(MmuKind::None, w.ops()).lines);
  }
}

TEST(RandomWorkloadTest, CoversTheContract) {
  RandomWorkloadCoverage cov;
  std::map<std::string, uint64_t> ops, modes;
  std::set<uint32_t> error_codes;
  uint64_t gp = 0, mmio = 0, readonly = 0, pdpte_gp = 0, aged = 0, dirty = 0, values = 0;
  for (uint64_t seed = 100; seed < 124; ++seed) {
    RandomWorkloadParams p = params_for_seed(seed);
    if (seed % 2) p.modes = {PagingMode::Off, PagingMode::Bits32, PagingMode::Pae, PagingMode::Level4, PagingMode::Level5};
    p.ops = 400;
    const RandomWorkload w(p);
    const RandomWorkloadCoverage& c = w.coverage();
    cov.guest_table_writes += c.guest_table_writes;
    cov.table_pokes += c.table_pokes;
    cov.entry_changes += c.entry_changes;
    cov.invlpgs += c.invlpgs;
    cov.flushes += c.flushes;
    cov.huge_leaves += c.huge_leaves;
    cov.global_leaves += c.global_leaves;
    cov.reserved_entries += c.reserved_entries;
    cov.windows += c.windows;
    cov.alias_leaves += c.alias_leaves;
    cov.mode_switches += c.mode_switches;
    cov.control_bit_changes += c.control_bit_changes;
    cov.cr3_switches += c.cr3_switches;
    cov.memslot_changes += c.memslot_changes;
    cov.table_slot_changes += c.table_slot_changes;
    const Replay r = replay_mode(MmuKind::None, w.ops());
    ASSERT_TRUE(r.error.empty()) << r.error;
    for (const auto& [k, n] : r.summary.ops_by_kind) ops[k] += n;
    for (const auto& [k, n] : r.summary.accesses_by_mode) modes[k] += n;
    for (const auto& [ec, n] : r.summary.pf_by_error_code) error_codes.insert(ec);
    gp += r.summary.gp_faults;
    mmio += r.summary.mmio;
    readonly += r.summary.readonly_writes;
    pdpte_gp += r.summary.pdpte_gp;
    for (const std::string& l : r.lines) {
      if (l.find("\"op\":\"age\"") != std::string::npos && l.find("\"accessed\":[]") == std::string::npos) ++aged;
      if (l.find("\"op\":\"dirty-log\"") != std::string::npos && l.find("\"gfns\":[]") == std::string::npos) ++dirty;
      if (l.find("\"op\":\"read\",\"ok\":true") != std::string::npos && l.find("\"value\":\"0x0\"") == std::string::npos) ++values;
    }
  }
  for (OpKind k : {OpKind::Cpu, OpKind::Memslot, OpKind::MemslotDelete, OpKind::MemslotMove, OpKind::Vcpu, OpKind::Regs, OpKind::Cr3,
                   OpKind::Poke, OpKind::Read, OpKind::Write, OpKind::Fetch, OpKind::Invlpg, OpKind::Flush, OpKind::Peek,
                   OpKind::DirtyLog, OpKind::Unmap, OpKind::Age, OpKind::Audit, OpKind::Stats}) {
    EXPECT_GT(ops[std::string(op_name(k))], 0u) << op_name(k);
  }
  for (const char* m : {"off", "32-bit", "pae", "4-level", "5-level"}) EXPECT_GT(modes[m], 50u) << m;
  auto has_ec = [&](uint32_t bits) {
    return std::any_of(error_codes.begin(), error_codes.end(), [&](uint32_t ec) { return (ec & bits) == bits; });
  };
  EXPECT_TRUE(has_ec(x86::pfec::P | x86::pfec::RSVD)) << "reserved-bit faults";
  EXPECT_TRUE(has_ec(x86::pfec::P | x86::pfec::PK)) << "protection-key faults";
  EXPECT_TRUE(has_ec(x86::pfec::I)) << "fetch faults with I/D";
  EXPECT_TRUE(has_ec(x86::pfec::P | x86::pfec::W)) << "write-protection faults";
  EXPECT_TRUE(has_ec(x86::pfec::U)) << "user faults";
  EXPECT_TRUE(has_ec(0)) << "not-present faults";
  EXPECT_GT(gp, 0u) << "non-canonical #GP";
  EXPECT_GT(mmio, 0u);
  EXPECT_GT(readonly, 0u);
  EXPECT_GT(pdpte_gp, 0u) << "PDPTE loads with reserved bits";
  EXPECT_GT(aged, 0u);
  EXPECT_GT(dirty, 0u);
  EXPECT_GT(values, 0u);
  EXPECT_GT(cov.guest_table_writes, 0u);
  EXPECT_GT(cov.table_pokes, 0u);
  EXPECT_GT(cov.entry_changes, 0u);
  EXPECT_GT(cov.invlpgs, 0u);
  EXPECT_GT(cov.flushes, 0u);
  EXPECT_GT(cov.huge_leaves, 0u);
  EXPECT_GT(cov.global_leaves, 0u);
  EXPECT_GT(cov.reserved_entries, 0u);
  EXPECT_GT(cov.windows, 0u);
  EXPECT_GT(cov.alias_leaves, 0u);
  EXPECT_GT(cov.mode_switches, 0u);
  EXPECT_GT(cov.control_bit_changes, 0u);
  EXPECT_GT(cov.cr3_switches, 0u);
  EXPECT_GT(cov.memslot_changes, 0u);
  EXPECT_GT(cov.table_slot_changes, 0u);
}

TEST(RandomWorkloadTest, HonoursItsParameters) {
  RandomWorkloadParams p;
  p.seed = 11;
  p.ops = 150;
  p.vcpus = 2;
  p.modes = {PagingMode::Level4};
  RandomWorkloadFeatures& f = p.features;
  f.huge_pages = f.global_pages = f.memslot_changes = f.dirty_log = f.unmap = f.age = f.stats = f.peek = false;
  f.address_spaces = f.readonly_slot = false;
  p.audit_every_op = true;
  const RandomWorkload w(p);
  uint64_t main = 0, audits = 0;
  for (const Op& op : w.ops()) {
    EXPECT_NE(op.kind, OpKind::MemslotDelete);
    EXPECT_NE(op.kind, OpKind::MemslotMove);
    EXPECT_NE(op.kind, OpKind::DirtyLog);
    EXPECT_NE(op.kind, OpKind::Unmap);
    EXPECT_NE(op.kind, OpKind::Age);
    EXPECT_NE(op.kind, OpKind::Stats);
    EXPECT_NE(op.kind, OpKind::Cr3);
    if (op.kind == OpKind::Memslot) {
      EXPECT_EQ(op.host_page, guest::HostPageSize::Size4K);
    }
    if (op.kind == OpKind::Vcpu) {
      EXPECT_LT(op.id, 2u);
    }
    if (op.kind == OpKind::Regs && op.regs.cr4) {
      EXPECT_EQ(*op.regs.cr4 & x86::cr4::PGE, 0u);
      EXPECT_NE(*op.regs.cr4 & x86::cr4::PAE, 0u);
    }
    if (op.kind == OpKind::Audit) ++audits;
    if (op.kind == OpKind::Read || op.kind == OpKind::Write || op.kind == OpKind::Fetch) ++main;
  }
  EXPECT_GT(main, 50u);
  EXPECT_GT(audits, 140u);
  // Lines are consecutive from 3 (line 2 is write_vmt's comment).
  for (size_t i = 0; i < w.ops().size(); ++i) ASSERT_EQ(w.ops()[i].line, i + 3);
  EXPECT_TRUE(check_workload(w).empty());
}

// Self-maps (a table entry pointing at its own table, as Windows' recursive PML4 entry): the
// workloads of the oracle read page tables through them and write entries through them, in every
// paging format, and a workload without the feature has none.
TEST(RandomWorkloadTest, ReachesPageTablesThroughSelfMaps) {
  uint64_t self_maps = 0, accesses = 0, writes = 0;
  for (uint64_t seed = 1; seed <= 48; ++seed) {
    RandomWorkloadParams p = params_for_seed(seed);
    if (seed % 2) p.modes = {PagingMode::Bits32, PagingMode::Pae, PagingMode::Level4, PagingMode::Level5};
    const RandomWorkload w(p);
    self_maps += w.coverage().self_maps;
    accesses += w.coverage().self_map_accesses;
    writes += w.coverage().self_map_writes;
  }
  EXPECT_GT(self_maps, 48u);
  EXPECT_GT(accesses, 200u);
  EXPECT_GT(writes, 40u);

  // In each format alone: writes through self-maps, and the cached-translation rule kept (the
  // caching model agrees with the reference; the engines are the shards' business).
  for (PagingMode m : {PagingMode::Bits32, PagingMode::Pae, PagingMode::Level4, PagingMode::Level5}) {
    uint64_t w_count = 0;
    for (uint64_t seed = 200; seed < 206; ++seed) {
      RandomWorkloadParams p = params_for_seed(seed);
      p.modes = {m};
      p.ops = 400;
      const RandomWorkload w(p);
      w_count += w.coverage().self_map_writes;
      const Replay ref = replay_mode(MmuKind::None, w.ops()), model = replay_model(w.ops());
      ASSERT_TRUE(ref.error.empty() && model.error.empty()) << ref.error << model.error;
      const auto d = compare_lines(ref.lines, model.lines, age_layouts(w.ops()));
      EXPECT_FALSE(d) << x86::name(m) << ": " << (d ? report(w, "model", *d) : "");
    }
    EXPECT_GT(w_count, 0u) << x86::name(m);
  }

  RandomWorkloadParams off = params_for_seed(3);
  off.features.self_map = false;
  const RandomWorkload w(off);
  EXPECT_EQ(w.coverage().self_maps, 0u);
  EXPECT_EQ(w.coverage().self_map_accesses, 0u);
  EXPECT_NE(off.describe().find("-self_map"), std::string::npos);
}

// Not part of the oracle's run: every workload of the oracle's seeds (VMMU_EQUIV_SCALE included)
// checked without stopping at the first difference, with every difference listed and the
// self-map figures summed. Run it with --gtest_also_run_disabled_tests to survey a change.
TEST(EquivalenceSurvey, DISABLED_EverySeed) {
  const auto n = static_cast<uint64_t>(std::ceil(WORKLOADS_PER_SHARD * scale())) * SHARDS;
  uint64_t failures = 0, self_maps = 0, accesses = 0, writes = 0;
  for (uint64_t seed = 1; seed <= n; ++seed) {
    const RandomWorkloadParams p = params_for_seed(seed);
    const RandomWorkload w(p);
    self_maps += w.coverage().self_maps;
    accesses += w.coverage().self_map_accesses;
    writes += w.coverage().self_map_writes;
    const std::string failure = check_workload(w);
    if (!failure.empty()) {
      ++failures;
      ADD_FAILURE() << failure;
    }
  }
  std::printf("%llu workloads: %llu differ; %llu self-maps, %llu accesses and %llu table writes through them\n",
              static_cast<unsigned long long>(n), static_cast<unsigned long long>(failures),
              static_cast<unsigned long long>(self_maps), static_cast<unsigned long long>(accesses),
              static_cast<unsigned long long>(writes));
}

}  // namespace
}  // namespace vmmu::sim
