# The two commands of the README: `make run` and `make test`. Each installs what is missing,
# configures, builds and runs. Other targets are conveniences over the CMake presets.
PRESET ?= release
BUILD := build/$(PRESET)
JOBS ?= $(shell nproc)

.PHONY: run test deps configure build asan tsan bench clean

run: configure
	cmake --build --preset $(PRESET) -j $(JOBS) --target vmmu
	$(BUILD)/tools/vmmu/vmmu run

test: build
	ctest --preset $(PRESET)

deps:
	@scripts/install-deps.sh

configure: deps
	@test -f $(BUILD)/build.ninja || cmake --preset $(PRESET) >/dev/null

build: configure
	cmake --build --preset $(PRESET) -j $(JOBS)

# The test suite under ASan+UBSan (clang), and under TSan.
asan:
	$(MAKE) test PRESET=asan
tsan:
	$(MAKE) test PRESET=tsan

bench: build
	$(BUILD)/bench/vmmu_bench

clean:
	rm -rf build
