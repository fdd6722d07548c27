#!/bin/bash
# Fleet scale (issue 16): mayu with 20,000 machine records and 100,000 DHCP
# leases in etcd, filled by the generator (internal/fleet, bin/fleetgen:
# transactions in mayu's key format), measured by Go benchmarks against a
# real etcd (bin/etcd, fsync on):
#
#   - a registration at 0 vs 20,000 machines (target ratio <= 1.2);
#   - a new DHCP leader from winning to its first answer with 100,000
#     leases (target <= 1 s), cold (reading every lease) and warm (the
#     leases followed all along, as every replica but the leader does),
#     and the heap its
#     lease table takes per lease;
#   - the DISCOVER path with 100,000 leases vs none (target rate ratio
#     >= 0.9), in process, and the DHCP rate perfdhcp reaches against a
#     replica on an etcd holding them vs none (bench/dhcp.sh mayu-fleet0
#     mayu-fleet; FLEET_DHCP=0 leaves it out);
#   - the admin API paging through 20,000 machines with the client
#     `mayuctl list` uses, and in pages of 5000.
#
# Usage: bench/fleet.sh   (FLEET_MACHINES=20000 FLEET_LEASES=100000;
# BENCH_QUICK=1: 2000 and 10000, few iterations)
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
export PATH="$PWD/bin:$PATH" MAYU_FLEET_BENCH=1
machines=${FLEET_MACHINES:-20000} leases=${FLEET_LEASES:-100000}
reg_time=300x list_time=5x leader_time=5x discover_time=2s
if [ "${BENCH_QUICK:-0}" = 1 ]; then
	machines=${FLEET_MACHINES:-2000} leases=${FLEET_LEASES:-10000}
	reg_time=50x list_time=2x leader_time=2x discover_time=200ms
fi
export FLEET_MACHINES=$machines FLEET_LEASES=$leases
out=$(mktemp /tmp/mayu-fleet.XXXXXX)
trap 'rm -f "$out"' EXIT

bench() { # package, pattern, benchtime
	"$GO" test -count=1 -run '^$' -bench "$2" -benchtime "$3" -benchmem "$1" 2>&1 | tee -a "$out" >&2
}
bench ./internal/fleet 'RegisterFleet' "$reg_time"
bench ./internal/fleet 'ListFleet' "$list_time"
bench ./pkg/dhcp 'FleetLeaderReady' "$leader_time"
bench ./pkg/dhcp 'FleetHandleDiscover' "$discover_time"
if grep -qE '^(FAIL|--- FAIL)' "$out"; then
	echo "bench/fleet.sh: a benchmark failed" >&2
	exit 1
fi

# ns/op of a benchmark line, by name.
ns() { awk -v n="$1" '$1 ~ "^"n"(-[0-9]+)?$" { print $3; exit }' "$out"; }
metric() { awk -v n="$1" -v u="$2" '$1 ~ "^"n"(-[0-9]+)?$" { for (i = 1; i < NF; i++) if ($(i+1) == u) { print $i; exit } }' "$out"; }
ms() { awk -v v="$1" 'BEGIN { printf "%.1f ms", v / 1e6 }'; }

cat <<TABLE
### Fleet scale: $machines machines, $leases leases (bench/fleet.sh)

| what | measured | target |
|---|---|---|
| registration, empty fleet | $(metric BenchmarkRegisterFleet ms-empty) ms | |
| registration, $machines machines | $(metric BenchmarkRegisterFleet ms-fleet) ms (ratio $(metric BenchmarkRegisterFleet ratio); a plain etcd put, same two etcds: ratio $(metric BenchmarkRegisterFleet etcd-put-ratio)) | ratio ≤ 1.2 |
| new leader, win → first answer, cold (reads every lease) | $(metric BenchmarkFleetLeaderReady/cold ms-to-first-answer) ms | |
| new leader, win → first answer, warm (leases followed) | $(metric BenchmarkFleetLeaderReady/warm ms-to-first-answer) ms | ≤ 1000 ms |
| leader's lease table | $(metric BenchmarkFleetLeaderReady/cold heap-bytes/lease) heap bytes per lease (+ the followed copy: see docs/performance.md) | reported |
| DISCOVER through the server, no lease | $(metric BenchmarkFleetHandleDiscover discovers/s-none)/s | |
| DISCOVER through the server, $leases leases (alternating with the other) | $(metric BenchmarkFleetHandleDiscover discovers/s-fleet)/s (rate ratio $(metric BenchmarkFleetHandleDiscover rate-ratio)) | ratio ≥ 0.9 |
| admin API, $machines machines, api.Client.List (mayuctl list: pages of 500) | $(ms "$(ns BenchmarkListFleet/client.List)") | |
| admin API, $machines machines, pages of 5000 | $(ms "$(ns BenchmarkListFleet/pages=5000)") | |

TABLE

# The DHCP rate with a fleet's leases in etcd, end to end: perfdhcp against
# one replica whose etcd holds $leases leases, and against the same
# replica with none (bench/dhcp.sh mayu-fleet0 mayu-fleet, the ratio).
# FLEET_DHCP=0 leaves it out.
if [ "${FLEET_DHCP:-1}" = 1 ] && [ "$(id -u)" != 0 ]; then
	echo "bench/fleet.sh: the DHCP rate with the fleet's leases needs root (network namespaces); skipped" >&2
elif [ "${FLEET_DHCP:-1}" = 1 ]; then
	DHCP_FLEET_LEASES=$leases DHCP_STORMS=0 DHCP_RUNS=${FLEET_DHCP_RUNS:-2} bench/dhcp.sh mayu-fleet0 mayu-fleet
fi
