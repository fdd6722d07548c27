#!/bin/bash
# Runs every benchmark (make bench): DHCP, TFTP, HTTP, failover against the
# peers, artifacts against curl, then the Go benchmarks of the hot paths. The tables go to stdout
# and, whole, to $BENCH_OUT (default bin/bench-results.md). Each script
# cleans up after itself; a failing one is reported and the others still run.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${BENCH_OUT:-bin/bench-results.md}
mkdir -p "$(dirname "$out")"
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}

{
	echo "# mayu benchmarks, $(date -u +'%Y-%m-%d %H:%M UTC')"
	echo
	echo "Machine: $(nproc) cores ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r)."
	echo "Versions: mayu $(git describe --always --dirty 2>/dev/null), $("$GO" version | cut -d' ' -f3), etcd $(bin/etcd --version 2>/dev/null | sed -n 's/^etcd Version: //p'),"
	echo "Kea $(kea-dhcp4 -v 2>/dev/null), dnsmasq $(dnsmasq -v 2>/dev/null | sed -n '1s/.*version \([^ ]*\).*/\1/p'), nginx $(nginx -v 2>&1 | sed -n 's/.*nginx\/\([^ ]*\).*/\1/p'), tftpd-hpa $(in.tftpd -V 2>&1 | sed -n '1s/^tftp-hpa \([^ ,]*\).*/\1/p'), wrk $(wrk -v 2>&1 | sed -n '1s/^wrk \([^ ]*\).*/\1/p')."
	echo
} >"$out"

failed=""
for s in dhcp tftp http failover artifacts fleet; do
	echo "== bench/$s.sh" >&2
	if ! bench/$s.sh | tee -a "$out"; then
		failed="$failed $s"
		echo "bench/$s.sh FAILED" | tee -a "$out"
	fi
done

echo "== go test -bench ./pkg/..." >&2
{
	echo "### Go benchmarks of the hot paths (go test -run '^\$' -bench . -benchmem ./pkg/...)"
	echo
	echo '```'
} >>"$out"
if ! "$GO" test -run '^$' -bench . -benchmem ./pkg/... 2>&1 | grep -E '^(Benchmark|pkg:|FAIL|--- FAIL)' | tee -a "$out"; then
	failed="$failed go-bench"
fi
echo '```' >>"$out"

echo >&2
echo "== all tables: $out" >&2
cat "$out"
if [ -n "$failed" ]; then
	echo "failed:$failed" >&2
	exit 1
fi
