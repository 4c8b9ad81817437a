#include "mmu/asymmetric_fence.hpp"

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace vmmu::mmu {

namespace {

#if defined(__SANITIZE_THREAD__)
constexpr bool SANITIZER_BLIND = true;  // TSan does not model membarrier's barriers
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
constexpr bool SANITIZER_BLIND = true;
#else
constexpr bool SANITIZER_BLIND = false;
#endif
#else
constexpr bool SANITIZER_BLIND = false;
#endif

long membarrier(int cmd) { return ::syscall(__NR_membarrier, cmd, 0u, 0); }

bool register_membarrier() {
  if (SANITIZER_BLIND) return false;
  const long cmds = membarrier(MEMBARRIER_CMD_QUERY);
  if (cmds < 0 || !(cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED)) return false;
  return membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) == 0;
}

}  // namespace

bool detail::membarrier_available() {
  static const bool available = register_membarrier();
  return available;
}

void heavy_fence() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (detail::membarrier_available()) membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED);
}

}  // namespace vmmu::mmu
