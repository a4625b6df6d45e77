# The two commands a newcomer runs: `make demo` and `make test`. Both install the
# Debian packages they need first (we are root; apt-get only runs when one is missing).
BUILD    ?= build
JOBS     ?= $(shell nproc)
DEB_PKGS := cmake make gcc pkg-config libmsgpack-dev libssl-dev python3
DOC_PKGS := doxygen
CMAKE    := cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo

.PHONY: all deps docs-deps install-debs build test soak demo bench docs asan tsan install clean

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
	@cmake --build $(BUILD) -j $(JOBS) --target test_fault_queue test_fault_sync test_fault_tracker test_soak_cycles
	@bash tests/soak.sh $(BUILD) $(SOAK_SECONDS)

# The tour builds only the library and the examples, quietly (the log is shown if it fails).
demo: deps
	@$(CMAKE) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS) --target examples >$(BUILD)/demo-build.log 2>&1 \
	  || { cat $(BUILD)/demo-build.log; exit 1; }
	@bash examples/demo.sh $(BUILD)/examples examples

bench: build
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

# `make install PREFIX=/opt/multiproc` installs elsewhere; programs built with the
# installed multiproc.pc carry an rpath to its libdir, so they find the library there too.
PREFIX ?= /usr/local
install: build
	cmake --install $(BUILD) --prefix $(PREFIX)
	@if [ "$$(id -u)" = 0 ]; then ldconfig; fi

clean:
	rm -rf $(BUILD) build-asan build-tsan
