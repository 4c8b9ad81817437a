#include "oracle/check.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "oracle/kvm_runner.hpp"
#include "oracle/qemu_runner.hpp"
#include "sim/replayer.hpp"
#include "sim/vmt_reader.hpp"

namespace vmmu::oracle {

using nlohmann::json;
using sim::Op;
using sim::OpKind;

std::vector<Op> parse_vmt(std::istream& in, const std::string& name) {
  std::vector<Op> ops;
  sim::VmtReader reader(in);
  try {
    for (Op op; reader.next(op);) ops.push_back(op);
  } catch (const sim::ParseError& e) {
    throw std::runtime_error(fmt::format("{}:{}: {}", name, e.line(), e.what()));
  }
  return ops;
}

namespace {

struct VmmuRun {
  std::map<uint64_t, json> by_line;
  std::vector<OpInfo> info;
};

uint64_t hex(const json& j) { return std::strtoull(j.get<std::string>().c_str(), nullptr, 16); }

// Replays the ops in a Vm of `kind`, op by op, collecting each printed result.
VmmuRun run_vmmu(const std::vector<Op>& ops, MmuKind kind) {
  VmmuRun run;
  run.info.resize(ops.size());
  char* buf = nullptr;
  std::size_t len = 0, seen = 0;
  std::FILE* out = open_memstream(&buf, &len);
  if (!out) throw std::runtime_error("open_memstream failed");
  struct Closer {
    std::FILE* f;
    char*& b;
    ~Closer() {
      std::fclose(f);
      std::free(b);
    }
  } closer{out, buf};
  VmConfig config;
  config.mmu = kind;
  Vm vm(config);
  sim::Replayer rep(vm, out);
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    try {
      rep.apply(op);
    } catch (const sim::ReplayError& e) {
      throw std::runtime_error(fmt::format("line {}: {}", e.line(), e.what()));
    }
    rep.flush();
    std::fflush(out);
    std::string fresh(buf + seen, len - seen);
    seen = len;
    std::istringstream lines(fresh);
    for (std::string l; std::getline(lines, l);) {
      if (l.empty()) continue;
      json j = json::parse(l);
      const uint64_t line = j["line"].get<uint64_t>();
      OpInfo& inf = run.info[i];
      if (j.contains("gpa")) {
        inf.gpa = hex(j["gpa"]);
        inf.mmio = j.contains("mmio");
        if (op.kind == OpKind::Fetch && !inf.mmio) inf.fetch_byte = uint8_t(vm.read_guest(*inf.gpa, 1));
      }
      if ((op.kind == OpKind::Regs || op.kind == OpKind::Cr3 || op.kind == OpKind::Flush) && j.contains("fault"))
        inf.paging_op_faulted = true;
      if (j.contains("fault") && j["fault"]["vector"].get<int>() == 14)
        inf.pf_error_code = uint32_t(hex(j["fault"]["error_code"]));
      run.by_line[line] = std::move(j);
    }
  }
  return run;
}

std::string fault_text(const Record& r) {
  if (r.kind == 0) return "ok";
  if (r.vector == 14) return fmt::format("#PF error_code={:#x} address={:#x}", r.value, r.cr2);
  return fmt::format("vector {} error_code={:#x}", r.vector, r.value);
}
std::string fault_text(const json& j) {
  if (j.value("ok", false) || j.contains("mmio")) return "ok";
  const json& f = j["fault"];
  if (f["vector"].get<int>() == 14)
    return fmt::format("#PF error_code={} address={}", f["error_code"].get<std::string>(), f["address"].get<std::string>());
  return fmt::format("vector {} error_code={}", f["vector"].get<int>(), f["error_code"].get<std::string>());
}

bool long_mode_image(const Image& img) { return img.mode == HarnessMode::Level4 || img.mode == HarnessMode::Level5; }

uint64_t width_mask(unsigned w) { return w >= 8 ? ~0ull : (1ull << (8 * w)) - 1; }

// Compares one vmmu run with the oracle's records; returns the first difference.
std::optional<Difference> compare(const std::vector<Op>& ops, const Image& img, const std::vector<Record>& recs,
                                  const VmmuRun& vr, std::map<std::string, uint64_t>& masked, uint64_t& compared,
                                  bool qemu) {
  bool earlier_fault = false;  // the last access before a peek faulted (in vmmu)
  // A/D bits that an access vmmu performed but the oracle did not (not checkable, or masked)
  // may have set: peeks compare them only from the next change of CR3 on.
  bool ad_unreliable = false;
  std::size_t next_op = 0;
  std::vector<bool> probed(ops.size(), false);
  for (const Probe& p : img.probes) probed[p.op] = true;
  for (std::size_t k = 0; k < img.probes.size(); ++k) {
    const Probe& p = img.probes[k];
    const Op& op = ops[p.op];
    for (; next_op < p.op; ++next_op) {
      const Op& o = ops[next_op];
      if ((o.kind == OpKind::Regs && o.regs.cr3) || o.kind == OpKind::Cr3) ad_unreliable = false;
      if ((o.kind == OpKind::Read || o.kind == OpKind::Write || o.kind == OpKind::Fetch) && !probed[next_op])
        ad_unreliable = true;
    }
    next_op = p.op + 1;
    Difference d;
    d.line = op.line;
    d.op = std::string(sim::op_name(op.kind));
    auto it = vr.by_line.find(op.line);
    if (k >= recs.size() || recs[k].index != k) {
      d.field = "result";
      d.vmmu = it == vr.by_line.end() ? "none" : it->second.dump();
      d.oracle = "missing";
      return d;
    }
    const Record& r = recs[k];
    if (it == vr.by_line.end()) {
      d.field = "result";
      d.vmmu = "none";
      d.oracle = fault_text(r);
      return d;
    }
    const json& j = it->second;
    ++compared;
    if (p.peek) {
      const uint64_t vv = hex(j["value"]), ov = r.value & width_mask(op.width);
      if (r.kind != 0 || vv != ov) {
        if (r.kind == 0 && ad_unreliable && ((vv ^ ov) & ~0x60ull) == 0) {
          ++masked["a/d-after-unchecked-or-masked-access"];
          continue;
        }
        if (qemu && r.kind == 0 && (vv ^ ov) == 0x20 && (ov & 0x20) && earlier_fault) {
          ++masked["qemu-a-bit-on-faulting-walk"];
          continue;
        }
        if (qemu && r.kind == 0 && (vv ^ ov) == 0x20 && (ov & 0x20) && img.mode == HarnessMode::Pae &&
            std::find(img.pae_pdpte_gpas.begin(), img.pae_pdpte_gpas.end(), op.addr) != img.pae_pdpte_gpas.end()) {
          ++masked["qemu-pae-pdpte-a-bit"];
          continue;
        }
        d.field = "value";
        d.vmmu = fmt::format("{:#x}", vv);
        d.oracle = r.kind == 0 ? fmt::format("{:#x}", ov) : fault_text(r);
        return d;
      }
      continue;
    }
    const bool vok = j.value("ok", false) || j.contains("mmio");
    earlier_fault = !vok;
    // QEMU ignores these reserved bits, so it goes on with the access (its result, even what a
    // fetch then executes from beyond its RAM, is whatever the bits make of it): mask any outcome.
    if (qemu && !vok && img.mode == HarnessMode::Bits32 && img.model.maxphyaddr < 40 && (hex(j["fault"]["error_code"]) & 0x8)) {
      ++masked["qemu-pse36-ignores-maxphyaddr"];  // see docs/ORACLES.md
      ad_unreliable = true;
      continue;
    }
    if (qemu && !vok && !img.model.gbpages && long_mode_image(img) && (hex(j["fault"]["error_code"]) & 0x8) &&
        (r.kind != 1 || !(r.value & 0x8))) {
      ++masked["qemu-1g-pages-without-pdpe1gb"];  // see docs/ORACLES.md
      ad_unreliable = true;
      continue;
    }
    if (vok != (r.kind == 0)) {
      d.field = "ok";
      d.vmmu = fault_text(j);
      d.oracle = fault_text(r);
      return d;
    }
    if (vok) {
      if (op.kind == OpKind::Read && p.value_checkable && j.contains("value")) {
        const uint64_t vv = hex(j["value"]), ov = r.value & width_mask(op.width);
        if (vv != ov) {
          d.field = "value";
          d.vmmu = fmt::format("{:#x}", vv);
          d.oracle = fmt::format("{:#x}", ov);
          return d;
        }
      }
      continue;
    }
    const json& f = j["fault"];
    const unsigned vvec = f["vector"].get<unsigned>();
    if (vvec != r.vector) {
      d.field = "fault.vector";
      d.vmmu = fault_text(j);
      d.oracle = fault_text(r);
      return d;
    }
    const uint64_t vec_code = hex(f["error_code"]);
    if (vec_code != r.value) {
      if (qemu && (vec_code & 0x8) && (vec_code & 1) && r.value == (vec_code & ~1ull)) {
        ++masked["qemu-rsvd-error-code-without-p"];
      } else {
        d.field = "fault.error_code";
        d.vmmu = fmt::format("{:#x}", vec_code);
        d.oracle = fmt::format("{:#x}", r.value);
        return d;
      }
    }
    if (vvec == 14 && hex(f["address"]) != r.cr2) {
      d.field = "fault.address";
      d.vmmu = f["address"].get<std::string>();
      d.oracle = fmt::format("{:#x}", r.cr2);
      return d;
    }
  }
  return std::nullopt;
}

}  // namespace

namespace {

CheckReport check_with(const std::vector<Op>& ops, const std::vector<MmuKind>& mmus, const std::string& oracle,
                       const std::function<OracleRun(const Image&)>& runner) {
  CheckReport rep;
  rep.oracle = oracle;
  const bool qemu_oracle = oracle == "qemu";
  rep.ops = ops.size();
  VmmuRun ref;
  try {
    ref = run_vmmu(ops, MmuKind::None);
  } catch (const std::exception& e) {
    rep.error = fmt::format("vmmu: {}", e.what());
    return rep;
  }
  Image img;
  try {
    img = build_image(ops, ref.info);
  } catch (const NotCheckable& e) {
    rep.error = fmt::format("not checkable: {}", e.what());
    return rep;
  }
  rep.skipped = img.skipped;
  rep.stop_line = img.stop_line;
  if (oracle == "kvm" && img.mode != HarnessMode::Level4 && img.mode != HarnessMode::Level5) {
    rep.error = fmt::format("not checkable with kvm: {} paging (the KVM oracle runs long mode only)", name(img.mode));
    return rep;
  }
  const OracleRun orun = runner(img);
  rep.oracle_seconds = orun.seconds;
  if (std::getenv("VMMU_ORACLE_DEBUG")) {  // every oracle result beside vmmu's (--mmu=none)
    for (std::size_t k = 0; k < orun.records.size() && k < img.probes.size(); ++k) {
      const Record& r = orun.records[k];
      const uint64_t line = ops[img.probes[k].op].line;
      const auto it = ref.by_line.find(line);
      std::fprintf(stderr, "line %llu: oracle kind=%u vector=%u value=%#llx cr2=%#llx | vmmu %s\n",
                   (unsigned long long)line, r.kind, r.vector, (unsigned long long)r.value,
                   (unsigned long long)r.cr2, it == ref.by_line.end() ? "-" : it->second.dump().c_str());
    }
    for (const auto& [line, why] : img.skipped) std::fprintf(stderr, "line %llu: skipped: %s\n", (unsigned long long)line, why.c_str());
    if (!orun.error.empty()) std::fprintf(stderr, "oracle error: %s\n", orun.error.c_str());
  }
  if (!orun.ok) {
    // the records before the failure still tell the first difference, if any
    std::map<std::string, uint64_t> masked;
    uint64_t compared = 0;
    if (auto d = compare(ops, img, orun.records, ref, masked, compared, qemu_oracle); d && d->oracle != "missing") {
      d->mmu = "none";
      rep.difference = d;
    }
    rep.error = fmt::format("qemu: {}", orun.error);
    return rep;
  }
  for (MmuKind kind : mmus) {
    const VmmuRun* run = &ref;
    VmmuRun other;
    if (kind != MmuKind::None) {
      try {
        other = run_vmmu(ops, kind);
      } catch (const UsageError& e) {
        rep.mmus_skipped.push_back(fmt::format("{} ({})", name(kind), e.what()));
        continue;
      } catch (const std::exception& e) {
        rep.error = fmt::format("vmmu --mmu={}: {}", name(kind), e.what());
        return rep;
      }
      run = &other;
    }
    rep.mmus_checked.push_back(name(kind));
    std::map<std::string, uint64_t> masked;
    uint64_t compared = 0;
    if (auto d = compare(ops, img, orun.records, *run, masked, compared, qemu_oracle)) {
      d->mmu = name(kind);
      rep.difference = d;
      return rep;
    }
    rep.masked = masked;
    rep.compared = compared;
  }
  return rep;
}

}  // namespace

CheckReport check_with_qemu(const std::vector<Op>& ops, const std::vector<MmuKind>& mmus, const std::string& qemu) {
  return check_with(ops, mmus, "qemu", [&](const Image& img) { return run_qemu(img, qemu); });
}

CheckReport check_with_kvm(const std::vector<Op>& ops, const std::vector<MmuKind>& mmus) {
  return check_with(ops, mmus, "kvm", [](const Image& img) { return run_kvm(img); });
}

std::string describe(const CheckReport& r) {
  if (r.difference) {
    const Difference& d = *r.difference;
    return fmt::format("line {}: {} {}: vmmu (--mmu={}) {} but {} {}", d.line, d.op, d.field, d.mmu, d.vmmu, r.oracle,
                       d.oracle);
  }
  if (!r.error.empty()) return r.error;
  std::string masked;
  for (const auto& [n, c] : r.masked) masked += fmt::format("{}{} {}", masked.empty() ? "" : ", ", n, c);
  return fmt::format("{} ops, 0 differences ({} results compared with {} for --mmu={}; {} ops not checkable{}{})", r.ops,
                     r.compared, r.oracle, fmt::join(r.mmus_checked, ","), r.skipped.size(),
                     r.stop_line ? fmt::format(", checking stopped at line {}", *r.stop_line) : "",
                     masked.empty() ? "" : "; masked: " + masked);
}

}  // namespace vmmu::oracle
