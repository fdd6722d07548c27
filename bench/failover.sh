#!/bin/bash
# Failover: the DHCP gap a client sees when the server answering it fails,
# for mayu and, in the same run and topology with the same prober, for what
# users would otherwise run: keepalived VRRP moving a virtual address
# between dnsmasq servers, and a Kea HA hot-standby pair.
#
#   n1 10.99.0.2, n2 10.99.0.3, n3 10.99.0.4  the servers (one per host)
#   cli 10.99.0.250                           the prober
#
# The prober (internal/cmd/dhcpprobe) does a full DORA exchange every 50 ms
# (100 ms timeout, 16 MACs) for the whole phase of each system. The server
# answering it fails FAILOVER_KILLS times (20) in each of these ways, and
# is restored once another answers:
#
#   kill-9    its processes killed (a crash; for keepalived the host's
#             keepalived and dnsmasq, and the virtual address goes with them)
#   sigterm   a graceful stop (mayu resigns; keepalived sends a priority-0
#             advertisement; Kea shuts down)
#   sigstop   its processes frozen (SIGSTOP), thawed (SIGCONT) once another
#             server answers
#   link-cut  its host's link down at the switch (the veth's bridge end):
#             for mayu its etcd member is cut off with it; back up once
#             another server answers
#
# The systems (FAILOVER_SYSTEMS, default all three):
#
#   mayu        3 replicas on a 3-member etcd (one member per host),
#               node.election_ttl FAILOVER_TTL (3s), deposition on (defaults)
#   keepalived  keepalived 2.2 VRRP on n1-n3 (advert_int 1, nopreempt, as in
#               contrib/keepalived) holding 10.99.0.10; the holder runs
#               dnsmasq, started and stopped by keepalived's notify scripts
#               (DHCP is broadcast: only the holder may answer), all of them
#               on one lease file
#   kea-ha      Kea 2.2 HA hot-standby pair on n1 (primary) and n2, HA+MT with
#               dedicated listeners, heartbeat-delay FAILOVER_KEA_HEARTBEAT_MS
#               (100), max-response-delay 3 x that, max-ack-delay the same as
#               the heartbeat, max-unacked-clients 0 (partner-down as soon as
#               the heartbeats fail, no client-traffic analysis)
#
# The gaps come from the prober's log (bench/gaps, on internal/dhcpprobe's
# Gaps): from the end of the last answered exchange before the failure to
# the start of the first one after. Reported: median and maximum per system
# and kind, and any address the prober saw given to two clients at once.
#
# Usage: bench/failover.sh   (FAILOVER_KILLS=20; BENCH_QUICK=1: 3 of each)
. "$(dirname "$0")/lib.sh"

need_root
need curl go keepalived dnsmasq kea-dhcp4 "$MAYU" "$BIN/etcd" "$BIN/etcdctl"

kills=${FAILOVER_KILLS:-20}
[ "$BENCH_QUICK" = 1 ] && kills=3
# A lost exchange counts as a gap of at least this long: DHCP on a LAN
# answers within a few ms (mayu's ACK waits for the etcd commit).
timeout=${FAILOVER_PROBE_TIMEOUT:-100ms}
ttl=${FAILOVER_TTL:-3s}
kinds=(${FAILOVER_KINDS:-kill-9 sigterm sigstop link-cut})
systems=(${FAILOVER_SYSTEMS:-mayu keepalived kea-ha})
hb=${FAILOVER_KEA_HEARTBEAT_MS:-100}
VIP=10.99.0.10

(cd "$TOP" && go build -o "$WORK/dhcpprobe" ./internal/cmd/dhcpprobe && go build -o "$WORK/gaps" ./bench/gaps) ||
	die "cannot build the prober"

seg_new
seg_host n1 10.99.0.2/24 # switch port p0
seg_host n2 10.99.0.3/24 # p1
seg_host n3 10.99.0.4/24 # p2
seg_host cli 10.99.0.250/24

now_ms() { date +%s%3N; }

# link HOST up|down: the host's cable, at the switch.
link() {
	local port
	case $1 in n1) port=p0 ;; n2) port=p1 ;; n3) port=p2 ;; esac
	ip -n "$LAB-sw" link set "$port" "$2"
}

# answered_since MS: the prober answered an exchange started at or after MS.
answered_since() {
	[ -f "$PROBE" ] || return 1
	awk -v t="$1" '$1 >= t && $3 == "ok" { found = 1; exit } END { exit !found }' "$PROBE"
}

# answered_by_other_since MS HOST: as answered_since, by a server other
# than HOST (the one that failed: an exchange it answered just before its
# failure took effect does not count).
answered_by_other_since() {
	[ -f "$PROBE" ] || return 1
	awk -v t="$1" -v not="$(addr_of "$2")" '$1 >= t && $3 == "ok" && $6 != not { found = 1; exit } END { exit !found }' "$PROBE"
}

addr_of() {
	case $1 in n1) echo 10.99.0.2 ;; n2) echo 10.99.0.3 ;; n3) echo 10.99.0.4 ;; esac
}

# last_server: the server identifier of the last answered exchange.
last_server() { awk '$3 == "ok" { s = $6 } END { print s }' "$PROBE"; }

host_of() {
	case $1 in
	10.99.0.2) echo n1 ;; 10.99.0.3) echo n2 ;; 10.99.0.4) echo n3 ;;
	*) return 1 ;;
	esac
}

# pids_in HOST NAME...: the pids of the processes named NAME in HOST.
pids_in() {
	local h=$1 p
	shift
	for p in $(ip netns pids "$LAB-$h"); do
		printf '%s\n' "$@" | grep -qx "$(cat /proc/"$p"/comm 2>/dev/null)" && echo "$p"
	done
	return 0
}

# --- mayu ------------------------------------------------------------------

declare -A PIDS
mayu_replica_start() { # i
	mayu_start "n$1" "$WORK/mayu/m$1"
	PIDS[$1]=$STARTED
	wait_log "$WORK/mayu/m$1/mayu.log" "mayu started" 60 "$STARTED"
}
mayu_up() {
	mkdir -p "$WORK/mayu"
	ETCD_PIDS=()
	etcd_cluster n1:10.99.0.2 n2:10.99.0.3 n3:10.99.0.4
	for i in 1 2 3; do
		mkdir -p "$WORK/mayu/m$i"
		if [ "$i" = 1 ]; then
			mayu_files "$WORK/mayu/m$i" 1
		else
			# The same files on every replica, as an operator deploys
			# them: replicas whose files differ do not campaign while a
			# leader publishes its own (a configuration mismatch), so a
			# failover would not be the one a real cluster goes through.
			cp -a "$WORK/mayu/m1/files" "$WORK/mayu/m1/boot" "$WORK/mayu/m$i/"
		fi
		MAYU_ELECTION_TTL=$ttl mayu_config "$WORK/mayu/m$i" "r$i" "10.99.0.$((i + 1))" "$ETCD_ENDPOINTS"
		mayu_replica_start "$i"
	done
}
mayu_leader() { leader_of n1 n2 n3; }
mayu_fail() { # kind host
	local i=${2#n}
	case $1 in
	kill-9) stop_pid "${PIDS[$i]}" KILL ;;
	sigterm) stop_pid "${PIDS[$i]}" TERM ;;
	sigstop) kill -STOP "${PIDS[$i]}" ;;
	link-cut)
		local others="" h
		for h in n1 n2 n3; do
			[ "$h" = "$2" ] || others="$others${others:+,}http://$(addr_of "$h"):2379"
		done
		link "$2" down
		etcd_back "$others" "$RAFT_CUT" &
		;;
	esac
}

# mayu_prepare KIND HOST: what must be known before the failure, asked
# before its time is taken: whether HOST's etcd member leads raft (an
# etcdctl call can take a second on a loaded machine; inside the timed
# part it would count towards both mayu's gap and etcd's recovery).
RAFT_CUT=no
mayu_prepare() {
	RAFT_CUT=no
	[ "$1" = link-cut ] || return 0
	on "$2" "$BIN/etcdctl" --endpoints "http://$(addr_of "$2"):2379" endpoint status 2>/dev/null | grep -q ', true, ' && RAFT_CUT=yes
	return 0
}

# etcd_back ENDPOINTS RAFT_LEADER_CUT: how long after the cut the members
# left (ENDPOINTS) take a write again: etcd's own recovery, which a
# failover after a link cut cannot beat. One line per cut in $ETCD_BACK.
etcd_back() {
	local t0=$t end=$((SECONDS + 30))
	while [ $SECONDS -lt $end ]; do
		if on cli "$BIN/etcdctl" --endpoints "$1" --command-timeout=300ms put /bench/etcd-back x >/dev/null 2>&1; then
			echo "$t0 $(($(now_ms) - t0)) $2" >>"$ETCD_BACK"
			return 0
		fi
		sleep 0.05
	done
}
mayu_restore() { # kind host
	local i=${2#n}
	case $1 in
	kill-9 | sigterm) mayu_replica_start "$i" ;;
	sigstop) kill -CONT "${PIDS[$i]}" ;;
	link-cut)
		link "$2" up
		etcd_healthy
		one_leader
		;;
	esac
}

# one_leader: wait until exactly one replica says it leads (a replica cut
# off says so until it learns it was deposed).
one_leader() {
	local end=$((SECONDS + 30)) h n
	while [ $SECONDS -lt $end ]; do
		n=0
		for h in n1 n2 n3; do
			on "$h" curl -sf --max-time 2 http://127.0.0.1:4082/leader 2>/dev/null | grep -q '^leader' && n=$((n + 1))
		done
		[ "$n" = 1 ] && return 0
		sleep 0.2
	done
	die "mayu: not exactly one leader 30 s after the link came back"
}
mayu_down() {
	[ -z "${FAILOVER_KEEP:-}" ] || for i in 1 2 3; do cp "$WORK/mayu/m$i/mayu.log" "$FAILOVER_KEEP/mayu-r$i.log"; done
	for i in 1 2 3; do stop_pid "${PIDS[$i]}"; done
	for p in "${ETCD_PIDS[@]}"; do stop_pid "$p"; done
}
mayu_logs() { for i in 1 2 3; do printf '\n--- r%s\n' "$i"; tail -n 15 "$WORK/mayu/m$i/mayu.log"; done; }
mayu_label() { echo "mayu, 3 replicas, 3-member etcd (election TTL $ttl, deposition on)"; }

# etcd_healthy: all three members healthy again (after a link cut).
etcd_healthy() {
	local end=$((SECONDS + 60))
	while [ $SECONDS -lt $end ]; do
		[ "$(on n1 "$BIN/etcdctl" --endpoints "$ETCD_ENDPOINTS" endpoint health 2>&1 | grep -c 'is healthy')" = 3 ] && return 0
		sleep 0.2
	done
	die "the etcd cluster did not become healthy again"
}

# --- keepalived VRRP + dnsmasq ----------------------------------------------

keepalived_up() {
	local d=$WORK/ka i prio
	mkdir -p "$d"
	# notify scripts: the VIP holder, and only it, runs dnsmasq. One
	# lease file for all, so a new holder knows the leases of the last.
	cat >"$d/up.sh" <<EOF
#!/bin/sh
# keepalived notify_master: start dnsmasq on this host (\$1).
[ -f "$d/\$1.pid" ] && kill -0 "\$(cat "$d/\$1.pid")" 2>/dev/null && exit 0
exec dnsmasq --conf-file=/dev/null --port=0 --interface=eth0 --bind-interfaces \\
	--pid-file="$d/\$1.pid" --dhcp-leasefile="$d/leases" \\
	--dhcp-range=10.99.0.100,10.99.0.199,1h --no-ping --quiet-dhcp --dhcp-authoritative \\
	--dhcp-match=set:bios,option:client-arch,0 --dhcp-boot=tag:bios,undionly.kpxe,,$VIP
EOF
	cat >"$d/down.sh" <<EOF
#!/bin/sh
# keepalived notify_backup, _fault, _stop: stop this host's (\$1) dnsmasq.
[ -f "$d/\$1.pid" ] && kill "\$(cat "$d/\$1.pid")" 2>/dev/null
rm -f "$d/\$1.pid"
exit 0
EOF
	chmod 755 "$d/up.sh" "$d/down.sh"
	for i in 1 2 3; do
		prio=$((200 - 50 * i))
		cat >"$d/n$i.conf" <<EOF
global_defs {
  script_user root
}
vrrp_instance mayu_bench {
  state BACKUP
  interface eth0
  virtual_router_id 77
  priority $prio
  advert_int 1
  nopreempt
  virtual_ipaddress {
    $VIP/24 dev eth0
  }
  notify_master "$d/up.sh n$i"
  notify_backup "$d/down.sh n$i"
  notify_fault "$d/down.sh n$i"
  notify_stop "$d/down.sh n$i"
}
EOF
		ka_start "n$i"
	done
	local end=$((SECONDS + 30))
	until [ -n "$(ka_holder)" ]; do
		[ $SECONDS -lt $end ] || die "keepalived: nobody took $VIP"
		sleep 0.2
	done
}
declare -A KA_PIDS
ka_start() { # host
	local d=$WORK/ka
	start_in "$1" "$d/$1.log" keepalived -n -l -D --vrrp -f "$d/$1.conf" \
		-p "$d/$1-ka.pid" -r "$d/$1-vrrp.pid"
	KA_PIDS[$1]=$STARTED
}
ka_holder() {
	local h
	for h in n1 n2 n3; do
		ip -n "$LAB-$h" -4 -br addr show dev eth0 | grep -q " $VIP/" && {
			echo "$h"
			return 0
		}
	done
	return 0
}
keepalived_leader() {
	local end=$((SECONDS + 30)) h
	while [ $SECONDS -lt $end ]; do
		h=$(ka_holder)
		[ -n "$h" ] && [ -n "$(pids_in "$h" dnsmasq)" ] && echo "$h" && return 0
		sleep 0.2
	done
	die "keepalived: no holder of $VIP runs dnsmasq"
}
keepalived_fail() { # kind host
	case $1 in
	kill-9)
		# The host dies: its processes, and the address with them.
		kill -KILL $(pids_in "$2" keepalived dnsmasq) 2>/dev/null || true
		ip -n "$LAB-$2" addr del "$VIP/24" dev eth0 2>/dev/null || true
		rm -f "$WORK/ka/$2.pid"
		;;
	sigterm) kill -TERM "${KA_PIDS[$2]}" ;;
	sigstop) kill -STOP $(pids_in "$2" keepalived dnsmasq) 2>/dev/null || true ;;
	link-cut) link "$2" down ;;
	esac
}
keepalived_restore() { # kind host
	case $1 in
	kill-9 | sigterm)
		# Whatever is left of it (a VRRP child still going), then a
		# fresh start: keepalived refuses to start beside its pid files.
		local p
		for p in $(pids_in "$2" keepalived); do stop_pid "$p" KILL; done
		stop_pid "${KA_PIDS[$2]}" KILL
		rm -f "$WORK/ka/$2-ka.pid" "$WORK/ka/$2-vrrp.pid"
		ka_start "$2"
		;;
	sigstop) kill -CONT $(pids_in "$2" keepalived dnsmasq) 2>/dev/null || true ;;
	link-cut) link "$2" up ;;
	esac
	sleep 3 # let VRRP settle (a thawed or reconnected master meets the new one)
}
keepalived_down() {
	local h
	for h in n1 n2 n3; do stop_pid "${KA_PIDS[$h]}"; done
	for h in n1 n2 n3; do kill $(pids_in "$h" dnsmasq) 2>/dev/null || true; done
}
keepalived_logs() { for h in n1 n2 n3; do printf '\n--- %s\n' "$h"; tail -n 15 "$WORK/ka/$h.log"; done; }
keepalived_label() { echo "keepalived $(keepalived --version 2>&1 | sed -n '1s/^Keepalived v\([^ ]*\).*/\1/p') VRRP (advert_int 1) + dnsmasq on the holder, 3 hosts"; }

# --- Kea HA hot-standby -----------------------------------------------------

KEA_HOOKS=$(dirname "$(dpkg -L kea-dhcp4-server 2>/dev/null | grep 'hooks/libdhcp_ha.so$' | head -1)")
[ -n "$KEA_HOOKS" ] && [ "$KEA_HOOKS" != . ] || KEA_HOOKS=/usr/lib/x86_64-linux-gnu/kea/hooks
declare -A KEA_PIDS
kea_ha_conf() { # name (server1|server2)
	local d=$WORK/kea/$1
	mkdir -p "$d"
	cat >"$d/kea.json" <<EOF
{"Dhcp4": {
  "interfaces-config": {"interfaces": ["eth0"], "dhcp-socket-type": "raw"},
  "control-socket": {"socket-type": "unix", "socket-name": "$d/kea.sock"},
  "lease-database": {"type": "memfile", "persist": true, "name": "$d/leases.csv", "lfc-interval": 3600},
  "multi-threading": {"enable-multi-threading": true, "thread-pool-size": 2, "packet-queue-size": 64},
  "hooks-libraries": [
    {"library": "$KEA_HOOKS/libdhcp_lease_cmds.so"},
    {"library": "$KEA_HOOKS/libdhcp_ha.so", "parameters": {"high-availability": [{
      "this-server-name": "$1", "mode": "hot-standby",
      "heartbeat-delay": $hb, "max-response-delay": $((3 * hb)), "max-ack-delay": $hb, "max-unacked-clients": 0,
      "multi-threading": {"enable-multi-threading": true, "http-dedicated-listener": true,
        "http-listener-threads": 2, "http-client-threads": 2},
      "peers": [
        {"name": "server1", "url": "http://10.99.0.2:8001/", "role": "primary", "auto-failover": true},
        {"name": "server2", "url": "http://10.99.0.3:8001/", "role": "standby", "auto-failover": true}]}]}}],
  "valid-lifetime": 3600,
  "client-classes": [
    {"name": "bios", "test": "option[93].hex == 0x0000", "boot-file-name": "undionly.kpxe", "next-server": "10.99.0.2"}
  ],
  "subnet4": [{"id": 2, "subnet": "10.99.0.0/24", "pools": [{"pool": "10.99.0.100 - 10.99.0.199"}]}],
  "loggers": [
    {"name": "kea-dhcp4", "severity": "WARN", "output_options": [{"output": "$d/kea.log"}]},
    {"name": "kea-dhcp4.ha-hooks", "severity": "INFO", "output_options": [{"output": "$d/kea.log"}]}
  ]
}}
EOF
}
kea_ha_start() { # host
	local name=server1 d
	[ "$1" = n2 ] && name=server2
	d=$WORK/kea/$name
	start_in "$1" "$d/stdout" env KEA_PIDFILE_DIR="$d" KEA_LOCKFILE_DIR="$d" KEA_LOGGER_DESTINATION="$d/kea.log" \
		kea-dhcp4 -c "$d/kea.json"
	KEA_PIDS[$1]=$STARTED
}
kea-ha_up() {
	kea_ha_conf server1
	kea_ha_conf server2
	kea_ha_start n1
	kea_ha_start n2
	wait_log "$WORK/kea/server1/kea.log" "HOT-STANDBY state" 60 "${KEA_PIDS[n1]}"
	wait_log "$WORK/kea/server2/kea.log" "HOT-STANDBY state" 60 "${KEA_PIDS[n2]}"
}
kea-ha_leader() {
	local end=$((SECONDS + 30)) h
	while [ $SECONDS -lt $end ]; do
		h=$(host_of "$(last_server)") && echo "$h" && return 0
		sleep 0.2
	done
	die "kea-ha: no server answers"
}
kea-ha_fail() { # kind host
	case $1 in
	kill-9) stop_pid "${KEA_PIDS[$2]}" KILL ;;
	sigterm) stop_pid "${KEA_PIDS[$2]}" TERM ;;
	sigstop) kill -STOP "${KEA_PIDS[$2]}" ;;
	link-cut) link "$2" down ;;
	esac
}
kea-ha_restore() { # kind host
	case $1 in
	kill-9 | sigterm) kea_ha_start "$2" ;;
	sigstop) kill -CONT "${KEA_PIDS[$2]}" ;;
	link-cut) link "$2" up ;;
	esac
	# The pair syncs its leases and goes back to hot-standby, the primary
	# answering: wait for that, so its handover is not counted as the
	# next failure's gap.
	local end=$((SECONDS + 60))
	while [ $SECONDS -lt $end ]; do
		[ "$(last_server)" = 10.99.0.2 ] && [ "$(grep -c 'HOT-STANDBY state' "$WORK/kea/server1/kea.log")" -gt "${KEA_SEEN:-0}" ] && break
		sleep 0.5
	done
	KEA_SEEN=$(grep -c 'HOT-STANDBY state' "$WORK/kea/server1/kea.log" || true)
	sleep 2
}
kea-ha_down() { for h in n1 n2; do stop_pid "${KEA_PIDS[$h]}"; done; }
kea-ha_logs() { for s in server1 server2; do printf '\n--- %s\n' "$s"; tail -n 15 "$WORK/kea/$s/kea.log" "$WORK/kea/$s/stdout"; done; }
kea-ha_label() { echo "Kea $(kea-dhcp4 -v) HA hot-standby pair (heartbeat ${hb} ms, max-response-delay $((3 * hb)) ms, max-unacked-clients 0)"; }

# --- the run -----------------------------------------------------------------

declare -A SUMMARY CONFLICT ETCD_RECOVERY
for sys in "${systems[@]}"; do
	log "failover: $sys, $kills × each of ${kinds[*]}"
	"${sys}_up"
	PROBE=$WORK/$sys.probe EVENTS=$WORK/$sys.events ETCD_BACK=$WORK/$sys.etcd-back
	: >"$EVENTS"
	: >"$ETCD_BACK"
	start_in cli "$WORK/$sys.probe.stderr" "$WORK/dhcpprobe" -i eth0 -every 50ms -timeout "$timeout" -macs 16 -duration 60m -out "$PROBE"
	probe_pid=$STARTED
	t=$(now_ms)
	for _ in $(seq 1 300); do answered_since "$t" && break; sleep 0.1; done
	answered_since "$t" || die "$sys: the prober gets no answer$("${sys}_logs")"
	KEA_SEEN=$(grep -c 'HOT-STANDBY state' "$WORK/kea/server1/kea.log" 2>/dev/null || true)
	for kind in "${kinds[@]}"; do
		for n in $(seq 1 "$kills"); do
			h=$("${sys}_leader")
			! declare -F "${sys}_prepare" >/dev/null || "${sys}_prepare" "$kind" "$h"
			sleep 1 # the prober is answered by this server for a while
			t=$(now_ms)
			echo "$t $kind" >>"$EVENTS"
			"${sys}_fail" "$kind" "$h"
			for _ in $(seq 1 600); do answered_by_other_since "$t" "$h" && break; sleep 0.05; done
			answered_by_other_since "$t" "$h" || die "$sys: no DHCP answer within 30 s after $kind of $h$("${sys}_logs")"
			log "  $sys $kind $n/$kills: $h failed, answered again after $(($(now_ms) - t)) ms (upper bound) by $(last_server)"
			"${sys}_restore" "$kind" "$h"
		done
	done
	stop_pid "$probe_pid" INT
	"$WORK/gaps" -log "$PROBE" -events "$EVENTS" >"$WORK/$sys.gaps" || die "gaps: $(cat "$WORK/$sys.gaps")"
	CONFLICT[$sys]=$(grep '^conflict' "$WORK/$sys.gaps" || true)
	[ -z "${CONFLICT[$sys]}" ] || log "  ${CONFLICT[$sys]}"
	SUMMARY[$sys]=$(grep '^summary' "$WORK/$sys.gaps")
	log "  $(tr '\n' ';' <<<"${SUMMARY[$sys]}")"
	if [ -s "$ETCD_BACK" ]; then
		# Each cut beside etcd's own recovery from it: the target is the
		# gap no more than that plus 0.5 s, in every run.
		paste -d ' ' <(grep '^event' "$WORK/$sys.gaps") "$EVENTS" |
			awk 'NR == FNR { back[$1] = $2 / 1000; raft[$1] = $3; next }
				$3 == "link-cut" && ($6 in back) {
					printf "  link-cut at %s: gap %.3f s, etcd takes writes after %.3f s (raft leader cut: %s): %+.3f s\n", $2, $5, back[$6], raft[$6], $5 - back[$6] }' "$ETCD_BACK" - >&2
		ETCD_RECOVERY[$sys]=$(sort -k2,2n "$ETCD_BACK" | awk '{ n++; s[n] = $2 / 1000; if ($3 == "yes") r++ } END {
			m = (n % 2) ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2
			printf "etcd takes writes again %.3f s (median) / %.3f s (max) after the cut; the cut host held the raft leader %d of %d times", m, s[n], r, n }')
		log "  ${ETCD_RECOVERY[$sys]}"
	fi
	[ -z "${FAILOVER_KEEP:-}" ] || cp "$PROBE" "$EVENTS" "$ETCD_BACK" "$WORK/$sys.gaps" "$FAILOVER_KEEP/" 2>/dev/null || true
	"${sys}_down"
done

field() { sed -n "s/^summary $1 .*$2=\([0-9.]*\).*/\1/p" <<<"$3"; }
echo
echo "### Failover: DHCP gap seen by a prober asking every 50 ms, seconds (median / max)"
echo
echo "$(machine). $kills failures of each kind per system, the failed server restored after each."
echo
header="| system |" rule="|---|"
for kind in "${kinds[@]}"; do
	header="$header $kind |" rule="$rule---:|"
done
echo "$header"
echo "$rule"
for sys in "${systems[@]}"; do
	row="| $("${sys}_label") |"
	for kind in "${kinds[@]}"; do
		row="$row $(field "$kind" median "${SUMMARY[$sys]}") / $(field "$kind" max "${SUMMARY[$sys]}") |"
	done
	echo "$row"
done
echo
for sys in "${systems[@]}"; do
	[ -z "${CONFLICT[$sys]}" ] || echo "- $sys: ${CONFLICT[$sys]}"
	[ -z "${ETCD_RECOVERY[$sys]:-}" ] || echo "- $sys, link-cut: ${ETCD_RECOVERY[$sys]}"
done
echo
