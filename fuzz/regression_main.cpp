// The regression runner: a fuzz target's LLVMFuzzerTestOneInput, without libFuzzer, over the
// files named on the command line (a directory: every file in it). Built by every build with
// tests (g++ or clang, sanitizers or not), so each corpus input runs as a CTest: an input that
// once crashed a target keeps being tried. A bug aborts (or a sanitizer reports it), as under
// libFuzzer; a target's non-zero return is a failure too.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size);

namespace {

int run_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "fuzz regression: %s: cannot open\n", path.c_str());
    return 2;
  }
  const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::fprintf(stderr, "fuzz regression: %s (%zu bytes)\n", path.c_str(), bytes.size());
  // A copy in its own allocation, so that ASan sees a read past the end of the input.
  std::vector<uint8_t> data(bytes.begin(), bytes.end());
  const int r = LLVMFuzzerTestOneInput(data.data(), data.size());
  if (r != 0) {
    std::fprintf(stderr, "fuzz regression: %s: the target returned %d\n", path.c_str(), r);
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE_OR_DIR...\n", argv[0]);
    return 2;
  }
  int status = 0;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path arg = argv[i];
    std::error_code ec;
    if (std::filesystem::is_directory(arg, ec)) {
      std::vector<std::filesystem::path> files;
      for (const auto& e : std::filesystem::directory_iterator(arg))
        if (e.is_regular_file()) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& f : files)
        if (const int r = run_file(f)) status = r;
    } else if (const int r = run_file(arg)) {
      status = r;
    }
  }
  return status;
}
