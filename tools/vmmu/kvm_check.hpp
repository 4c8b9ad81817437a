#pragma once
// `vmmu kvm-check`: runs a workload (or random cases) in an outside oracle and in vmmu and
// prints the first difference (docs/ORACLES.md).
namespace vmmu::tools {

// argv[0] is "kvm-check". Returns the exit status: 0 no difference, 1 a difference, 2 usage or
// input errors, 77 the oracle is not available here.
int kvm_check_main(int argc, char** argv);

}  // namespace vmmu::tools
