// libFuzzer target for Pin pinatrace text traces (sim/trace_import/pin_reader.cpp):
// the reader, then the importer into the guest OS model. Input layout and checks: trace_import_fuzz.hpp.
#include <cstddef>
#include <cstdint>

#include "fuzz/trace_import_fuzz.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  return vmmu::fuzz::trace_fuzz::run(vmmu::sim::trace_import::TraceKind::Pin, data, size);
}
