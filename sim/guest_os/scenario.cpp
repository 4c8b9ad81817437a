#include "sim/guest_os/scenario.hpp"

#include <cstdint>
#include <map>
#include <vector>

namespace vmmu::sim::guest_os {

namespace {

using x86::AccessKind;

// splitmix64: the same sequence on every platform.
class Rng {
 public:
  explicit Rng(uint64_t seed) : x_(seed) {}
  uint64_t next() {
    uint64_t z = (x_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return n ? next() % n : 0; }
  bool percent(unsigned p) { return below(100) < p; }

 private:
  uint64_t x_;
};

constexpr uint64_t PAGE = 4096;

struct Mapping {
  uint64_t addr, len;
};

// A program's behaviour: a fetch per instruction, and loads and stores with locality over its
// data, heap, stack and mappings.
class Scenario {
 public:
  Scenario(const ScenarioParams& p, const OpSink& sink) : p_(p), os_(p.os, sink), rng_(p.seed) {}

  GuestOsCounts run() {
    os_.boot();
    const ProgramImage init_image{0, 64 << 10, 16 << 10, 1 << 20, 128 << 10, false};
    const uint32_t init = os_.spawn(init_image);
    started(init);
    slice(init, p_.slice / 2);
    std::vector<uint32_t> workers;
    for (uint32_t i = 0; i < p_.processes; ++i) workers.push_back(start_worker(init, i));
    for (GuestProgram* program : p_.programs) program->start(os_, init);
    std::vector<GuestProgram*> running = p_.programs;
    auto run_programs = [&](uint64_t share) {
      std::erase_if(running, [&](GuestProgram* program) { return !program->run(os_, share); });
    };
    for (uint32_t round = 0; round < p_.rounds; ++round) {
      for (size_t w = 0; w < workers.size(); ++w) {
        slice(workers[w], p_.slice);
        event(workers[w], (round + w) % 4, init, workers, w);
      }
      run_programs(p_.program_share);
      if (p_.os.audits) os_.audit();
    }
    while (!running.empty()) run_programs(UINT64_MAX);
    for (GuestProgram* program : p_.programs) program->exit(os_);
    for (uint32_t w : workers) os_.exit(w);
    slice(init, p_.slice / 4);
    if (p_.stats) os_.stats();
    return os_.counts();
  }

 private:
  ProgramImage image(uint32_t i) const {
    static const ProgramImage images[] = {
        {1, 512 << 10, 64 << 10, 8 << 20, 1 << 20, false},   // a server with a big heap
        {2, 128 << 10, 32 << 10, 2 << 20, 256 << 10, false},  // a small tool
        {3, 1 << 20, 128 << 10, 6 << 20, 512 << 10, false},  // a compiler-like program
    };
    return images[i % 3];
  }

  void started(uint32_t pid) { state_[pid] = State{os_.program(pid), os_.program(pid).text, {}}; }

  uint32_t start_worker(uint32_t init, uint32_t i) {
    const uint32_t c = os_.fork(init);
    started(c);
    slice(c, p_.slice / 8);  // the shell between fork and exec writes a little
    os_.exec(c, image(i));
    started(c);
    slice(c, p_.slice);
    return c;
  }

  uint64_t pick(uint64_t lo, uint64_t hi) {
    // Locality: most accesses go to the first few pages of a region.
    const uint64_t pages = (hi - lo) / PAGE;
    const uint64_t hot = std::min<uint64_t>(pages, 24);
    const uint64_t page = rng_.percent(85) ? rng_.below(hot) : rng_.below(pages);
    return lo + page * PAGE + rng_.below(PAGE / 8) * 8;
  }

  void data_access(uint32_t pid, uint64_t va) {
    if (rng_.percent(40)) os_.access(pid, AccessKind::Write, va, 8, rng_.next());
    else os_.access(pid, AccessKind::Read, va, 8);
  }

  void slice(uint32_t pid, uint32_t n) {
    State& s = state_.at(pid);
    const ProgramLayout& l = s.layout;
    for (uint32_t i = 0; i < n; ++i) {
      os_.access(pid, AccessKind::Fetch, s.ip, 1);
      s.ip += 1 + rng_.below(12);
      if (s.ip >= l.text_end || rng_.percent(8)) s.ip = pick(l.text, l.text_end);
      if (!rng_.percent(50)) continue;
      const uint64_t r = rng_.below(100);
      if (r < 55) data_access(pid, pick(l.heap, l.heap_end));
      else if (r < 80) data_access(pid, l.stack_end - PAGE - (pick(l.stack, l.stack_end) - l.stack) % (16 * PAGE));
      else if (r < 92 || s.maps.empty()) data_access(pid, pick(l.data, l.data_end));
      else {
        const Mapping& m = s.maps[rng_.below(s.maps.size())];
        data_access(pid, pick(m.addr, m.addr + m.len));
      }
    }
  }

  void event(uint32_t pid, uint32_t kind, uint32_t init, std::vector<uint32_t>& workers, size_t w) {
    switch (kind) {
      case 0: {  // fork: the child and the parent write to the pages they now share
        const uint32_t c = os_.fork(pid);
        state_[c] = state_.at(pid);
        slice(c, p_.slice / 2);
        slice(pid, p_.slice / 4);
        os_.exit(c);
        return;
      }
      case 1: {  // a mapping: touched, half of it made read-only, read, then unmapped
        const bool huge = rng_.percent(50);
        const uint64_t unit = huge ? os_.layout().huge_size() : 16 * PAGE;
        const uint64_t len = 2 * unit;
        const uint64_t a = os_.mmap(pid, len, prot::R | prot::W, huge);
        for (uint64_t off = 0; off < len; off += huge ? 64 * PAGE : PAGE) os_.access(pid, AccessKind::Write, a + off, 8, off);
        os_.mprotect(pid, a, unit, prot::R);
        for (uint64_t off = 0; off < len; off += 4 * PAGE) os_.access(pid, AccessKind::Read, a + off, 8);
        state_.at(pid).maps.push_back({a + unit, unit});  // the part still writable
        slice(pid, p_.slice / 4);
        os_.munmap(pid, a, len);
        state_.at(pid).maps.clear();
        return;
      }
      case 2: {  // a helper program: fork + exec, run, exit
        const uint32_t c = os_.fork(pid);
        os_.exec(c, image(static_cast<uint32_t>(rng_.below(3))));
        started(c);
        slice(c, p_.slice / 2);
        os_.exit(c);
        return;
      }
      default:  // a worker exits and init starts another
        if (rng_.percent(50)) {
          os_.exit(pid);
          workers[w] = start_worker(init, static_cast<uint32_t>(rng_.below(3)));
        }
        return;
    }
  }

  struct State {
    ProgramLayout layout;
    uint64_t ip = 0;
    std::vector<Mapping> maps;
  };

  const ScenarioParams& p_;
  GuestOs os_;
  Rng rng_;
  std::map<uint32_t, State> state_;
};

}  // namespace

GuestOsCounts run_default_scenario(const ScenarioParams& params, const OpSink& sink) { return Scenario(params, sink).run(); }

}  // namespace vmmu::sim::guest_os
