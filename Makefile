# The two commands of the README: `make run` and `make test`. Each installs what is missing,
# configures, builds and runs. Other targets are conveniences over the CMake presets.
PRESET ?= release
BUILD := build/$(PRESET)
JOBS ?= $(shell nproc)

.PHONY: run test deps configure build asan tsan bench fuzz clean

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

# Each libFuzzer target (fuzz/CMakeLists.txt: NAME_fuzz, seeds in fuzz/corpus/NAME/) for
# FUZZ_SECONDS, on a fresh copy of its seeds in build/fuzz/corpus/NAME (new inputs go there, never
# into the tree; fresh, so a run's time stays bounded); crash inputs go to build/fuzz/artifacts/NAME/.
# docs/RELIABILITY.md.
FUZZ_SECONDS ?= 60
FUZZ_BUILD := build/fuzz
FUZZ_TARGETS := $(notdir $(wildcard fuzz/corpus/*))
fuzz: deps
	@test -f $(FUZZ_BUILD)/build.ninja || cmake --preset fuzz >/dev/null
	cmake --build --preset fuzz -j $(JOBS)
	@set -e; for t in $(FUZZ_TARGETS); do \
	  rm -rf $(FUZZ_BUILD)/corpus/$$t; mkdir -p $(FUZZ_BUILD)/corpus/$$t $(FUZZ_BUILD)/artifacts/$$t; \
	  cp fuzz/corpus/$$t/* $(FUZZ_BUILD)/corpus/$$t/; \
	  dict=; test -f fuzz/$$t.dict && dict=-dict=fuzz/$$t.dict; \
	  echo "== fuzz $$t for $(FUZZ_SECONDS) s (log: $(FUZZ_BUILD)/$$t.log)"; \
	  $(FUZZ_BUILD)/fuzz/$${t}_fuzz $(FUZZ_BUILD)/corpus/$$t $$dict -max_total_time=$(FUZZ_SECONDS) \
	    -max_len=131072 -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$t/ >$(FUZZ_BUILD)/$$t.log 2>&1 \
	    || { tail -n 80 $(FUZZ_BUILD)/$$t.log; echo "fuzz $$t: failed (artifacts: $(FUZZ_BUILD)/artifacts/$$t/)"; exit 1; }; \
	  grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)' $(FUZZ_BUILD)/$$t.log | tail -n 2 || true; \
	  grep -E '^stat::' $(FUZZ_BUILD)/$$t.log || true; \
	done

clean:
	rm -rf build
