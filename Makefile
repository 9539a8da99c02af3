# unionmount: build, test and demo.
#
#   make demo    build, then mount a small layer stack and show the merged view
#   make test    install missing system packages, build, vet, gofmt check, all tests
#
# Both are meant to run as root on a fresh Debian 12 machine with Go installed
# (on PATH or at /usr/local/go).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

# Go from /usr/local/go when it is not on PATH (the official tarball's place).
ifeq ($(shell command -v go 2>/dev/null),)
export PATH := /usr/local/go/bin:$(PATH)
endif

GO      ?= go
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
BIN     := $(CURDIR)/bin

# Every .go file we own: skip .git, build output and testdata fixtures.
GOFILES = $(shell find . -name '*.go' -not -path './.git/*' -not -path './bin/*' -not -path '*/testdata/*')

.PHONY: all build deps test demo bench fmt fmt-check vet clean

all: build

## build: compile every command under cmd/ into bin/ (bin/unionmount, ...)
build:
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN)/ ./cmd/...

## deps: install the Debian packages the build, tests and demo use (idempotent)
deps:
	@bash scripts/install-deps.sh

## build-race: the commands built with the race detector and the lock-order
## checker (-tags lockcheck), into bin/race/: the daemons the integration tests
## mount run under both
.PHONY: build-race
build-race:
	@mkdir -p $(BIN)/race
	$(GO) build -race -tags lockcheck -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN)/race/ ./cmd/unionmount ./cmd/unionctl

## test: everything CI runs; integration tests mount the race-enabled daemon, and
## everything runs with the lock-order checker (-tags lockcheck)
test: export UNIONMOUNT_BIN := $(BIN)/race/unionmount
test: export UNIONCTL_BIN := $(BIN)/race/unionctl
test: export UNIONMOUNT_PLAIN_BIN := $(BIN)/unionmount
test: deps build build-race vet fmt-check
	$(GO) test -race -count=1 -tags lockcheck -timeout 25m ./...
	$(MAKE) --no-print-directory test-uring
	GO=$(GO) FUZZTIME=10s bash scripts/fuzz.sh

## test-uring: the mount-heavy tests again with every unionmount mount served
## over FUSE over io_uring (--uring on): go-fuse's posixtest suite through the
## union, the differential test against kernel overlayfs, podman's
## mount_program contract, and the transport's own tests (with the vendored
## go-fuse's fuse package tests). Root turns the
## kernel's switch on for the run and restores it; a kernel without it skips
## the pass with the reason.
URING_PARAM := /sys/module/fuse/parameters/enable_uring
.PHONY: test-uring
test-uring: export UNIONMOUNT_BIN ?= $(BIN)/race/unionmount
test-uring: export UNIONCTL_BIN ?= $(BIN)/race/unionctl
test-uring: export UNIONMOUNT_PLAIN_BIN ?= $(BIN)/unionmount
test-uring: export UNIONMOUNT_TEST_URING := on
test-uring: build build-race
	@if [[ ! -e $(URING_PARAM) ]]; then \
		echo "test-uring: skipped, this kernel has no FUSE over io_uring ($(URING_PARAM); Linux 6.14+, CONFIG_FUSE_IO_URING)"; \
		exit 0; \
	fi; \
	was=$$(cat $(URING_PARAM)); \
	if ! echo Y > $(URING_PARAM); then \
		echo "test-uring: cannot turn $(URING_PARAM) on: run as root"; \
		[[ "$${CI:-}" != true ]]; exit; \
	fi; \
	trap 'echo $$was > $(URING_PARAM)' EXIT; \
	cd third_party/go-fuse && $(GO) test -race -count=1 ./fuse/; cd $(CURDIR); \
	$(GO) test -race -count=1 -tags lockcheck -timeout 10m \
		-run '$(URING_TESTS)' ./cmd/unionmount ./internal/posix ./internal/difftest ./internal/podman

# The tests test-uring runs: the transport's own, posixtest through the union,
# big reads and the copy-up races, the differential test, podman's -o contract.
URING_TESTS := URing|TestPosixUnion|TestLargeReads|TestConcurrentOpeners|TestTruncateToZero|TestDiff$$|TestMountProgramOptions

## fuzz: every native fuzz target for FUZZTIME each (default 1m)
.PHONY: fuzz
fuzz:
	GO=$(GO) FUZZTIME=$${FUZZTIME:-1m} bash scripts/fuzz.sh

## soak: the long modes of the crash, reliability and differential tests and the
## fuzz targets, as root (about 2 hours on 2 cores): 200 kill points per crash scenario, 1M fsx ops per configuration, 5 min of load,
## a 1M-entry walk, 30,000 differential steps, 10 min per fuzz target
.PHONY: soak
soak: export UNIONMOUNT_BIN := $(BIN)/unionmount
soak: export UNIONCTL_BIN := $(BIN)/unionctl
soak: deps build
	$(GO) test -count=1 -timeout 3h ./internal/crash -crash.points 200 -crash.storepoints 200
	$(GO) test -count=1 -timeout 3h ./internal/reliability -reliability.long
	$(GO) test -count=1 -timeout 1h ./internal/difftest -difftest.seeds 100 -difftest.steps 300
	GO=$(GO) FUZZTIME=10m bash scripts/fuzz.sh

## demo: mount a three-layer stack and show the merged tree
demo: deps build
	UNIONMOUNT_BIN=$(BIN)/unionmount bash scripts/demo.sh

## bench: kernel vs FUSE benchmarks as root (< 15 min): bench/results/report.md, one SVG
## (FUSE over io_uring is turned on for the unionmount-uring driver, then restored)
## per workload group, results.csv, and the micro-benchmarks (unionfs, copyup, and the
## image store's commit, a cached rebuild against a first build) in bench/results/gobench.txt;
## unionctl pull against podman pull of a 10-layer 100 MB image from a loopback registry
## in bench/results/pull.txt; start-up of an eStargz image, pull --lazy against a full
## pull, through a 100 Mbit/s, 10 ms-per-request proxy, in bench/results/lazy.txt
bench: deps build
	@was=$$(cat $(URING_PARAM) 2>/dev/null || true); \
	if [[ -n "$$was" ]]; then echo Y > $(URING_PARAM); trap 'echo $$was > $(URING_PARAM)' EXIT; fi; \
	$(BIN)/unionbench --out bench/results --format csv
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 200ms ./unionfs/ ./copyup/ | tee bench/results/gobench.txt
	$(GO) test -run '^$$' -bench '^Benchmark(Commit|Diff)' -benchmem -benchtime 200ms ./image/store/ | tee -a bench/results/gobench.txt
	PULL_BENCH_OUT=$(CURDIR)/bench/results/pull.txt UNIONCTL_BIN=$(BIN)/unionctl $(GO) test -run '^$$' -bench '^BenchmarkPullVsPodman$$' -benchtime 1x ./cmd/unionctl/ | tee -a bench/results/gobench.txt
	LAZY_BENCH_OUT=$(CURDIR)/bench/results/lazy.txt UNIONMOUNT_PLAIN_BIN=$(BIN)/unionmount UNIONCTL_BIN=$(BIN)/unionctl \
		$(GO) test -run '^$$' -bench '^BenchmarkLazyVsFullPull$$' -benchtime 1x ./cmd/unionctl/ | tee -a bench/results/gobench.txt
	UNIONMOUNT_PLAIN_BIN=$(BIN)/unionmount UNIONCTL_BIN=$(BIN)/unionctl \
		$(GO) test -run '^$$' -bench '^BenchmarkBuildRebuild$$' -benchtime 1x ./cmd/unionctl/ | tee -a bench/results/gobench.txt

## bench-quick: the same tool on tiny data, one repetition (< 2 min): a smoke test
.PHONY: bench-quick
bench-quick: build
	$(BIN)/unionbench --quick --out $${TMPDIR:-/tmp}/unionbench-quick

vet:
	$(GO) vet ./...

fmt:
	@files="$(GOFILES)"; [[ -z "$$files" ]] || gofmt -w $$files

fmt-check:
	@files="$(GOFILES)"; bad=$$( [[ -z "$$files" ]] || gofmt -l $$files ); \
	if [[ -n "$$bad" ]]; then \
		echo "gofmt: these files need formatting (run 'make fmt'):"; \
		echo "$$bad" | sed 's/^/  /'; \
		exit 1; \
	fi

clean:
	rm -rf $(BIN)
	find . -not -path './.git/*' -not -path '*/testdata/*' \( -name '*.test' -o -name '*.out' -o -name '*.prof' \) -type f -delete
