#pragma once
// `vmmu import KIND FILE... -o OUT.vmt`: a real memory trace (valgrind lackey, Pin pinatrace or
// ChampSim) driving the guest OS model, written as a .vmt workload (docs/GUEST-OS-MODEL.md).
namespace vmmu::tools {

// argv[0] is "import". Returns the exit status: 0, 2 for usage and input errors (the output file
// is then removed), 1 for an internal error of the model.
int import_main(int argc, char** argv);

}  // namespace vmmu::tools
