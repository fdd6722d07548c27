# bench/lib.sh: what every benchmark script shares. Source it from bash:
#
#	. "$(dirname "$0")/lib.sh"
#
# It gives the script a lab of its own: network namespaces named
# mb<pid>-<name> on one bridge (seg_new, seg_host), a work directory, and a
# record of every process it starts (start_in). On EXIT, INT and TERM all of
# it goes: the recorded processes (SIGTERM, then SIGKILL), anything else
# still running in the lab's namespaces, the namespaces, the work directory.
# Nothing runs in the root namespace or touches a real interface: every
# server is started with `ip netns exec` in a namespace made here, and load
# goes only to addresses inside those namespaces.

set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TOP=$(cd "$BENCH_DIR/.." && pwd)
BIN=$TOP/bin
MAYU=${MAYU:-$BIN/mayu} # MAYU=/path/to/another/build compares builds
LAB=mb$$ # namespace prefix, unique per run
WORK=$(mktemp -d /tmp/mayu-bench.XXXXXX)
chmod 755 "$WORK" # nginx and in.tftpd read files as other users
BENCH_QUICK=${BENCH_QUICK:-0} # 1: short runs, to try a script out
# BENCH_KEEP=1 keeps $WORK (the servers' logs) after the run.

_lab_pids=()
_lab_ns=()

lab_cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	local p
	for p in "${_lab_pids[@]}"; do
		kill -TERM "$p" 2>/dev/null
	done
	for _ in $(seq 1 30); do
		local alive=0
		for p in "${_lab_pids[@]}"; do
			kill -0 "$p" 2>/dev/null && alive=1
		done
		[ "$alive" = 0 ] && break
		sleep 0.1
	done
	for p in "${_lab_pids[@]}"; do
		kill -KILL "$p" 2>/dev/null
	done
	local ns
	for ns in "${_lab_ns[@]}"; do
		ip netns pids "$ns" 2>/dev/null | xargs -r kill -KILL 2>/dev/null
	done
	wait 2>/dev/null
	for ns in "${_lab_ns[@]}"; do
		ip netns del "$ns" 2>/dev/null
	done
	if [ "${BENCH_KEEP:-0}" = 1 ]; then
		echo "bench: logs and files kept in $WORK (BENCH_KEEP=1)" >&2
	else
		rm -rf "$WORK"
	fi
	exit "$rc"
}
trap lab_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() {
	log "FAIL: $*"
	exit 1
}

need_root() { [ "$(id -u)" = 0 ] || die "benchmarks need root (network namespaces); run: sudo make bench"; }

# need CMD...: fail naming what is missing (bench/install-deps.sh installs it).
need() {
	local c missing=""
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || [ -x "$c" ] || missing="$missing $c"
	done
	[ -z "$missing" ] || die "missing:$missing (run bench/install-deps.sh, and make build etcd)"
}

# --- the lab network -------------------------------------------------------

# seg_new: the switch, a bridge in namespace $LAB-sw.
seg_new() {
	local sw=$LAB-sw
	ip netns add "$sw"
	_lab_ns+=("$sw")
	ip -n "$sw" link set lo up
	ip -n "$sw" link add br0 type bridge stp_state 0 forward_delay 0
	ip -n "$sw" link set br0 up
	_seg_ports=0
}

# seg_host NAME ADDR/LEN...: namespace $LAB-NAME with eth0 on the bridge.
seg_host() {
	local name=$1 ns=$LAB-$1 port=p$_seg_ports a
	shift
	_seg_ports=$((_seg_ports + 1))
	ip netns add "$ns"
	_lab_ns+=("$ns")
	ip -n "$LAB-sw" link add "$port" type veth peer name eth0 netns "$ns"
	ip -n "$LAB-sw" link set "$port" master br0 up
	ip -n "$ns" link set lo up
	for a in "$@"; do
		ip -n "$ns" addr add "$a" dev eth0
	done
	ip -n "$ns" link set eth0 up
}

# on NAME CMD...: run CMD in the lab host NAME.
on() {
	local ns=$LAB-$1
	shift
	ip netns exec "$ns" "$@"
}

# start_in NAME LOG CMD...: start CMD in the background in host NAME, with
# its output in LOG; the pid is in $STARTED and recorded for the cleanup.
STARTED=""
start_in() {
	local ns=$LAB-$1 logf=$2
	shift 2
	ip netns exec "$ns" "$@" >"$logf" 2>&1 &
	STARTED=$!
	_lab_pids+=("$STARTED")
}

# stop_pid PID [SIGNAL]: signal PID (default TERM) and wait for it to go,
# SIGKILL after 10 s.
stop_pid() {
	local pid=$1 sig=${2:-TERM}
	kill -"$sig" "$pid" 2>/dev/null || return 0
	for _ in $(seq 1 100); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
	{ wait "$pid"; } 2>/dev/null || true
}

# wait_log FILE PATTERN SECONDS [PID]: wait until FILE has a line matching
# PATTERN (grep -E); fail if PID dies first.
wait_log() {
	local f=$1 pat=$2 secs=$3 pid=${4:-}
	local end=$((SECONDS + secs))
	while [ $SECONDS -lt $end ]; do
		grep -qE "$pat" "$f" 2>/dev/null && return 0
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
			tail -20 "$f" >&2
			die "process $pid exited before logging /$pat/ ($f)"
		fi
		sleep 0.1
	done
	tail -20 "$f" >&2
	die "no /$pat/ in $f within ${secs}s"
}

# wait_tcp HOST ADDR PORT SECONDS: wait until ADDR:PORT accepts from HOST.
wait_tcp() {
	local h=$1 a=$2 p=$3 secs=$4
	local end=$((SECONDS + secs))
	while [ $SECONDS -lt $end ]; do
		on "$h" bash -c "exec 3<>/dev/tcp/$a/$p" 2>/dev/null && return 0
		sleep 0.1
	done
	die "nothing listens on $a:$p (seen from $h) after ${secs}s"
}

# --- mayu ------------------------------------------------------------------

# mayu_files DIR INITRD_MB: a files directory (installer stand-ins, an
# initrd of INITRD_MB MiB, templates) and a boot-files directory with
# Debian's iPXE builds, under DIR.
mayu_files() {
	local dir=$1 mb=${2:-1}
	mkdir -p "$dir/files/installer" "$dir/files/images" "$dir/files/templates" "$dir/boot"
	head -c 1048576 /dev/urandom >"$dir/files/installer/vmlinuz"
	head -c $((mb * 1048576)) /dev/urandom >"$dir/files/installer/initrd.img"
	head -c 1048576 /dev/urandom >"$dir/files/images/os.img"
	cp "$TOP/etc/templates/first-stage.sh" "$TOP/etc/templates/final-config.yaml" "$dir/files/templates/"
	cp -L /usr/lib/ipxe/undionly.kpxe /usr/lib/ipxe/ipxe.efi "$dir/boot/"
	chmod -R a+rX "$dir"
}

# mayu_config DIR NAME ADVERTISE [ETCD_ENDPOINTS]: write DIR/mayu.yaml for a
# replica NAME on eth0 answering as ADVERTISE; with no endpoints (comma
# separated, e.g. "http://10.99.0.2:2379,http://10.99.0.3:2379") it runs its
# embedded etcd in DIR/data. Files come from mayu_files DIR. The config is
# the one the tests and the demo run (package internal/fixture, printed by
# `bin/vmlab config`), with pools 10.99.0.0/24 (the segment) and
# 10.98.0.0/16 (perfdhcp's relay network, ~65000 addresses), lease time 1h.
mayu_config() {
	local dir=$1 name=$2 adv=$3 eps=${4:-}
	[ -x "$BIN/vmlab" ] || die "$BIN/vmlab is missing (make bench builds it)"
	head -c 24 /dev/urandom | base64 >"$dir/admin-token"
	chmod 600 "$dir/admin-token"
	# MAYU_PROXY=1: every pool in proxy mode (cluster.pools[].mode: proxy).
	# MAYU_FLEET_POOL=1: the pool of bin/fleetgen's leases too.
	"$BIN/vmlab" config -dir "$dir" -name "$name" -interface eth0 -advertise "$adv" -etcd "$eps" \
		-election-ttl "${MAYU_ELECTION_TTL:-3s}" -lease-time 1h -relay-pool -proxy="${MAYU_PROXY:-0}" \
		-fleet-pool="${MAYU_FLEET_POOL:-0}" >"$dir/mayu.yaml"
}

# mayu_limits DIR: the limits the mayu of DIR/mayu.yaml runs with
# (node.limits, as `mayu -check` prints them), one markdown list item
# each: every report says which settings it ran with. The benchmarks run
# mayu's defaults; they must be above what one benchmark asks from one
# address (50 connections, 50 transfers), which mayu_limit checks.
mayu_limits() {
	"$MAYU" -config "$1/mayu.yaml" -check 2>&1 | sed -n 's/^mayu: \(node\.limits\.[a-z]*\): \(.*\)$/- `\1`: \2/p'
}

# mayu_limit DIR LISTENER KEY: one limit's value, e.g.
# mayu_limit DIR http max_connections_per_address.
mayu_limit() {
	"$MAYU" -config "$1/mayu.yaml" -check 2>&1 | sed -n "s/^mayu: node\.limits\.$2: .*\b$3=\([^ ]*\).*/\1/p"
}

# need_limit DIR LISTENER KEY N WHAT: die unless that limit is at least N.
need_limit() {
	local v
	v=$(mayu_limit "$1" "$2" "$3")
	[ "${v:-0}" -ge "$4" ] || die "node.limits.$2.$3 is ${v:-unset}, below the $4 $5: the benchmark would measure the limit"
}

# mayu_start HOST DIR: start mayu in HOST with DIR/mayu.yaml; pid in
# $STARTED, log in DIR/mayu.log.
mayu_start() {
	start_in "$1" "$2/mayu.log" "$MAYU" -config "$2/mayu.yaml" -log-level "${MAYU_LOG_LEVEL:-info}"
}

# --- a 3-member etcd -------------------------------------------------------

# etcd_cluster HOST:ADDR HOST:ADDR HOST:ADDR: start one member in each host
# (data under $WORK/etcd-HOST), wait until all three are healthy. The
# client endpoints, comma separated, end up in $ETCD_ENDPOINTS.
ETCD_ENDPOINTS=""
ETCD_PIDS=()
etcd_cluster() {
	local hp h a peers="" eps="" i=0
	for hp in "$@"; do
		i=$((i + 1))
		a=${hp#*:}
		peers="$peers${peers:+,}e$i=http://$a:2380"
		eps="$eps${eps:+,}http://$a:2379"
	done
	i=0
	for hp in "$@"; do
		i=$((i + 1))
		h=${hp%%:*} a=${hp#*:}
		mkdir -p "$WORK/etcd-$h"
		start_in "$h" "$WORK/etcd-$h.log" "$BIN/etcd" --name "e$i" --data-dir "$WORK/etcd-$h/data" \
			--listen-client-urls "http://$a:2379" --advertise-client-urls "http://$a:2379" \
			--listen-peer-urls "http://$a:2380" --initial-advertise-peer-urls "http://$a:2380" \
			--initial-cluster "$peers" --initial-cluster-state new --initial-cluster-token "$LAB" \
			--log-level error
		ETCD_PIDS+=("$STARTED")
	done
	h=${1%%:*}
	local end=$((SECONDS + 60))
	while [ $SECONDS -lt $end ]; do
		if [ "$(on "$h" "$BIN/etcdctl" --endpoints "$eps" endpoint health 2>&1 | grep -c 'is healthy')" = "$#" ]; then
			ETCD_ENDPOINTS=$eps
			return 0
		fi
		sleep 0.2
	done
	die "the etcd cluster did not become healthy"
}

# leader_of HOST...: print the host whose mayu answers /leader (waits 30 s).
leader_of() {
	local end=$((SECONDS + 30)) h
	while [ $SECONDS -lt $end ]; do
		for h in "$@"; do
			if on "$h" curl -sf --max-time 2 http://127.0.0.1:4082/leader 2>/dev/null | grep -q '^leader'; then
				echo "$h"
				return 0
			fi
		done
		sleep 0.2
	done
	die "no mayu replica leads DHCP"
}

# lab_cpu: "HOST PID COMM TICKS" for every process in the lab's namespaces,
# TICKS its user + system CPU time so far (clock ticks, getconf CLK_TCK).
lab_cpu() {
	local ns pid st
	for ns in "${_lab_ns[@]}"; do
		for pid in $(ip netns pids "$ns" 2>/dev/null); do
			st=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
			# comm may hold spaces: fields after its closing parenthesis.
			awk -v host="${ns#"$LAB"-}" -v pid="$pid" '{
				c = $0; sub(/^[^(]*\(/, "", c); sub(/\).*$/, "", c)
				r = $0; sub(/^.*\) /, "", r); split(r, f, " ")
				print host, pid, c, f[12] + f[13]
			}' <<<"$st"
		done
	done
}

# cpu_delta BEFORE AFTER N: per process (by pid) of the lab_cpu outputs
# BEFORE and AFTER, "HOST COMM: X µs" of CPU per one of N (exchanges, say).
cpu_delta() {
	local hz
	hz=$(getconf CLK_TCK)
	awk -v n="$3" -v hz="$hz" '
		NR == FNR { t[$2] = $4; next }
		($2 in t) && $4 > t[$2] { printf "%s %s %.0f\n", $1, $3, ($4 - t[$2]) / hz * 1e6 / n }
	' <(echo "$1") <(echo "$2") | sort
}

# --- numbers and tables ----------------------------------------------------

# ratio A B: A / B with two decimals, "-" if either is missing or B is 0.
ratio() {
	awk -v a="${1:-}" -v b="${2:-}" 'BEGIN { if (a == "" || b == "" || a == "-" || b == "-" || b + 0 == 0) print "-"; else printf "%.2f\n", a / b }'
}

# median N...: the median of the numbers (the mean of the middle two for an
# even count).
median() {
	printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# human BYTES_PER_SECOND: "123.4 MB/s".
human() { awk -v b="$1" 'BEGIN { if (b == "-") print "-"; else printf "%.1f MB/s\n", b / 1e6 }'; }

# machine: one line on what the numbers were measured on.
machine() {
	printf '%s cores (%s), %s GiB, kernel %s' "$(nproc)" \
		"$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)" \
		"$(awk '/MemTotal/ { printf "%.0f", $2 / 1048576 }' /proc/meminfo)" "$(uname -r)"
}
