#!/usr/bin/env bash
# Installs exactly the Debian packages vmmu's build and tests use. Idempotent: does nothing
# when all are present; otherwise `apt-get update` once, then `apt-get install` of what is missing.
set -euo pipefail

packages=(
  # toolchain: g++ 12 and clang 14 both build the project; clang's runtime for ASan/UBSan/TSan
  g++ clang libclang-rt-14-dev cmake ninja-build make pkg-config
  # fuzzing (make fuzz): libFuzzer is in libclang-rt-14-dev; llvm-symbolizer names the frames
  # of sanitizer and fuzzer crash reports
  llvm
  # libraries
  libfmt-dev nlohmann-json3-dev libcli11-dev libzstd-dev
  # trace files: .xz and .gz traces (the shipped one included) are read through xz and gzip
  xz-utils gzip
  # tests and benchmarks
  libgtest-dev libgmock-dev librapidcheck-dev libbenchmark-dev
  # the QEMU oracle of `vmmu kvm-check` and tests/oracle (docs/ORACLES.md)
  qemu-system-x86
  # valgrind's lackey records a real program in tests/sim/lackey_replay_test.cpp (which skips
  # without it), as a user records a trace for `vmmu import lackey`
  valgrind
  # zlib: tests/tools decode the screenshot of the `vmmu run --report` page
  zlib1g-dev
  # headless Chromium renders the `vmmu run --report` page in tests/tools/run_report_test.cpp
  # (which skips without it); a large package, so it comes last
  chromium
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
