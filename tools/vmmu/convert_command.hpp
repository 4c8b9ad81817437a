#pragma once
// `vmmu convert IN -o OUT`: a .vmt workload from any form into any form (text, binary, either
// under zstd), the output's form chosen by its name (docs/VMT-FORMAT.md, "Binary form").
namespace vmmu::tools {

// argv[0] is "convert". Returns the exit status: 0, or 2 for usage and input errors (the output
// file is then removed).
int convert_main(int argc, char** argv);

}  // namespace vmmu::tools
