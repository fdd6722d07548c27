#!/bin/sh
# Manual end-to-end check of dhcpprobe against busybox udhcpd, as root:
#
#	sh internal/cmd/dhcpprobe/manual_check.sh
#
# Everything happens in two network namespaces created here and deleted on
# exit (the DHCP server never sees a real interface):
#
#	netns probe-test-srv-$$: srv0 10.77.0.1/24, udhcpd (pool .100-.150)
#	  └── veth ── netns probe-test-cli-$$: cli0, dhcpprobe
#
# Two 3 s runs: the defaults (BROADCAST flag set), then unicast replies
# with -release, a vendor class and option 93. Each must log only
# successful exchanges; the prober's summary (latency percentiles) goes to
# stderr. DHCPPROBE_BIN may name a prebuilt binary; otherwise it is built.
set -eu

[ "$(id -u)" = 0 ] || { echo "must run as root (namespaces, raw sockets)" >&2; exit 1; }
command -v busybox >/dev/null || { echo "busybox (udhcpd) is required" >&2; exit 1; }

SRV=probe-test-srv-$$
CLI=probe-test-cli-$$
TMP=$(mktemp -d /tmp/dhcpprobe-check.XXXXXX)
SRV_PID=
PROBE_PID=

cleanup() {
	set +e
	[ -n "$PROBE_PID" ] && kill "$PROBE_PID" 2>/dev/null && wait "$PROBE_PID" 2>/dev/null
	[ -n "$SRV_PID" ] && kill "$SRV_PID" 2>/dev/null && wait "$SRV_PID" 2>/dev/null
	ip netns del "$CLI" 2>/dev/null
	ip netns del "$SRV" 2>/dev/null
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

BIN=${DHCPPROBE_BIN:-}
if [ -z "$BIN" ]; then
	BIN=$TMP/dhcpprobe
	(cd "$(dirname "$0")" && go build -o "$BIN" .)
fi

ip netns add "$SRV"
ip netns add "$CLI"
ip -n "$SRV" link add srv0 type veth peer name cli0 netns "$CLI"
ip -n "$SRV" addr add 10.77.0.1/24 dev srv0
ip -n "$SRV" link set lo up
ip -n "$SRV" link set srv0 up
ip -n "$CLI" link set lo up
ip -n "$CLI" link set cli0 up

cat >"$TMP/udhcpd.conf" <<EOF
interface srv0
start 10.77.0.100
end 10.77.0.150
lease_file $TMP/udhcpd.leases
pidfile $TMP/udhcpd.pid
option subnet 255.255.255.0
option lease 600
EOF
: >"$TMP/udhcpd.leases"
# -a 0: no ARP ping before offering an address (by default udhcpd spends up
# to 2 s on it per new client, which would make the first round time out).
ip netns exec "$SRV" busybox udhcpd -f -a 0 "$TMP/udhcpd.conf" >"$TMP/udhcpd.out" 2>&1 &
SRV_PID=$!
sleep 0.5 # let udhcpd bind and the veth come up (no DAD on IPv4)
kill -0 "$SRV_PID" || { cat "$TMP/udhcpd.out" >&2; exit 1; }

status=0
probe() { # name, extra flags...
	name=$1
	shift
	ip netns exec "$CLI" "$BIN" -i cli0 -every 50ms -duration 3s -macs 16 -mac-base 1 \
		-out "$TMP/$name.log" "$@" 2>"$TMP/$name.err" &
	PROBE_PID=$!
	wait "$PROBE_PID" || { echo "$name: dhcpprobe exited $?" >&2; status=1; }
	PROBE_PID=
	total=$(wc -l <"$TMP/$name.log")
	ok=$(grep -c ' ok ' "$TMP/$name.log" || true)
	ips=$(awk '$3 == "ok" { print $5 }' "$TMP/$name.log" | sort -u | wc -l)
	echo "$name: $ok/$total exchanges ok, $ips distinct IPs; $(cat "$TMP/$name.err")"
	head -n 3 "$TMP/$name.log" | sed "s/^/  $name: /"
	if [ "$total" -lt 10 ] || [ "$ok" != "$total" ] || [ "$ips" -gt 16 ]; then
		echo "$name: FAIL" >&2
		grep -v ' ok ' "$TMP/$name.log" | head >&2
		status=1
	fi
}

probe broadcast
probe unicast-release -broadcast=false -release -vendor PXEClient:Arch:00007 -arch 7

[ "$status" = 0 ] && echo "PASS" || echo "FAIL"
exit "$status"
