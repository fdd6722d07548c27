#!/bin/bash
# TFTP side by side: 200 fetches, 50 at a time, of undionly.kpxe and of
# ipxe.efi (Debian's iPXE builds), from mayu, tftpd-hpa and dnsmasq. The
# client is bench/tftpload: 50 goroutines in one process, each fetch asking
# blksize 1468 (what UEFI firmware asks for; iPXE asks 1432) and
# acknowledging every block, as firmware does; every fetch must bring the
# whole file. (One curl process per fetch would measure mostly process
# start-up: TFTP_CLIENT=curl does that.) Reported: transfers per second and
# bytes per second over the wall time of the 200, median of 5 runs
# (BENCH_QUICK=1: one run).
#
# Network: a bridge with cli (10.99.0.250, the clients) and n1 (10.99.0.2,
# the server), namespaces made here.
#
#   mayu       one replica on its embedded etcd, TFTP on port 69
#   tftpd-hpa  in.tftpd -L (foreground, a process per transfer), -s (chroot)
#   dnsmasq    --enable-tftp (one process, --tftp-max 50 by default)
#
# Usage: bench/tftp.sh [server...]   (default: mayu tftpd-hpa dnsmasq)
. "$(dirname "$0")/lib.sh"

need_root
need curl xargs go dnsmasq in.tftpd "$MAYU"
(cd "$TOP" && go build -o "$WORK/tftpload" ./bench/tftpload) || die "cannot build bench/tftpload"
client=${TFTP_CLIENT:-tftpload}

servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(mayu tftpd-hpa dnsmasq)
files=(undionly.kpxe ipxe.efi)
fetches=${TFTP_FETCHES:-200} parallel=${TFTP_PARALLEL:-50}
runs=5
[ "$BENCH_QUICK" = 1 ] && runs=1

seg_new
seg_host cli 10.99.0.250/24
seg_host n1 10.99.0.2/24

srv=$WORK/srv
mkdir -p "$srv"
mayu_files "$srv" 1
declare -A SIZE
for f in "${files[@]}"; do SIZE[$f]=$(stat -c %s "$srv/boot/$f"); done

PID="" LIMITS=""
start_mayu() {
	mayu_config "$srv" r1 10.99.0.2
	need_limit "$srv" tftp max_per_address "$parallel" "transfers tftpload runs at once from one address"
	need_limit "$srv" tftp max_transfers "$parallel" "transfers tftpload runs at once"
	need_limit "$srv" tftp max_pending "$parallel" "requests tftpload may have pending at once"
	LIMITS=$(mayu_limits "$srv")
	rm -rf "$srv/data"
	mayu_start n1 "$srv"
	PID=$STARTED
	wait_log "$srv/mayu.log" "mayu started" 60 "$PID"
}
start_tftpd_hpa() {
	start_in n1 "$WORK/tftpd.log" in.tftpd -L -s -a 10.99.0.2:69 "$srv/boot"
	PID=$STARTED
}
start_dnsmasq() {
	start_in n1 "$WORK/dnsmasq.log" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 \
		--interface=eth0 --bind-interfaces --pid-file="$WORK/dnsmasq.pid" \
		--enable-tftp --tftp-root="$srv/boot" --log-facility="$WORK/dnsmasq.syslog"
	PID=$STARTED
}

# fetch_all FILE: seconds for $fetches fetches, $parallel at a time; fails
# unless every fetch brought the whole file.
fetch_all() {
	local f=$1 t0 t1 ok out
	if [ "$client" = tftpload ]; then
		out=$(on cli "$WORK/tftpload" -server 10.99.0.2:69 -file "$f" -size "${SIZE[$f]}" -n "$fetches" -c "$parallel" -blksize 1468) ||
			log "  $out"
		sed -n "s/^fetches=$fetches ok=$fetches .* seconds=\([0-9.]*\)$/\1/p" <<<"$out" | grep . || echo -
		return
	fi
	t0=$(date +%s.%N)
	ok=$(seq 1 "$fetches" | on cli xargs -P "$parallel" -I{} \
		curl -s --max-time 60 --tftp-blksize 1468 -o /dev/null -w '%{size_download}\n' "tftp://10.99.0.2/$f" |
		grep -cx "${SIZE[$f]}" || true)
	t1=$(date +%s.%N)
	[ "$ok" = "$fetches" ] || log "  only $ok of $fetches fetches of $f were complete"
	awk -v a="$t0" -v b="$t1" -v ok="$ok" -v n="$fetches" 'BEGIN { if (ok == n) printf "%.3f\n", b - a; else print "-" }'
}

declare -A T
for s in "${servers[@]}"; do
	log "TFTP: $s"
	"start_${s//-/_}"
	sleep 0.5
	# One fetch first: the server is up, ARP is resolved.
	on cli curl -s --max-time 10 -o /dev/null "tftp://10.99.0.2/undionly.kpxe" || die "$s does not serve TFTP"
	for f in "${files[@]}"; do
		ts=()
		for _ in $(seq 1 "$runs"); do
			ts+=("$(fetch_all "$f")")
			log "  $f: $fetches in ${ts[-1]} s"
		done
		T[$s/$f]=$(median $(printf '%s\n' "${ts[@]}" | grep -v '^-$' || true))
	done
	stop_pid "$PID"
done

label() {
	case $1 in
	mayu) echo "mayu" ;;
	tftpd-hpa) echo "tftpd-hpa $(in.tftpd -V 2>&1 | sed -n '1s/^tftp-hpa \([^ ,]*\).*/\1/p')" ;;
	dnsmasq) echo "dnsmasq $(dnsmasq -v | sed -n '1s/.*version \([^ ]*\).*/\1/p')" ;;
	esac
}

echo
echo "### TFTP: $fetches fetches, $parallel at a time ($client, blksize 1468), median of $runs runs"
echo
echo "$(machine); clients and server share the cores."
echo
if [ -n "$LIMITS" ]; then
	echo "mayu ran with these limits (its defaults):"
	echo
	echo "$LIMITS"
	echo
fi
echo "| file | server | seconds | transfers/s | bytes/s | mayu / server |"
echo "|---|---|---:|---:|---:|---:|"
for f in "${files[@]}"; do
	mt=${T[mayu/$f]:-}
	for s in "${servers[@]}"; do
		t=${T[$s/$f]}
		rate=$(awk -v t="$t" -v n="$fetches" 'BEGIN { if (t == "-" || t == "") print "-"; else printf "%.1f\n", n / t }')
		bps=$(awk -v t="$t" -v n="$fetches" -v sz="${SIZE[$f]}" 'BEGIN { if (t == "-" || t == "") print "-"; else printf "%.0f\n", n * sz / t }')
		# Transfers per second: mayu's over the server's (time ratio inverted).
		echo "| $f ($(awk -v s="${SIZE[$f]}" 'BEGIN { printf "%.0f kB", s / 1000 }')) | $(label "$s") | $t | $rate | $(human "$bps") | $(ratio "$t" "$mt") |"
	done
done
echo
