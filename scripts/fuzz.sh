#!/usr/bin/env bash
# Run every native fuzz target of the module for a bounded time each.
#
#   scripts/fuzz.sh            10s per target (what `make test` runs in CI)
#   FUZZTIME=10m scripts/fuzz.sh
#
# Targets are found by their declarations (func FuzzXxx in *_test.go), so a
# new one runs without being listed here. A failing input is kept by Go in
# testdata/fuzz/FuzzXxx/ of its package: commit it, and it becomes a
# regression test that every `go test` runs.
set -euo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-10s}
go=${GO:-go}
n=0
start=$SECONDS
while IFS=: read -r file name; do
	pkg=$(dirname "$file")
	echo "fuzz: $pkg $name for $fuzztime"
	# -parallel 2: the machines this runs on have two cores; more workers
	# only add memory. -fuzzminimizetime 100x: minimizing each new input
	# for the default 60 s left the slow targets (FuzzOpen, FuzzApply:
	# files written per run) reporting a handful of runs in 10 s.
	"$go" test -run '^$' -fuzz "^${name}\$" -fuzztime "$fuzztime" -fuzzminimizetime 100x -parallel 2 "$pkg"
	n=$((n + 1))
done < <(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . | sed 's/func //' | sort)
echo "fuzz: $n targets, $fuzztime each, passed in $((SECONDS - start))s"
