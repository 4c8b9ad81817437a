#include "sim/replayer.hpp"

#include <cstdlib>
#include <new>

#include "sim/tlb_replay.hpp"
#include "sim/vmt_reader.hpp"

namespace vmmu::sim {

Replayer::Replayer(Vm& vm, std::FILE* out, const ReplayOptions& options)
    : vm_(vm), out_(out), print_all_(out && options.results == ReplayResults::All), print_stats_(out != nullptr) {
  if (options.tlb) {
    summary_.tlb_model = true;
    tlb_ = std::make_unique<TlbReplay>(vm, options.tlb_config, summary_.tlb);
  }
}

Replayer::~Replayer() = default;

const ReplaySummary& Replayer::summary() const {
  // Totals follow from the counters the hot loop keeps (one increment an access, not three).
  summary_.ops = summary_.accesses = 0;
  for (size_t k = 0; k < OP_KINDS; ++k) summary_.ops += ops_by_kind_[k];
  for (OpKind k : {OpKind::Read, OpKind::Write, OpKind::Fetch}) summary_.accesses += ops_by_kind_[static_cast<size_t>(k)];
  summary_.translated = summary_.accesses - summary_.page_faults - summary_.gp_faults - summary_.mmio - summary_.readonly_writes;
  summary_.ops_by_kind.clear();
  for (size_t k = 0; k < OP_KINDS; ++k)
    if (ops_by_kind_[k]) summary_.ops_by_kind[std::string(op_name(static_cast<OpKind>(k)))] = ops_by_kind_[k];
  summary_.accesses_by_mode.clear();
  for (size_t m = 0; m < PAGING_MODES; ++m)
    if (accesses_by_mode_[m]) summary_.accesses_by_mode[x86::name(static_cast<x86::PagingMode>(m))] = accesses_by_mode_[m];
  return summary_;
}

void Replayer::apply(const Op& op) {
  ++ops_by_kind_[static_cast<size_t>(op.kind)];
  try {
    execute(op);
    if (tlb_) tlb_->engine_check();  // memslot changes, dirty logging, unmap: the engine flushed
    if (op.kind != OpKind::Audit) debug_audit(op.line);
  } catch (...) {
    failed(op.line, op.kind);
  }
}

void Replayer::apply(const AccessRun& run, uint32_t& done) {
  uint32_t i = done;  // a local: `done` is stored once, not after every access
  while (i < run.count) {
    try {
      for (; i < run.count; ++i) {
        const AccessOp& a = run.ops[i];
        ++ops_by_kind_[static_cast<size_t>(a.kind)];
        access<true>(run.first_line + i, a.kind, a.id, a.addr, a.width, a.value);
        debug_audit(run.first_line + i);
      }
      if (tlb_) tlb_->engine_check();
    } catch (...) {
      done = i;
      failed(run.first_line + i, run.ops[i].kind);
      ++i;
    }
  }
  done = i;
}

void Replayer::failed(uint64_t line, OpKind kind) {
  std::string message;  // JSON
  try {
    throw;
  } catch (const UsageError& e) {
    throw ReplayError(line, std::string(op_name(kind)) + ": " + e.what());
  } catch (const HostMemoryError& e) {
    message = nlohmann::json(std::string(e.what())).dump();
  } catch (const std::bad_alloc&) {
    message = "\"host memory allocation failed\"";
  }
  ++summary_.host_errors;
  if (!print_stats_) return;
  out_.begin(line, op_name(kind));
  out_.raw("error", message);
  out_.end();
}

void Replayer::debug_audit([[maybe_unused]] uint64_t line) {
#ifndef NDEBUG
  // Debug builds check every engine invariant after every op on small guests.
  if (!small_guest()) return;
  const std::vector<std::string> v = vm_.audit();
  if (v.empty()) return;
  out_.flush();
  std::fprintf(stderr, "line %llu: the audit after this op failed: %s\n", static_cast<unsigned long long>(line), v.front().c_str());
  std::abort();
#endif
}

bool Replayer::small_guest() const {
  uint64_t pages = 0;
  for (const guest::Memslot* s : vm_.memslots().slots()) pages += s->npages();
  return pages <= (64ull << 20) >> x86::PAGE_SHIFT;
}

void Replayer::print_fault(uint64_t line, OpKind kind, const x86::Fault& f) {
  if (!print_all_) return;
  out_.begin(line, op_name(kind));
  out_.boolean("ok", false);
  if (f.vector == x86::VECTOR_PF) {
    out_.raw("fault", fmt::format("{{\"vector\":{},\"error_code\":\"0x{:x}\",\"address\":\"0x{:x}\"}}", f.vector, f.error_code, f.address));
  } else {
    out_.raw("fault", fmt::format("{{\"vector\":{},\"error_code\":\"0x{:x}\"}}", f.vector, f.error_code));
  }
  out_.end();
}

void Replayer::print_result(uint64_t line, OpKind kind, const AccessResult& r) {
  switch (r.status) {
    case AccessResult::Status::Ok:
      if (!print_all_) return;
      out_.begin(line, op_name(kind));
      out_.boolean("ok", true);
      out_.hex("gpa", r.gpa);
      if (kind == OpKind::Read) out_.hex("value", r.value);
      out_.end();
      return;
    case AccessResult::Status::Fault:
      if (r.fault.vector == x86::VECTOR_PF) {
        ++summary_.page_faults;
        ++summary_.pf_by_error_code[r.fault.error_code];
      } else {
        ++summary_.gp_faults;
      }
      print_fault(line, kind, r.fault);
      return;
    case AccessResult::Status::Retry:  // never leaves the library
    case AccessResult::Status::Mmio:
    case AccessResult::Status::ReadOnly: {
      const bool ro = r.status == AccessResult::Status::ReadOnly;
      ++(ro ? summary_.readonly_writes : summary_.mmio);
      if (!print_all_) return;
      out_.begin(line, op_name(kind));
      out_.boolean("ok", false);
      out_.boolean("mmio", true);
      if (ro) out_.boolean("readonly", true);
      out_.hex("gpa", r.gpa);
      out_.end();
      return;
    }
  }
}

Vcpu& Replayer::vcpu(uint32_t id) {
  if (id != last_vcpu_id_) [[unlikely]] {
    last_vcpu_ = &vm_.vcpu(id);  // vCPUs live as long as the Vm
    last_vcpu_id_ = id;
  }
  return *last_vcpu_;
}

template <bool WellFormed>
inline void Replayer::access(uint64_t line, OpKind op, uint32_t id, uint64_t gva, unsigned width, uint64_t value) {
  static_assert(static_cast<unsigned>(OpKind::Write) - static_cast<unsigned>(OpKind::Read) == static_cast<unsigned>(AccessKind::Write) &&
                static_cast<unsigned>(OpKind::Fetch) - static_cast<unsigned>(OpKind::Read) == static_cast<unsigned>(AccessKind::Fetch));
  Vcpu& v = vcpu(id);
  const auto kind = static_cast<AccessKind>(static_cast<unsigned>(op) - static_cast<unsigned>(OpKind::Read));
  ++accesses_by_mode_[static_cast<size_t>(v.context().paging.mode())];
  const AccessResult r = WellFormed ? v.access_well_formed(gva, kind, width, value) : v.access(gva, kind, width, value);
  if (tlb_) tlb_->access(v, gva, kind, r);
  print_access(line, op, r);
}

void Replayer::execute(const Op& op) {
  auto pdpte_fault = [&](const std::optional<x86::Fault>& f) {
    if (!f) return;
    ++summary_.pdpte_gp;
    print_fault(op.line, op.kind, *f);
  };
  switch (op.kind) {
    case OpKind::Cpu: {
      x86::CpuModel m = vm_.cpu_model();
      if (op.maxphyaddr) m.maxphyaddr = *op.maxphyaddr;
      if (op.gbpages) m.gbpages = *op.gbpages;
      if (op.la57) m.la57 = *op.la57;
      vm_.set_cpu_model(m);
      return;
    }
    case OpKind::Memslot:
      vm_.add_memslot(MemslotSpec{op.id, op.addr, op.size, op.readonly, op.log, op.host_page});
      return;
    case OpKind::MemslotDelete:
      vm_.delete_memslot(op.id);
      last_dirty_get_.erase(op.id);
      return;
    case OpKind::MemslotMove:
      vm_.move_memslot(op.id, op.addr);
      return;
    case OpKind::Vcpu:
      vm_.create_vcpu(op.id);
      return;
    case OpKind::Regs: {
      const std::optional<x86::Fault> f = vm_.vcpu(op.id).set_registers(op.regs);
      if (tlb_ && !f && op.regs.touches_paging()) tlb_->registers_changed(op.id);
      pdpte_fault(f);
      return;
    }
    case OpKind::Cr3: {
      const std::optional<x86::Fault> f = vm_.vcpu(op.id).mov_cr3(op.addr);
      if (tlb_ && !f) tlb_->cr3_loaded(op.id);
      pdpte_fault(f);
      return;
    }
    case OpKind::Flush: {
      const std::optional<x86::Fault> f = vm_.vcpu(op.id).flush();
      if (tlb_ && !f) tlb_->flushed(op.id);
      pdpte_fault(f);
      return;
    }
    case OpKind::Invlpg:
      vm_.vcpu(op.id).invlpg(op.addr);
      if (tlb_) tlb_->invlpg(op.id, op.addr);
      return;
    case OpKind::Poke:
      vm_.write_guest(op.addr, op.width, op.value);
      return;
    case OpKind::Read:
    case OpKind::Write:
    case OpKind::Fetch:
      access<false>(op.line, op.kind, op.id, op.addr, op.width, op.value);
      return;
    case OpKind::Peek: {
      const uint64_t v = vm_.read_guest(op.addr, op.width);
      if (!print_all_) return;
      out_.begin(op.line, op_name(op.kind));
      out_.hex("value", v);
      out_.end();
      return;
    }
    case OpKind::DirtyLog: {
      const guest::Memslot& slot = vm_.memslots().get(op.id);
      if (slot.readonly()) throw UsageError(fmt::format("memslot {} is read-only: it has no dirty log", op.id));
      switch (op.dirty) {
        case DirtyLogAction::Enable: vm_.set_dirty_logging(op.id, true); return;
        case DirtyLogAction::Disable: vm_.set_dirty_logging(op.id, false); return;
        case DirtyLogAction::Get: {
          const std::vector<uint64_t> gfns = vm_.dirty_gfns(op.id);
          std::vector<uint64_t>& last = last_dirty_get_[op.id];
          last.clear();
          for (uint64_t g : gfns) last.push_back(g - slot.base_gfn());
          if (!print_all_) return;
          out_.begin(op.line, op_name(op.kind));
          out_.raw("gfns", hex_array(gfns));
          out_.end();
          return;
        }
        case DirtyLogAction::Clear: {
          std::vector<uint64_t> gfns;
          if (auto it = last_dirty_get_.find(op.id); it != last_dirty_get_.end())
            for (uint64_t page : it->second) gfns.push_back(slot.base_gfn() + page);
          vm_.clear_dirty_gfns(op.id, gfns);
          return;
        }
      }
      return;
    }
    case OpKind::Unmap:
      vm_.unmap(op.addr, op.size);
      return;
    case OpKind::Age: {
      const std::vector<uint64_t> gfns = vm_.age(op.addr, op.size);
      if (!print_all_) return;
      out_.begin(op.line, op_name(op.kind));
      out_.raw("accessed", hex_array(gfns));
      out_.end();
      return;
    }
    case OpKind::Audit: {
      const std::vector<std::string> violations = vm_.audit();
      ++summary_.audits;
      if (!violations.empty()) ++summary_.audit_failures;
      if (!print_stats_) return;
      out_.begin(op.line, op_name(op.kind));
      out_.boolean("ok", violations.empty());
      if (!violations.empty()) {
        out_.raw("violations", nlohmann::json(violations).dump());
      }
      out_.end();
      return;
    }
    case OpKind::Stats: {
      if (!print_stats_) return;
      const nlohmann::ordered_json s = vm_.stats();
      out_.begin(op.line, op_name(op.kind));
      out_.raw("stats", s["stats"].dump());
      out_.raw("memory", s["memory"].dump());
      if (tlb_) out_.raw("tlb", summary_.tlb.to_json().dump());
      out_.end();
      return;
    }
  }
}

int replay_stream(std::istream& in, const std::string& file_name, Vm& vm, std::FILE* out, std::FILE* err,
                  ReplaySummary* summary, const ReplayOptions& options) {
  VmtTextSource text(in, file_name);
  return replay_stream(text, vm, out, err, summary, options);
}

int replay_stream(OpSource& in, Vm& vm, std::FILE* out, std::FILE* err, ReplaySummary* summary, const ReplayOptions& options) {
  Replayer replayer(vm, out, options);
  int status = 0;
  Op op;
  try {
    for (;;) {
      if (const AccessRun run = in.pending_accesses(); run.count) {
        uint32_t done = 0;
        try {
          replayer.apply(run, done);
        } catch (const ReplayError&) {
          in.take_accesses(done + 1);  // where() names the access that failed
          throw;
        }
        in.take_accesses(run.count);
        continue;
      }
      if (!in.next(op)) break;
      replayer.apply(op);
    }
    status = replayer.exit_status();
  } catch (const OpSourceError& e) {
    replayer.flush();
    std::fprintf(err, "%s\n", e.what());
    status = 2;
  } catch (const ReplayError& e) {
    replayer.flush();
    std::fprintf(err, "%s: %s\n", in.where(op).c_str(), e.what());
    status = 2;
  }
  replayer.flush();
  if (summary) *summary = replayer.summary();
  return status;
}

}  // namespace vmmu::sim
