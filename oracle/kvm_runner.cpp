#include "oracle/kvm_runner.hpp"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

#include <fmt/format.h>

#if __has_include(<linux/kvm.h>)
#include <linux/kvm.h>
#define VMMU_HAVE_KVM_H 1
#endif

namespace vmmu::oracle {

#ifndef VMMU_HAVE_KVM_H
std::optional<std::string> kvm_unavailable() { return "built without <linux/kvm.h>"; }
OracleRun run_kvm(const Image&, double) {
  OracleRun r;
  r.error = "built without <linux/kvm.h>";
  return r;
}
#else

namespace {

struct Fd {
  int fd = -1;
  explicit Fd(int f = -1) : fd(f) {}
  ~Fd() {
    if (fd >= 0) close(fd);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

struct Mapping {
  void* p = MAP_FAILED;
  std::size_t n = 0;
  ~Mapping() {
    if (p != MAP_FAILED) munmap(p, n);
  }
};

kvm_segment flat(uint16_t sel, uint8_t type, bool code) {
  kvm_segment s{};
  s.base = 0;
  s.limit = 0xffffffff;
  s.selector = sel;
  s.type = type;
  s.present = 1;
  s.dpl = 0;
  s.db = 1;
  s.s = 1;
  s.l = 0;
  s.g = 1;
  (void)code;
  return s;
}

}  // namespace

std::optional<std::string> kvm_unavailable() {
  Fd kvm(open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (kvm.fd < 0) return fmt::format("/dev/kvm: {}", std::strerror(errno));
  if (ioctl(kvm.fd, KVM_GET_API_VERSION, 0) != KVM_API_VERSION) return "/dev/kvm: unexpected KVM API version";
  return std::nullopt;
}

OracleRun run_kvm(const Image& image, double timeout_seconds) {
  OracleRun run;
  auto fail = [&](const std::string& what) {
    run.error = fmt::format("{}: {}", what, std::strerror(errno));
    return run;
  };
  if (image.mode != HarnessMode::Level4 && image.mode != HarnessMode::Level5) {
    run.error = "the KVM oracle runs long-mode workloads only";
    return run;
  }
  const auto start = std::chrono::steady_clock::now();
  Fd kvm(open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (kvm.fd < 0) return fail("/dev/kvm");
  Fd vm(ioctl(kvm.fd, KVM_CREATE_VM, 0));
  if (vm.fd < 0) return fail("KVM_CREATE_VM");

  // One memslot of plain RAM from 0 to the image's RAM size: the workload's memslots inside it
  // are RAM as in QEMU (the comparison treats MMIO and read-only slots alike for both oracles).
  Mapping ram;
  ram.n = image.ram_bytes;
  ram.p = mmap(nullptr, ram.n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (ram.p == MAP_FAILED) return fail("mmap guest RAM");
  kvm_userspace_memory_region region{};
  region.slot = 0;
  region.guest_phys_addr = 0;
  region.memory_size = ram.n;
  region.userspace_addr = reinterpret_cast<uint64_t>(ram.p);
  if (ioctl(vm.fd, KVM_SET_USER_MEMORY_REGION, &region) < 0) return fail("KVM_SET_USER_MEMORY_REGION");
  std::memcpy(static_cast<uint8_t*>(ram.p) + HARNESS_GPA, image.bytes.data(), image.bytes.size());

  Fd vcpu(ioctl(vm.fd, KVM_CREATE_VCPU, 0));
  if (vcpu.fd < 0) return fail("KVM_CREATE_VCPU");
  // CPUID: everything KVM supports (long mode, NX, SMEP, SMAP, PKU, LA57 where present), with the
  // workload's MAXPHYADDR.
  constexpr int kMaxEntries = 256;
  std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + kMaxEntries * sizeof(kvm_cpuid_entry2));
  auto* cpuid = reinterpret_cast<kvm_cpuid2*>(buf.data());
  cpuid->nent = kMaxEntries;
  if (ioctl(kvm.fd, KVM_GET_SUPPORTED_CPUID, cpuid) < 0) return fail("KVM_GET_SUPPORTED_CPUID");
  for (uint32_t i = 0; i < cpuid->nent; ++i) {
    kvm_cpuid_entry2& e = cpuid->entries[i];
    if (e.function == 0x80000008) e.eax = (e.eax & ~0xffu) | image.model.maxphyaddr;
    if (e.function == 0x80000001 && !image.model.gbpages) e.edx &= ~(1u << 26);
    if (e.function == 7 && e.index == 0 && !image.model.la57) e.ecx &= ~(1u << 16);
  }
  if (ioctl(vcpu.fd, KVM_SET_CPUID2, cpuid) < 0) return fail("KVM_SET_CPUID2");

  const int run_size = ioctl(kvm.fd, KVM_GET_VCPU_MMAP_SIZE, 0);
  if (run_size <= 0) return fail("KVM_GET_VCPU_MMAP_SIZE");
  Mapping run_map;
  run_map.n = std::size_t(run_size);
  run_map.p = mmap(nullptr, run_map.n, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu.fd, 0);
  if (run_map.p == MAP_FAILED) return fail("mmap kvm_run");
  auto* kr = static_cast<kvm_run*>(run_map.p);

  // Flat 32-bit protected mode, paging off, at the multiboot entry (as a multiboot loader leaves
  // the CPU); the harness loads its own GDT, IDT and TSS and enables long mode itself.
  kvm_sregs sregs{};
  if (ioctl(vcpu.fd, KVM_GET_SREGS, &sregs) < 0) return fail("KVM_GET_SREGS");
  sregs.cs = flat(0x08, 0xb, true);
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = flat(0x10, 0x3, false);
  sregs.cr0 = 0x11;  // PE, ET
  sregs.cr4 = 0;
  sregs.efer = 0;
  if (ioctl(vcpu.fd, KVM_SET_SREGS, &sregs) < 0) return fail("KVM_SET_SREGS");
  kvm_regs regs{};
  uint32_t entry;
  std::memcpy(&entry, image.bytes.data() + 0x800 + 28, 4);
  regs.rip = entry;
  regs.rflags = 0x2;
  regs.rax = 0x2badb002;
  if (ioctl(vcpu.fd, KVM_SET_REGS, &regs) < 0) return fail("KVM_SET_REGS");

  std::string debugcon;
  bool finished = false;
  while (!finished) {
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > timeout_seconds) {
      run.error = fmt::format("KVM guest did not finish within {} s", timeout_seconds);
      break;
    }
    if (ioctl(vcpu.fd, KVM_RUN, 0) < 0) {
      if (errno == EINTR) continue;
      return fail("KVM_RUN");
    }
    switch (kr->exit_reason) {
      case KVM_EXIT_IO: {
        const uint8_t* data = reinterpret_cast<const uint8_t*>(kr) + kr->io.data_offset;
        if (kr->io.direction == KVM_EXIT_IO_OUT && kr->io.port == 0xe9) {
          debugcon.append(reinterpret_cast<const char*>(data), std::size_t(kr->io.size) * kr->io.count);
        } else if (kr->io.direction == KVM_EXIT_IO_OUT && kr->io.port == 0xf4) {
          finished = true;
        }
        break;
      }
      case KVM_EXIT_HLT: run.error = "the harness halted"; finished = true; break;
      case KVM_EXIT_SHUTDOWN: run.error = "the guest shut down (triple fault)"; finished = true; break;
      case KVM_EXIT_FAIL_ENTRY:
        run.error = fmt::format("KVM entry failed (reason {:#x})", kr->fail_entry.hardware_entry_failure_reason);
        finished = true;
        break;
      case KVM_EXIT_INTERNAL_ERROR:
        run.error = fmt::format("KVM internal error (suberror {})", kr->internal.suberror);
        finished = true;
        break;
      case KVM_EXIT_MMIO: break;  // nothing lives there; reads see zeroes
      default:
        run.error = fmt::format("unexpected KVM exit {}", kr->exit_reason);
        finished = true;
    }
  }
  run.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::vector<Record> recs = parse_records(debugcon);
  const bool done = !recs.empty() && recs.back().kind == 4;
  if (done) recs.pop_back();
  run.records = std::move(recs);
  if (run.error.empty() && !done) {
    run.error = !run.records.empty() && run.records.back().kind == 3
                    ? fmt::format("the harness took an unexpected exception (vector {})", run.records.back().vector)
                    : "the harness ended early";
  }
  run.ok = run.error.empty() && done;
  return run;
}
#endif

}  // namespace vmmu::oracle
