#!/bin/bash
# Failover: the DHCP gap a client sees when the leader dies. Three mayu
# replicas on a 3-member etcd (one member and one replica per host), and a
# prober (internal/cmd/dhcpprobe) doing a full DORA exchange every 50 ms
# (100 ms timeout, 16 MACs) for the whole run. The leader is killed 20 times
# with kill -9 and 20 times with SIGTERM (a graceful stop resigns), each
# time restarted once another replica answers. The gaps come from the
# prober's log (bench/gaps, on internal/dhcpprobe's Gaps): from the end of
# the last answered exchange before the kill to the start of the first one
# after. Reported: median and maximum per kind, for each election TTL in
# FAILOVER_TTLS (default "3s 2s": mayu's default, and etcd's minimum lease
# TTL with its default election timeout).
#
#   n1 10.99.0.2, n2 10.99.0.3, n3 10.99.0.4  etcd member + mayu replica each
#   cli 10.99.0.250                           the prober
#
# Usage: bench/failover.sh   (FAILOVER_KILLS=20, BENCH_QUICK=1: 3 of each, 3s only)
. "$(dirname "$0")/lib.sh"

need_root
need curl go "$MAYU" "$BIN/etcd" "$BIN/etcdctl"

kills=${FAILOVER_KILLS:-20}
# A lost exchange counts as a gap of at least this long: DHCP on a LAN
# answers within a few ms (the ACK waits for the etcd commit).
timeout=${FAILOVER_PROBE_TIMEOUT:-100ms}
ttls=${FAILOVER_TTLS:-3s 2s}
if [ "$BENCH_QUICK" = 1 ]; then
	kills=3 ttls=3s
fi

(cd "$TOP" && go build -o "$WORK/dhcpprobe" ./internal/cmd/dhcpprobe && go build -o "$WORK/gaps" ./bench/gaps) ||
	die "cannot build the prober"

seg_new
seg_host n1 10.99.0.2/24
seg_host n2 10.99.0.3/24
seg_host n3 10.99.0.4/24
seg_host cli 10.99.0.250/24

now_ms() { date +%s%3N; }

# answered_since MS: the prober answered an exchange started at or after MS.
answered_since() {
	[ -f "$PROBE" ] || return 1
	awk -v t="$1" '$1 >= t && $3 == "ok" { found = 1; exit } END { exit !found }' "$PROBE"
}

declare -A PIDS
replica_start() { # i
	mayu_start "n$1" "$WORK/ttl/m$1"
	PIDS[$1]=$STARTED
	wait_log "$WORK/ttl/m$1/mayu.log" "mayu started" 60 "$STARTED"
}

declare -A SUMMARY
for ttl in $ttls; do
	log "failover: election TTL $ttl, $kills × kill -9 and $kills × SIGTERM"
	rm -rf "$WORK/ttl" "$WORK"/etcd-n*
	mkdir -p "$WORK/ttl"
	ETCD_PIDS=()
	etcd_cluster n1:10.99.0.2 n2:10.99.0.3 n3:10.99.0.4
	for i in 1 2 3; do
		mkdir -p "$WORK/ttl/m$i"
		mayu_files "$WORK/ttl/m$i" 1
		MAYU_ELECTION_TTL=$ttl mayu_config "$WORK/ttl/m$i" "r$i" "10.99.0.$((i + 1))" "$ETCD_ENDPOINTS"
		replica_start "$i"
	done
	PROBE=$WORK/ttl/probe.log EVENTS=$WORK/ttl/events
	: >"$EVENTS"
	start_in cli "$WORK/ttl/probe.stderr" "$WORK/dhcpprobe" -i eth0 -every 50ms -timeout "$timeout" -macs 16 -duration 60m -out "$PROBE"
	probe_pid=$STARTED
	t=$(now_ms)
	for _ in $(seq 1 300); do answered_since "$t" && break; sleep 0.1; done
	answered_since "$t" || die "the prober gets no answer"

	for kind in kill-9 sigterm; do
		sig=KILL
		[ $kind = sigterm ] && sig=TERM
		for n in $(seq 1 "$kills"); do
			l=$(leader_of n1 n2 n3)
			i=${l#n}
			sleep 1 # the prober is answered by this leader for a while
			t=$(now_ms)
			echo "$t $kind" >>"$EVENTS"
			stop_pid "${PIDS[$i]}" "$sig"
			for _ in $(seq 1 300); do answered_since "$t" && break; sleep 0.05; done
			answered_since "$t" || die "no DHCP answer within 15 s after $kind of r$i"
			log "  $kind $n/$kills: r$i down, answered again after $(($(now_ms) - t)) ms (upper bound)"
			replica_start "$i"
		done
	done
	stop_pid "$probe_pid" INT
	"$WORK/gaps" -log "$PROBE" -events "$EVENTS" >"$WORK/ttl/gaps" || die "gaps: $(cat "$WORK/ttl/gaps")"
	grep -q '^conflict' "$WORK/ttl/gaps" && log "  $(grep '^conflict' "$WORK/ttl/gaps")"
	SUMMARY[$ttl]=$(grep '^summary' "$WORK/ttl/gaps")
	log "  $(tr '\n' ';' <<<"${SUMMARY[$ttl]}")"
	[ -z "${FAILOVER_KEEP:-}" ] || cp -r "$WORK/ttl" "$FAILOVER_KEEP-$ttl"
	for i in 1 2 3; do stop_pid "${PIDS[$i]}"; done
	for p in "${ETCD_PIDS[@]}"; do stop_pid "$p"; done
done

field() { sed -n "s/^summary $1 .*$2=\([0-9.]*\).*/\1/p" <<<"$3"; }
echo
echo "### Failover: DHCP gap seen by a prober asking every 50 ms (3 replicas, 3-member etcd), seconds"
echo
echo "$(machine). $kills kills of each kind per TTL; the killed replica is restarted after each."
echo
echo "| election TTL | kill -9 median | kill -9 max | SIGTERM median | SIGTERM max |"
echo "|---|---:|---:|---:|---:|"
for ttl in $ttls; do
	s=${SUMMARY[$ttl]}
	echo "| $ttl$([ "$ttl" = 3s ] && echo ' (default)') | $(field kill-9 median "$s") | $(field kill-9 max "$s") | $(field sigterm median "$s") | $(field sigterm max "$s") |"
done
echo
