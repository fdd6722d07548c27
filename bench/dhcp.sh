#!/bin/bash
# DHCP side by side: the DORA rate each server sustains at under 2.5 %
# drops, measured with Kea's perfdhcp, and the time a boot storm of 1000
# clients takes until every one is answered (perfdhcp --scenario avalanche).
#
# One network segment (a bridge) with a client host and three server hosts,
# all namespaces made here:
#
#   cli  10.99.0.250/24, 10.98.0.2/16   perfdhcp (always a relay: giaddr 10.98.0.2, port 67)
#   n1   10.99.0.2/24,   10.98.0.11/16  the server under test (Kea's HA primary)
#   n2   10.99.0.3/24,   10.98.0.12/16  mayu replica 2 / etcd member 2 / Kea's HA standby
#   n3   10.99.0.4/24,   10.98.0.13/16  mayu replica 3 / etcd member 3
#
# Servers, one after the other, each answering PXE clients (option 93 = 0,
# vendor class PXEClient: perfdhcp sends both) from the 10.98.0.0/16 pool
# with a boot file and next-server:
#   mayu          one replica on its embedded etcd (fsync per commit batch)
#   mayu x3       three replicas on a 3-member etcd; perfdhcp asks the leader
#   dnsmasq       lease file rewritten on every change
#   Kea           memfile (CSV append), single-threaded (Kea 2.2's default)
#   Kea MT        memfile, multi-threaded (2 threads)
#   Kea HA        hot-standby pair, memfile, the primary waits for the
#                 standby to acknowledge each lease update before its ACK;
#                 HA+MT with dedicated listeners (Kea's fast HA set-up; it
#                 needs core multi-threading, so 2 threads)
#
# Rate search, per run: -r 500, doubling while the run passes, then three
# bisections. A run passes when fewer than 2.5 % of the exchanges fail
# (1 - ACKs received / DISCOVERs sent) and perfdhcp reached 90 % of the rate
# asked. Reported: perfdhcp's achieved 4-way exchanges/s of the best passing
# run. Three runs per server (BENCH_QUICK=1: one, shorter).
#
# mayu's new-client budget per relay (cluster.dhcp.new_clients_per_second
# and new_clients_burst; defaults 20/s and 200) would stop perfdhcp, whose
# every client is new and comes from one relay: the config sets both to
# 1000000 (internal/fixture RelayBudget), and the tables say so.
#
# proxyDHCP, in the same run: mayu with both pools in proxy mode
# (cluster.pools[].mode: proxy) next to dnsmasq in proxy mode
# (dhcp-range=...,proxy with pxe-service). A proxy hands out no address,
# so the exchange measured is DISCOVER → proxy OFFER (perfdhcp -i): the
# answered PXE DISCOVERs per second at under 2.5 % unanswered, by the same
# rate search. No boot storm for them (an avalanche waits for addresses).
#
# DHCP_CPU_RATE=N adds, after each server's rate searches, a fixed-rate
# run at N exchanges/s and the CPU time each process of the lab spent per
# completed exchange (the etcd members, each replica, perfdhcp, Kea),
# with mayu's lease grouping over that run.
#
# Usage: bench/dhcp.sh [server...]   (default: all; names: mayu mayu3
#        dnsmasq kea kea-mt kea-ha mayu-proxy dnsmasq-proxy; and, not in
#        the default, mayu-fleet0 mayu-fleet: bench/fleet.sh's)
. "$(dirname "$0")/lib.sh"

need_root
need perfdhcp kea-dhcp4 dnsmasq curl "$MAYU" "$BIN/etcd" "$BIN/etcdctl"

servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(mayu mayu3 dnsmasq kea kea-mt kea-ha mayu-proxy dnsmasq-proxy)
# EXCHANGE: dora (4-way, the servers that lease) or do (DISCOVER-OFFER
# only, -i: the proxies); each start_X sets it.
EXCHANGE=dora
if [ "$BENCH_QUICK" = 1 ]; then
	runs=1 period=2 storm=1
else
	runs=${DHCP_RUNS:-3} period=${DHCP_PERIOD:-4} storm=${DHCP_STORMS:-3}
fi
clients=20000 # perfdhcp's simulated clients in a rate run
# PXE: option 93 (client architecture) = 0 (BIOS), vendor class "PXEClient".
pxe=(-o 93,0000 -o 60,505845436c69656e74)

seg_new
seg_host cli 10.99.0.250/24 10.98.0.2/16
seg_host n1 10.99.0.2/24 10.98.0.11/16
seg_host n2 10.99.0.3/24 10.98.0.12/16
seg_host n3 10.99.0.4/24 10.98.0.13/16

# perf RATE SECONDS TARGET: one perfdhcp run; prints "achieved fail%".
perf() {
	local rate=$1 secs=$2 target=$3 out
	local only=()
	[ "$EXCHANGE" = do ] && only=(-i)
	out=$(on cli perfdhcp -4 -l 10.98.0.2 -r "$rate" -R "$clients" -p "$secs" "${only[@]}" "${pxe[@]}" "$target" 2>&1) || true
	awk -v ex="$EXCHANGE" '
		/^Rate:/ { rate = $2 }
		/Statistics for: DISCOVER-OFFER/ { sec = "do" }
		/Statistics for: REQUEST-ACK/ { sec = "ra" }
		/^sent packets:/ && sec == "do" { disc = $3 }
		/^received packets:/ && sec == (ex == "do" ? "do" : "ra") { acks = $3 }
		END {
			if (disc == "" || disc == 0) { print "0 100"; exit }
			printf "%.0f %.2f\n", rate, 100 * (1 - acks / disc)
		}' <<<"$out"
}

# search TARGET: the rate search; prints the best passing achieved rate.
search() {
	local target=$1 r=500 best=0 lo=0 hi=0 a f i
	on cli perfdhcp -4 -l 10.98.0.2 -r 100 -R 200 -p 1 "${pxe[@]}" "$target" >/dev/null 2>&1 || true # warm-up
	pass() { # RATE: sets a, f; succeeds if the run passes
		read -r a f < <(perf "$1" "$period" "$target")
		log "    -r $1: $a exchanges/s, $f % failed"
		sleep 1
		awk -v a="$a" -v f="$f" -v r="$1" 'BEGIN { exit !(f < 2.5 && a >= 0.9 * r) }'
	}
	while [ $r -le 64000 ]; do
		if pass $r; then
			lo=$r
			[ "$a" -gt "$best" ] && best=$a
			r=$((r * 2))
		else
			hi=$r
			break
		fi
	done
	if [ $lo = 0 ]; then # not even 500/s: search below
		hi=500 lo=0
	fi
	[ $hi = 0 ] && {
		echo "$best"
		return
	}
	for i in 1 2 3; do
		r=$(((lo + hi) / 2))
		[ $r -le 0 ] && break
		if pass $r; then
			lo=$r
			[ "$a" -gt "$best" ] && best=$a
		else
			hi=$r
		fi
	done
	echo "$best"
}

# cpu_profile TARGET RATE: one perfdhcp run of DHCP_CPU_SECONDS (10) at
# RATE against the server running now, and the CPU each process of the
# lab used per completed exchange (ACK received), perfdhcp's own
# included: where the CPU goes, which the rate alone does not say. For
# mayu, the leader's lease grouping (mayu_dhcp_lease_transaction_leases)
# over the same run.
cpu_profile() {
	local target=$1 rate=$2 secs=${DHCP_CPU_SECONDS:-10} before after out acks pc h g0 g1
	h=$(lab_host_of "$target")
	g0=$(lease_groups "$h")
	before=$(lab_cpu)
	out=$(on cli bash -c '"$@" 2>&1; times' _ perfdhcp -4 -l 10.98.0.2 -r "$rate" -R "$clients" -p "$secs" "${pxe[@]}" "$target") || true
	after=$(lab_cpu)
	g1=$(lease_groups "$h")
	acks=$(awk '/Statistics for: REQUEST-ACK/ { s = 1 } /^received packets:/ && s { print $3; exit }' <<<"$out")
	[ "${acks:-0}" -gt 0 ] || {
		log "  CPU at -r $rate: no exchange completed"
		return
	}
	log "  CPU at -r $rate for ${secs} s: $acks exchanges ($((acks / secs))/s), µs of CPU per exchange:"
	# times: the shell's own line, then its children's (perfdhcp).
	pc=$(tail -1 <<<"$out" | awk '{ for (i = 1; i <= 2; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } } END { print t }')
	log "    cli perfdhcp $(awk -v t="$pc" -v n="$acks" 'BEGIN { printf "%.0f", t * 1e6 / n }')"
	while read -r line; do log "    $line"; done < <(cpu_delta "$before" "$after" "$acks")
	# perfdhcp's drops and delays: a server may keep the rate and still
	# fail the 2.5 % of a search run by the exchanges it has not finished
	# when the run ends (its latency), not only by the ones it dropped.
	awk '/Statistics for: DISCOVER-OFFER/ { s = "DISCOVER-OFFER" } /Statistics for: REQUEST-ACK/ { s = "REQUEST-ACK" }
		s && /^drops:/ { d[s] = $2 } s && /^avg delay:/ { a[s] = $3 } s && /^max delay:/ { m[s] = $3 }
		END { for (k in d) printf "    %s: %s dropped, delay avg %s ms, max %s ms\n", k, d[k], a[k], m[k] }' <<<"$out" | sort >&2
	[ -n "$g0" ] && [ -n "$g1" ] && awk -v a="$g0" -v b="$g1" 'BEGIN {
		split(a, x, " "); split(b, y, " "); n = y[2] - x[2]
		if (n > 0) printf "    leader: %d lease transactions, %.1f leases each\n", n, (y[1] - x[1]) / n
	}' >&2
	return 0
}

# lab_host_of ADDR: the lab host whose address on the segment ADDR is.
lab_host_of() {
	case $1 in 10.99.0.2) echo n1 ;; 10.99.0.3) echo n2 ;; 10.99.0.4) echo n3 ;; esac
}

# lease_groups HOST: "SUM COUNT" of HOST's mayu_dhcp_lease_transaction_leases
# (empty where mayu does not export it, or no mayu runs).
lease_groups() {
	on "$1" curl -sf --max-time 2 http://127.0.0.1:4082/metrics 2>/dev/null |
		awk '/^mayu_dhcp_lease_transaction_leases_sum/ { s = $2 } /^mayu_dhcp_lease_transaction_leases_count/ { c = $2 } END { if (c != "") print s, c }' || true
}

# avalanche TARGET: seconds until 1000 PXE clients all have an address.
avalanche() {
	local target=$1 out t
	[ "$EXCHANGE" = do ] && {
		echo -
		return
	}
	out=$(on cli timeout 300 perfdhcp -4 -l 10.98.0.2 --scenario avalanche -R 1000 "${pxe[@]}" "$target" 2>&1) || true
	t=$(sed -n 's/^It took \([0-9:.]*\) to provision.*/\1/p' <<<"$out" | awk -F: '{ printf "%.2f", $1 * 3600 + $2 * 60 + $3 }')
	echo "${t:--}"
}

# --- servers ---------------------------------------------------------------

# Each start_X leaves the address to send to in $TARGET and what to stop in
# $RUNNING; stop_all stops it and wipes the state.
RUNNING=()
stop_all() {
	local p
	for p in "${RUNNING[@]}"; do stop_pid "$p"; done
	RUNNING=()
	if [ "${BENCH_KEEP:-0}" = 1 ] && [ -d "$WORK/srv" ]; then
		# The servers' logs of each run, for BENCH_KEEP=1.
		_kept=$((${_kept:-0} + 1))
		find "$WORK/srv" -name '*.log' | while read -r f; do
			mkdir -p "$WORK/kept/$_kept/$(dirname "${f#"$WORK/srv/"}")"
			cp "$f" "$WORK/kept/$_kept/${f#"$WORK/srv/"}"
		done
	fi
	rm -rf "$WORK/srv" "$WORK"/etcd-n*
	mkdir -p "$WORK/srv"
	EXCHANGE=dora
}

start_mayu() {
	local d=$WORK/srv/m1
	mkdir -p "$d"
	mayu_files "$d" 1
	mayu_config "$d" r1 10.99.0.2
	LIMITS=$(mayu_limits "$d")
	mayu_start n1 "$d"
	RUNNING+=("$STARTED")
	wait_log "$d/mayu.log" "answering DHCP" 60 "$STARTED"
	TARGET=10.99.0.2
	log "  mayu runs with $(mayu_dhcp_limits "$d")"
}

# start_mayu_proxy: one replica whose pools are both in proxy mode.
start_mayu_proxy() {
	MAYU_PROXY=1 start_mayu
	EXCHANGE=do
}

# start_mayu_fleet0 and start_mayu_fleet: one replica with the pool of
# bin/fleetgen's leases (10.128.0.0/10) beside perfdhcp's; for mayu-fleet
# its etcd holds DHCP_FLEET_LEASES (100000) leases there, written by
# fleetgen while a first start of mayu ran, and mayu is started again, so
# that the leader measured loaded them all (cold: its own start).
# bench/fleet.sh compares the two: the rate with a fleet's leases against
# the rate with none, the same config.
start_mayu_fleet0() {
	MAYU_FLEET_POOL=1 start_mayu
}

start_mayu_fleet() {
	local d=$WORK/srv/m1 n=${DHCP_FLEET_LEASES:-100000} out ready
	MAYU_FLEET_POOL=1 start_mayu
	# DHCP_FLEET_PREFIX: another key prefix puts the same data in etcd
	# where mayu does not read it (etcd's share of the cost alone).
	out=$(on n1 "$BIN/fleetgen" -endpoints 127.0.0.1:2379 -prefix "${DHCP_FLEET_PREFIX:-/mayu/}" -machines 0 -leases "$n" 2>&1) ||
		die "fleetgen: $out"
	log "  $out"
	stop_pid "$STARTED"
	local p kept=()
	for p in "${RUNNING[@]}"; do [ "$p" = "$STARTED" ] || kept+=("$p"); done
	RUNNING=("${kept[@]}")
	mv "$d/mayu.log" "$d/mayu-first.log"
	mayu_start n1 "$d"
	RUNNING+=("$STARTED")
	wait_log "$d/mayu.log" "answering DHCP" 120 "$STARTED"
	ready=$(sed -n 's/.*answering DHCP.*ready_ms=\([0-9]*\).*/\1/p' "$d/mayu.log" | head -1)
	log "  mayu restarted on $n leases under ${DHCP_FLEET_PREFIX:-/mayu/}: answering ${ready:-?} ms after winning (cold)"
}

# mayu_dhcp_limits DIR: the cluster.dhcp line of DIR/mayu.yaml.
mayu_dhcp_limits() {
	local l
	l=$(sed -n 's/^  dhcp: *//p' "$1/mayu.yaml")
	echo "cluster.dhcp ${l:-(defaults: new_clients_per_second 20, new_clients_burst 200)}"
}

start_mayu3() {
	ETCD_PIDS=()
	etcd_cluster n1:10.99.0.2 n2:10.99.0.3 n3:10.99.0.4
	RUNNING+=("${ETCD_PIDS[@]}")
	local i h a d
	for i in 1 2 3; do
		h=n$i a=10.99.0.$((i + 1)) d=$WORK/srv/m$i
		mkdir -p "$d"
		if [ "$i" = 1 ]; then
			mayu_files "$d" 1
		else
			# The same files on every replica (bench/failover.sh's
			# mayu_up): replicas whose files differ from the leader's
			# would not campaign, nor probe it, as a real cluster's do.
			cp -a "$WORK/srv/m1/files" "$WORK/srv/m1/boot" "$d/"
		fi
		mayu_config "$d" "r$i" "$a" "$ETCD_ENDPOINTS"
		mayu_start "$h" "$d"
		RUNNING+=("$STARTED")
	done
	h=$(leader_of n1 n2 n3)
	wait_log "$WORK/srv/m${h#n}/mayu.log" "answering DHCP" 60
	TARGET=10.99.0.$((${h#n} + 1))
	log "  mayu x3: the leader is on $h ($TARGET); $(mayu_dhcp_limits "$WORK/srv/m${h#n}")"
}

start_dnsmasq() {
	local d=$WORK/srv/dnsmasq
	mkdir -p "$d"
	start_in n1 "$d/log" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 \
		--interface=eth0 --bind-interfaces --pid-file="$d/pid" --dhcp-leasefile="$d/leases" \
		--dhcp-range=10.98.1.0,10.98.255.250,255.255.0.0,1h --dhcp-range=10.99.0.100,10.99.0.199,1h \
		--dhcp-lease-max=100000 --no-ping --quiet-dhcp --dhcp-authoritative \
		--dhcp-match=set:bios,option:client-arch,0 --dhcp-match=set:efi64,option:client-arch,7 \
		--dhcp-boot=tag:bios,undionly.kpxe,,10.99.0.2 --dhcp-boot=tag:efi64,ipxe.efi,,10.99.0.2
	RUNNING+=("$STARTED")
	sleep 1
	kill -0 "$STARTED" 2>/dev/null || {
		cat "$d/log" >&2
		die "dnsmasq did not start"
	}
	TARGET=10.99.0.2
}

# start_dnsmasq_proxy: dnsmasq as a proxyDHCP server of both networks,
# answering BIOS PXE with undionly.kpxe from 10.99.0.2 as mayu does.
start_dnsmasq_proxy() {
	local d=$WORK/srv/dnsmasq-proxy
	mkdir -p "$d"
	start_in n1 "$d/log" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 \
		--interface=eth0 --bind-interfaces --pid-file="$d/pid" --dhcp-leasefile="$d/leases" \
		--dhcp-range=10.98.0.0,proxy,255.255.0.0 --dhcp-range=10.99.0.0,proxy,255.255.255.0 \
		--no-ping --quiet-dhcp --pxe-service=x86PC,"mayu",undionly,10.99.0.2
	RUNNING+=("$STARTED")
	sleep 1
	kill -0 "$STARTED" 2>/dev/null || {
		cat "$d/log" >&2
		die "dnsmasq (proxy) did not start"
	}
	TARGET=10.99.0.2
	EXCHANGE=do
}

# kea_conf NAME THREADS [HA_JSON]: a kea-dhcp4 configuration, all of its
# files in $WORK/srv/NAME.
kea_conf() {
	local name=$1 threads=$2 ha=${3:-} d=$WORK/srv/$1 mt hooks=""
	mkdir -p "$d"
	if [ "$threads" -gt 1 ]; then
		mt="\"multi-threading\": {\"enable-multi-threading\": true, \"thread-pool-size\": $threads, \"packet-queue-size\": 64},"
	else
		mt="\"multi-threading\": {\"enable-multi-threading\": false},"
	fi
	if [ -n "$ha" ]; then
		hooks="\"hooks-libraries\": [
      {\"library\": \"$KEA_HOOKS/libdhcp_lease_cmds.so\"},
      {\"library\": \"$KEA_HOOKS/libdhcp_ha.so\", \"parameters\": {\"high-availability\": [$ha]}}],"
	fi
	cat >"$d/kea.json" <<EOF
{"Dhcp4": {
  "interfaces-config": {"interfaces": ["eth0"], "dhcp-socket-type": "udp"},
  "control-socket": {"socket-type": "unix", "socket-name": "$d/kea.sock"},
  "lease-database": {"type": "memfile", "persist": true, "name": "$d/leases.csv", "lfc-interval": 3600},
  $mt
  $hooks
  "valid-lifetime": 3600,
  "client-classes": [
    {"name": "bios", "test": "option[93].hex == 0x0000", "boot-file-name": "undionly.kpxe", "next-server": "10.99.0.2"},
    {"name": "efi64", "test": "option[93].hex == 0x0007", "boot-file-name": "ipxe.efi", "next-server": "10.99.0.2"}
  ],
  "subnet4": [
    {"id": 1, "subnet": "10.98.0.0/16", "pools": [{"pool": "10.98.1.0 - 10.98.255.250"}]},
    {"id": 2, "subnet": "10.99.0.0/24", "pools": [{"pool": "10.99.0.100 - 10.99.0.199"}]}
  ],
  "loggers": [
    {"name": "kea-dhcp4", "severity": "WARN", "output_options": [{"output": "$d/kea.log"}]},
    {"name": "kea-dhcp4.ha-hooks", "severity": "INFO", "output_options": [{"output": "$d/kea.log"}]}
  ]
}}
EOF
}

# kea_run HOST NAME: start kea-dhcp4 with its pid and lock files in its
# own directory.
kea_run() {
	local d=$WORK/srv/$2
	start_in "$1" "$d/stdout" env KEA_PIDFILE_DIR="$d" KEA_LOCKFILE_DIR="$d" KEA_LOGGER_DESTINATION="$d/kea.log" \
		kea-dhcp4 -c "$d/kea.json"
	RUNNING+=("$STARTED")
}

KEA_HOOKS=$(dirname "$(dpkg -L kea-dhcp4-server 2>/dev/null | grep 'hooks/libdhcp_ha.so$' | head -1)")
[ -n "$KEA_HOOKS" ] && [ "$KEA_HOOKS" != . ] || KEA_HOOKS=/usr/lib/x86_64-linux-gnu/kea/hooks

start_kea() {
	kea_conf kea 1
	kea_run n1 kea
	wait_kea kea
	TARGET=10.99.0.2
}

start_kea_mt() {
	kea_conf kea-mt 2
	kea_run n1 kea-mt
	wait_kea kea-mt
	TARGET=10.99.0.2
}

start_kea_ha() {
	local peers='"peers": [
        {"name": "server1", "url": "http://10.99.0.2:8001/", "role": "primary", "auto-failover": true},
        {"name": "server2", "url": "http://10.99.0.3:8001/", "role": "standby", "auto-failover": true}]'
	local common='"mode": "hot-standby", "heartbeat-delay": 10000, "max-response-delay": 60000,
      "max-ack-delay": 5000, "max-unacked-clients": 5,
      "multi-threading": {"enable-multi-threading": true, "http-dedicated-listener": true,
        "http-listener-threads": 2, "http-client-threads": 2}'
	kea_conf kea-ha1 2 "{\"this-server-name\": \"server1\", $common, $peers}"
	kea_conf kea-ha2 2 "{\"this-server-name\": \"server2\", $common, $peers}"
	kea_run n1 kea-ha1
	kea_run n2 kea-ha2
	wait_log "$WORK/srv/kea-ha1/kea.log" "HOT-STANDBY state" 60 "${RUNNING[-2]}"
	wait_log "$WORK/srv/kea-ha2/kea.log" "HOT-STANDBY state" 60 "${RUNNING[-1]}"
	TARGET=10.99.0.2
}

wait_kea() {
	local d=$WORK/srv/$1
	sleep 1
	kill -0 "${RUNNING[-1]}" 2>/dev/null || {
		cat "$d/stdout" "$d/kea.log" >&2 2>/dev/null
		die "kea-dhcp4 ($1) did not start"
	}
}

label() {
	case $1 in
	mayu) echo "mayu, 1 replica, embedded etcd" ;;
	mayu3) echo "mayu, 3 replicas, 3-member etcd" ;;
	dnsmasq) echo "dnsmasq $(dnsmasq -v | sed -n '1s/.*version \([^ ]*\).*/\1/p')" ;;
	kea) echo "Kea $(kea-dhcp4 -v) memfile, 1 thread" ;;
	kea-mt) echo "Kea $(kea-dhcp4 -v) memfile, 2 threads" ;;
	kea-ha) echo "Kea $(kea-dhcp4 -v) HA hot-standby pair (HA+MT)" ;;
	mayu-proxy) echo "mayu proxy mode, 1 replica, embedded etcd" ;;
	mayu-fleet0) echo "mayu, 1 replica, embedded etcd, fleet pool, no leases" ;;
	mayu-fleet) echo "mayu, 1 replica, embedded etcd, fleet pool, ${DHCP_FLEET_LEASES:-100000} leases under ${DHCP_FLEET_PREFIX:-/mayu/}" ;;
	dnsmasq-proxy) echo "dnsmasq $(dnsmasq -v | sed -n '1s/.*version \([^ ]*\).*/\1/p') proxy mode" ;;
	esac
}

declare -A RATE STORM
mkdir -p "$WORK/srv"
for s in "${servers[@]}"; do
	log "DHCP: $(label "$s")"
	rates=() storms=()
	for run in $(seq 1 "$runs"); do
		stop_all
		"start_${s//-/_}"
		log "  run $run: rate search against $TARGET"
		rates+=("$(search "$TARGET")")
		log "  run $run: best ${rates[-1]} exchanges/s"
	done
	# DHCP_CPU_RATE=N: where the CPU goes at N exchanges/s (cpu_profile).
	# DHCP_RUNS=0 DHCP_STORMS=0: that run alone.
	if [ -n "${DHCP_CPU_RATE:-}" ]; then
		[ "$runs" = 0 ] && {
			stop_all
			"start_${s//-/_}"
		}
		[ "$EXCHANGE" = dora ] && cpu_profile "$TARGET" "$DHCP_CPU_RATE"
	fi
	storms_of=$storm
	case $s in *-proxy) storms_of=0 ;; esac # no avalanche without addresses
	for run in $(seq 1 "$storms_of"); do
		stop_all
		"start_${s//-/_}"
		storms+=("$(avalanche "$TARGET")")
		log "  avalanche $run: 1000 clients answered in ${storms[-1]} s"
	done
	if [ "$s" = mayu3 ]; then
		n=$(on n1 "$BIN/etcdctl" --endpoints "$(tr -d '[] ' <<<"$ETCD_ENDPOINTS")" get --prefix --count-only /mayu/leases/ -w fields 2>/dev/null | sed -n 's/^"Count" : //p')
		log "  mayu x3: $n leases in etcd after the storm of 1000 clients, all ACKed"
	fi
	stop_all
	RATE[$s]="${rates[*]}"
	STORM[$s]="${storms[*]}"
done

# --- the tables ------------------------------------------------------------

med() { median $1; }
leasing=0
for s in "${servers[@]}"; do
	case $s in *-proxy) ;; *) leasing=1 ;; esac
done
proxies=()
for s in "${servers[@]}"; do
	case $s in *-proxy) proxies+=("$s") ;; esac
done
if [ $leasing = 1 ]; then
echo
echo "### DHCP: DORA rate at under 2.5 % failed exchanges (perfdhcp, 4-way exchanges/s)"
echo
echo "$(machine); perfdhcp and the servers share the cores. Runs of ${period} s; best passing rate of each search."
echo "mayu's new-client budget per relay (\`cluster.dhcp\`): new_clients_per_second and new_clients_burst 1000000 (internal/fixture RelayBudget), above any rate perfdhcp reaches."
echo
if [ -n "${LIMITS:-}" ]; then
	echo "mayu ran with these limits (its defaults):"
	echo
	echo "$LIMITS"
	echo
fi
echo "| server | runs | median | mayu (1) / server | mayu (3) / server |"
echo "|---|---|---:|---:|---:|"
m1=$(med "${RATE[mayu]:-}")
m3=$(med "${RATE[mayu3]:-}")
for s in "${servers[@]}"; do
	case $s in *-proxy) continue ;; esac
	m=$(med "${RATE[$s]}")
	echo "| $(label "$s") | ${RATE[$s]// / · } | $m | $(ratio "$m1" "$m") | $(ratio "$m3" "$m") |"
done
echo
echo "### DHCP boot storm: 1000 PXE clients at once (perfdhcp --scenario avalanche), seconds until all are answered"
echo
echo "Time ratios: below 1, mayu answered the storm sooner."
echo
echo "| server | runs | median | mayu (1) / server | mayu (3) / server |"
echo "|---|---|---:|---:|---:|"
s1=$(med "${STORM[mayu]:-}")
s3=$(med "${STORM[mayu3]:-}")
for s in "${servers[@]}"; do
	case $s in *-proxy) continue ;; esac
	m=$(med "${STORM[$s]}")
	echo "| $(label "$s") | ${STORM[$s]// / · } | $m | $(ratio "$s1" "$m") | $(ratio "$s3" "$m") |"
done
echo
fi
if [ -n "${RATE[mayu-fleet]:-}" ] && [ -n "${RATE[mayu-fleet0]:-}" ]; then
	f=$(med "${RATE[mayu-fleet]}") f0=$(med "${RATE[mayu-fleet0]}")
	echo
	echo "### DHCP with a fleet's leases in etcd (issue 16, item 4)"
	echo
	echo "One replica on its embedded etcd, the same config (perfdhcp's pool and the fleet's pool); once with ${DHCP_FLEET_LEASES:-100000} leases in the fleet's pool (bin/fleetgen), once with none. Target: at least 0.9."
	echo
	echo "| leases | runs | median |"
	echo "|---|---|---:|"
	echo "| none | ${RATE[mayu-fleet0]// / · } | $f0 |"
	echo "| ${DHCP_FLEET_LEASES:-100000} | ${RATE[mayu-fleet]// / · } | $f |"
	echo
	echo "Rate with the leases / rate without: **$(ratio "$f" "$f0")**"
	echo
fi
if [ ${#proxies[@]} -gt 0 ]; then
	echo
	echo "### proxyDHCP: answered PXE DISCOVERs per second at under 2.5 % unanswered (perfdhcp -i, DISCOVER → proxy OFFER)"
	echo
	echo "Both servers answer BIOS PXE clients (relayed, giaddr 10.98.0.2) with boot options only, no address. Runs of ${period} s; best passing rate of each search."
	echo
	echo "| server | runs | median | mayu proxy / server |"
	echo "|---|---|---:|---:|"
	mp=$(med "${RATE[mayu-proxy]:-}")
	for s in "${proxies[@]}"; do
		m=$(med "${RATE[$s]}")
		echo "| $(label "$s") | ${RATE[$s]// / · } | $m | $(ratio "$mp" "$m") |"
	done
	echo
fi
