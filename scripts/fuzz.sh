#!/bin/sh
# Runs every fuzz target of the project for a while each (default 30s):
#   scripts/fuzz.sh [DURATION]
# A finding is written under the package's testdata/fuzz/ and the script
# stops with its failure; commit the file as a regression test once fixed.
set -eu
cd "$(dirname "$0")/.."
duration=${1:-30s}
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
		echo "== $pkg $target ($duration)"
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$duration" "$pkg"
	done
done
