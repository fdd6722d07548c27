#!/bin/sh
# Runs every fuzz target of the project for a while each (default 30s):
#   scripts/fuzz.sh [DURATION]
# `make test` runs it with a short duration so every parser (DHCP packets,
# TFTP requests, the iPXE query, the config, ...) meets random input on every
# run; `make fuzz` runs it longer. A finding is written under the package's
# testdata/fuzz/ and the script stops with its failure; commit the file as a
# regression test once fixed (plain `go test` then replays it).
set -eu
cd "$(dirname "$0")/.."
duration=${1:-30s}
GO=${GO:-go}
# FUZZFLAGS: more `go test` flags. `make test` passes -fuzzminimizetime=1x:
# targets that run a real server see coverage from its goroutines change
# under them, and minimising every "new" input took their whole run (and
# could overrun it: "context deadline exceeded"). A count, not 0 or a
# time: -fuzzminimizetime=0 fails every run that finds a new input.
FUZZFLAGS=${FUZZFLAGS:-}
# Targets are found by their declaration rather than `go test -list`, which
# would build every package's tests once more.
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r file; do
	pkg=./$(dirname "${file#./}")
	for target in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$file"); do
		echo "== $pkg $target ($duration)"
		# -parallel 2: CI has two cores.
		out=$(mktemp)
		status=0
		$GO test -run '^$' -fuzz "^${target}\$" -fuzztime "$duration" -parallel 2 $FUZZFLAGS "$pkg" >"$out" 2>&1 || status=$?
		cat "$out"
		if [ "$status" != 0 ]; then
			# Go's engine gives up with "context deadline exceeded" when
			# replaying the corpus it keeps in GOCACHE takes longer than
			# -fuzztime (a short run on a machine that fuzzed a lot). No
			# input failed then: say so and go on. A failing input
			# ("Failing input written to …") still fails the run.
			if grep -q 'context deadline exceeded' "$out" && ! grep -q 'Failing input written' "$out"; then
				echo "== $pkg $target: the corpus replay outlasted $duration (no failing input); run make fuzz for longer"
			else
				rm -f "$out"
				exit 1
			fi
		fi
		rm -f "$out"
	done
done
