# The two commands a newcomer runs: `make demo` and `make test`. Both install the
# Debian packages they need first (we are root; apt-get only runs when one is missing).
BUILD    ?= build
JOBS     ?= $(shell nproc)
DEB_PKGS := cmake make gcc pkg-config libmsgpack-dev libssl-dev python3 libopenmpi-dev openmpi-bin
DOC_PKGS := doxygen
FUZZ_PKGS := clang libclang-rt-dev
CMAKE    := cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: all deps docs-deps install-debs build test soak demo bench docs asan tsan fuzz fuzz-corpus install clean

all: build

deps:
	@$(MAKE) --no-print-directory install-debs PKGS="$(DEB_PKGS)"

docs-deps:
	@$(MAKE) --no-print-directory install-debs PKGS="$(DEB_PKGS) $(DOC_PKGS)"

# Installs the Debian packages in PKGS that are missing (apt-get only runs then).
install-debs:
	@missing=""; for p in $(PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing </dev/null; \
	fi

build: deps
	@$(CMAKE) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# Tests run one at a time: each checks that it leaves no fd, zombie or /dev/shm
# entry behind, and a neighbour's live segments would look like its leaks.
test: build
	cd $(BUILD) && ctest --output-on-failure

# The fault storms and leak cycles of `make test`, for longer: SOAK_SECONDS in all
# (default 10 minutes), shared equally by their test functions (tests/soak.sh).
SOAK_SECONDS ?= 600
soak: deps
	@$(CMAKE) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target test_fault_queue test_fault_sync test_fault_manager test_fault_tracker test_soak_cycles
	@bash tests/soak.sh $(BUILD) $(SOAK_SECONDS)

# The tour builds only the library and the examples, quietly (the log is shown if it fails).
demo: deps
	@$(CMAKE) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target examples >$(BUILD)/demo-build.log 2>&1 \
	  || { cat $(BUILD)/demo-build.log; exit 1; }
	@bash examples/demo.sh $(BUILD)/examples examples

# The peer column needs a C++ compiler and Boost.Interprocess (header-only).
BENCH_PKGS := g++ libboost-dev python3-mpi4py
bench:
	@$(MAKE) --no-print-directory install-debs PKGS="$(DEB_PKGS) $(BENCH_PKGS)"
	@$(CMAKE) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@python3 bench/run.py $(BUILD)

docs: docs-deps
	@$(CMAKE) >/dev/null
	@cmake --build $(BUILD) --target docs
	@echo "open $(BUILD)/docs/html/index.html"

# Sanitizer builds in their own directories.
asan: deps
	cmake -S . -B build-asan -DMP_ASAN=ON -DMP_BUILD_BENCH=OFF >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ctest --output-on-failure

tsan: deps
	cmake -S . -B build-tsan -DMP_TSAN=ON -DMP_BUILD_BENCH=OFF >/dev/null
	cmake --build build-tsan -j $(JOBS)
	cd build-tsan && ctest --output-on-failure

# libFuzzer runs of each target in fuzz/ (fuzz_<name>.c), FUZZ_SECONDS each, under ASan and
# UBSan, built with clang in build-fuzz/. Each starts from its seed corpus fuzz/corpus/<name>/
# and keeps what it finds in build-fuzz/corpus/<name>/ (the repository's corpus is left as
# it is). A crash stops the run and leaves build-fuzz/crash-<name>-*: once fixed, that file
# goes into fuzz/corpus/<name>/ so `make test` replays it (CONTRIBUTING.md, Fuzzing).
# `make fuzz FUZZ_TARGETS="value framing" FUZZ_SECONDS=600` runs some targets longer.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))
fuzz:
	@$(MAKE) --no-print-directory install-debs PKGS="$(DEB_PKGS) $(FUZZ_PKGS)"
	@cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMP_FUZZ=ON \
	  -DMP_BUILD_TESTS=OFF -DMP_BUILD_EXAMPLES=OFF -DMP_BUILD_BENCH=OFF >/dev/null
	@cmake --build build-fuzz -j $(JOBS) --target fuzzers >build-fuzz/build.log 2>&1 \
	  || { cat build-fuzz/build.log; exit 1; }
	@mkdir -p build-fuzz/log
	@for t in $(FUZZ_TARGETS); do \
	  mkdir -p build-fuzz/corpus/$$t; \
	  build-fuzz/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	    -artifact_prefix=build-fuzz/crash-$$t- build-fuzz/corpus/$$t fuzz/corpus/$$t \
	    >build-fuzz/log/$$t.log 2>&1 \
	    || { tail -n 60 build-fuzz/log/$$t.log; echo "fuzz_$$t failed: log in build-fuzz/log/$$t.log"; exit 1; }; \
	  printf 'fuzz_%-18s %s\n' $$t "$$(grep -h '^Done' build-fuzz/log/$$t.log)"; \
	done

# Rewrites the seed corpora in fuzz/corpus/ from the library's own encoders (fuzz/gen_corpus.c).
fuzz-corpus: deps
	@$(CMAKE) >/dev/null
	@cmake --build $(BUILD) --target fuzz_gen_corpus
	$(BUILD)/fuzz/fuzz_gen_corpus fuzz/corpus

# `make install PREFIX=/opt/multiproc` installs elsewhere; programs built with the
# installed multiproc.pc carry an rpath to its libdir, so they find the library there too.
PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)
	@if [ "$$(id -u)" = 0 ]; then ldconfig; fi

clean:
	rm -rf $(BUILD) build-asan build-tsan build-fuzz
