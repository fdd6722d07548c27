#!/bin/bash
# Artifacts: how long until a 1 GiB artifact is verified on all three
# replicas, next to one curl download of the same file over the same
# network in the same run; and the memory of each replica while it streams
# (it must stay flat: the bytes go to disk, never into memory).
#
#   curl  one `curl -o FILE` from the upstream to the client's disk, then an
#         fsync of the file (mayu fsyncs every artifact before it renames
#         it into its cache): seconds.
#   mayu  three replicas on a 3-member etcd; `mayuctl artifact add big
#         --url http://UP/big.img --sha256 HEX` to one of them, then
#         `mayuctl artifact list -o json` every 0.2 s until every replica
#         is a holder: seconds from the add until each replica holds it.
#         One replica downloads from upstream, the others copy from a peer.
#         Each replica's RSS (/proc/PID/status VmRSS) is sampled every 0.5 s
#         from its start: max before the add vs max during the transfer.
#         The upstream's /stats says how often it sent the whole file
#         (once for mayu, once for curl).
# Reported: seconds, MB/s (artifact size / seconds), the ratio mayu / curl,
# and the RSS table. ARTIFACT_MB sets the size (default 1024; BENCH_QUICK=1:
# 128).
#
# Network: a bridge with up (10.99.0.9, bin/upstream serving the file),
# n1..n3 (10.99.0.2-4, an etcd member and a mayu replica each) and cli
# (10.99.0.250, curl and mayuctl), namespaces made here.
#
# Usage: bench/artifacts.sh [curl] [mayu]   (default: both)
. "$(dirname "$0")/lib.sh"

need_root
[ -x "$BIN/upstream" ] || die "$BIN/upstream is missing: make upstream (make bench builds it)"
MAYUCTL=${MAYUCTL:-$BIN/mayuctl} # as MAYU: another build
need curl jq sha256sum "$MAYU" "$MAYUCTL" "$BIN/upstream" "$BIN/etcd" "$BIN/etcdctl"

sides=("$@")
[ ${#sides[@]} -gt 0 ] || sides=(curl mayu)
mb=${ARTIFACT_MB:-1024}
[ "$BENCH_QUICK" = 1 ] && mb=${ARTIFACT_MB:-128}
hold_timeout=${ARTIFACT_TIMEOUT:-$((120 + mb))} # seconds for all replicas to hold it
UP=10.99.0.9:8080
URL=http://$UP/big.img

# holders NAME: the replicas that hold artifact NAME, one per line, from
# `mayuctl artifact list -o json` on stdin (a list of {name, status,
# holders: [{replica, ...}]}, bare or under "artifacts"/"items").
holders() {
	jq -r --arg n "$1" '(if type == "array" then . else (.artifacts // .items // []) end)
		| .[] | select(.name == $n) | (.holders // [])[] | (.replica // .name // .)' 2>/dev/null | sort -u
}

seg_new
seg_host up 10.99.0.9/24
seg_host n1 10.99.0.2/24
seg_host n2 10.99.0.3/24
seg_host n3 10.99.0.4/24
seg_host cli 10.99.0.250/24

updir=$WORK/up
mkdir -p "$updir"
log "artifacts: writing a $mb MiB file"
head -c $((mb * 1048576)) /dev/urandom >"$updir/big.img"
size=$(stat -c %s "$updir/big.img")
sha=$(sha256sum "$updir/big.img" | cut -d' ' -f1)
chmod -R a+rX "$updir"

start_in up "$WORK/upstream.log" "$BIN/upstream" -dir "$updir" -listen "$UP"
UP_PID=$STARTED
wait_log "$WORK/upstream.log" "upstream: serving" 20 "$UP_PID"
wait_tcp cli 10.99.0.9 8080 20

# upstream_full: how many answers of the upstream carried the whole file.
upstream_full() {
	on cli curl -sf --max-time 10 "http://$UP/stats" | jq -r '."/big.img".full // 0'
}

declare -A SECS=()
run_curl() {
	log "curl: $URL to the client's disk"
	local out=$WORK/curl.img t0 got
	t0=$(date +%s.%N)
	got=$(on cli curl -s --max-time 600 -o "$out" -w '%{http_code} %{size_download}' "$URL")
	sync "$out" # fsync, as mayu does before it renames the file into its cache
	SECS[curl]=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }')
	[ "$got" = "200 $size" ] || die "curl got $got for $URL, want 200 $size"
	[ "$(sha256sum "$out" | cut -d' ' -f1)" = "$sha" ] || die "curl's copy differs from the upstream's file"
	rm -f "$out"
	log "  ${SECS[curl]} s"
}

# rss_sampler PID FILE: append "<unix time> <VmRSS kB>" every 0.5 s while
# PID lives.
rss_sampler() {
	local pid=$1 f=$2 rss
	while rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) && [ -n "$rss" ]; do
		echo "$(date +%s.%N) $rss" >>"$f"
		sleep 0.5
	done
}

# rss_max FILE FROM TO: the largest sample (MiB) taken in [FROM, TO).
rss_max() {
	awk -v a="$2" -v b="$3" '$1 >= a && $1 < b && $2 > m { m = $2 } END { if (m == "") print "-"; else printf "%.1f\n", m / 1024 }' "$1"
}

declare -A HELD=() RSS_BEFORE=() RSS_DURING=()
RSS_FLAT=""
MAYU_FULL="-"
run_mayu() {
	"$MAYUCTL" artifact --help >/dev/null 2>&1 || die "$MAYUCTL has no 'artifact' command (issue 12): build it first"
	ETCD_PIDS=()
	etcd_cluster n1:10.99.0.2 n2:10.99.0.3 n3:10.99.0.4
	local i d pids=() full0
	for i in 1 2 3; do
		d=$WORK/m$i
		mkdir -p "$d"
		mayu_files "$d" 1
		mayu_config "$d" "r$i" "10.99.0.$((i + 1))" "$ETCD_ENDPOINTS"
		mayu_start "n$i" "$d"
		pids+=("$STARTED")
		rss_sampler "$STARTED" "$d/rss" &
		_lab_pids+=("$!")
	done
	for i in 1 2 3; do
		wait_log "$WORK/m$i/mayu.log" "mayu started" 60 "${pids[$((i - 1))]}"
	done
	sleep 2 # settled: the "before" samples
	local ctl=("$MAYUCTL" --server http://10.99.0.2:4080 --token-file "$WORK/m1/admin-token")
	full0=$(upstream_full)
	log "mayu: artifact add big ($mb MiB) on r1, then until r1, r2, r3 all hold it"
	local t0 now h
	t0=$(date +%s.%N)
	on cli "${ctl[@]}" artifact add big --url "$URL" --sha256 "$sha" >"$WORK/add.out" 2>&1 ||
		die "mayuctl artifact add: $(cat "$WORK/add.out")"
	local end=$((SECONDS + hold_timeout))
	while [ ${#HELD[@]} -lt 3 ]; do
		[ $SECONDS -lt $end ] || die "after ${hold_timeout}s only ${!HELD[*]} hold the artifact: $(on cli "${ctl[@]}" artifact list 2>&1)"
		now=$(date +%s.%N)
		for h in $(on cli "${ctl[@]}" artifact list -o json 2>/dev/null | holders big); do
			if [ -z "${HELD[$h]:-}" ]; then
				HELD[$h]=$(awk -v a="$t0" -v b="$now" 'BEGIN { printf "%.2f", b - a }')
				log "  $h holds it after ${HELD[$h]} s"
			fi
		done
		sleep 0.2
	done
	SECS[mayu]=$(printf '%s\n' "${HELD[@]}" | sort -g | tail -1)
	SECS[first]=$(printf '%s\n' "${HELD[@]}" | sort -g | head -1)
	now=$(date +%s.%N)
	for i in 1 2 3; do
		RSS_BEFORE[r$i]=$(rss_max "$WORK/m$i/rss" 0 "$t0")
		RSS_DURING[r$i]=$(rss_max "$WORK/m$i/rss" "$t0" "$now")
		# Flat: less than 64 MiB more than before, where holding the
		# artifact in memory would add its whole size.
		if awk -v a="${RSS_BEFORE[r$i]}" -v b="${RSS_DURING[r$i]}" 'BEGIN { exit !(a == "-" || b == "-" || b - a >= 64) }'; then
			RSS_FLAT="$RSS_FLAT r$i"
		fi
	done
	MAYU_FULL=$(($(upstream_full) - full0))
	for i in 1 2 3; do stop_pid "${pids[$((i - 1))]}"; done
	for p in "${ETCD_PIDS[@]}"; do stop_pid "$p"; done
}

for s in "${sides[@]}"; do
	case $s in
	curl) run_curl ;;
	mayu) run_mayu ;;
	*) die "unknown side $s (curl, mayu)" ;;
	esac
done

mbps() { awk -v s="$1" -v b="$size" 'BEGIN { if (s == "" || s == "-" || s + 0 == 0) print "-"; else printf "%.1f MB/s\n", b / s / 1e6 }'; }

echo
echo "### Artifacts: a $mb MiB artifact verified on 3 replicas, against one curl download"
echo
echo "$(machine); upstream, replicas, etcd and curl share the cores and the disk."
echo
echo "| | seconds | size / seconds | / curl |"
echo "|---|---:|---:|---:|"
[ -z "${SECS[curl]:-}" ] || echo "| curl from the upstream, to disk, fsync | ${SECS[curl]} | $(mbps "${SECS[curl]}") | 1.00 |"
if [ -n "${SECS[mayu]:-}" ]; then
	for h in $(printf '%s\n' "${!HELD[@]}" | sort); do
		echo "| mayu: $h holds it | ${HELD[$h]} | $(mbps "${HELD[$h]}") | $(ratio "${HELD[$h]}" "${SECS[curl]:-}") |"
	done
	echo "| **mayu: all 3 replicas hold it** | ${SECS[mayu]} | $(mbps "${SECS[mayu]}") | **$(ratio "${SECS[mayu]}" "${SECS[curl]:-}")** |"
	echo
	echo "The upstream sent the whole file $MAYU_FULL time(s) to mayu (want 1: the other replicas copy from a peer)."
	echo
	echo "| replica | max RSS before the add | max RSS during the transfer | flat (< 64 MiB more) |"
	echo "|---|---:|---:|---|"
	for i in 1 2 3; do
		flat=yes
		[[ " $RSS_FLAT " == *" r$i "* ]] && flat=**no**
		echo "| r$i | ${RSS_BEFORE[r$i]} MiB | ${RSS_DURING[r$i]} MiB | $flat |"
	done
fi
echo
