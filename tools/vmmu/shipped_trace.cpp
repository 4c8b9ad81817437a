#include "tools/vmmu/shipped_trace.hpp"

#include <cstdlib>
#include <filesystem>

namespace vmmu::tools {

std::string shipped_trace_path() {
  constexpr const char* NAME = "traces/sort.lackey.xz";
  if (const char* dir = std::getenv("VMMU_DATA_DIR"); dir && *dir) return std::string(dir) + "/" + NAME;
  for (const char* dir : {VMMU_INSTALLED_DATA_DIR, VMMU_SOURCE_DATA_DIR}) {
    const std::string path = std::string(dir) + "/" + NAME;
    if (std::filesystem::exists(path)) return path;
  }
  return "";
}

}  // namespace vmmu::tools
