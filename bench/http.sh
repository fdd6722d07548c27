#!/bin/bash
# HTTP side by side: a 100 MB initrd fetched over 50 concurrent connections
# (wrk, 2 threads, keep-alive) from mayu (/boot/initrd) and from nginx
# (sendfile on, access log off, one worker per core) serving the same file.
# Reported: requests per second (finished downloads) and bytes per second
# (wrk's Transfer/sec: every byte read), median of 3 runs of 10 s
# (BENCH_QUICK=1: one run of 4 s).
#
# Network: a bridge with cli (10.99.0.250, wrk) and n1 (10.99.0.2, the
# server), namespaces made here.
#
# Usage: bench/http.sh [server...]   (default: mayu nginx)
. "$(dirname "$0")/lib.sh"

need_root
need wrk nginx curl "$MAYU"

servers=("$@")
[ ${#servers[@]} -gt 0 ] || servers=(mayu nginx)
mb=${HTTP_INITRD_MB:-100} conns=${HTTP_CONNECTIONS:-50}
runs=3 secs=10
[ "$BENCH_QUICK" = 1 ] && runs=1 secs=4

seg_new
seg_host cli 10.99.0.250/24
seg_host n1 10.99.0.2/24

srv=$WORK/srv
mkdir -p "$srv"
mayu_files "$srv" "$mb"
size=$(stat -c %s "$srv/files/installer/initrd.img")

PID="" URL="" LIMITS=""
start_mayu() {
	mayu_config "$srv" r1 10.99.0.2
	need_limit "$srv" http max_connections "$conns" "connections of wrk"
	need_limit "$srv" http max_connections_per_address "$conns" "connections wrk opens from one address"
	LIMITS=$(mayu_limits "$srv")
	mayu_start n1 "$srv"
	PID=$STARTED
	wait_log "$srv/mayu.log" "mayu started" 60 "$PID"
	URL=http://10.99.0.2:4081/boot/initrd
}
start_nginx() {
	local d=$WORK/nginx
	mkdir -p "$d"
	cat >"$d/nginx.conf" <<EOF
worker_processes auto;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 1024; }
http {
  sendfile on;
  tcp_nopush on;
  keepalive_requests 100000;
  access_log off;
  default_type application/octet-stream;
  client_body_temp_path $d/body;
  proxy_temp_path $d/proxy;
  fastcgi_temp_path $d/fastcgi;
  uwsgi_temp_path $d/uwsgi;
  scgi_temp_path $d/scgi;
  server {
    listen 10.99.0.2:8080;
    root $srv/files/installer;
  }
}
EOF
	start_in n1 "$d/stdout" nginx -e "$d/error.log" -p "$d" -c "$d/nginx.conf" -g 'daemon off;'
	PID=$STARTED
	wait_tcp cli 10.99.0.2 8080 20
	URL=http://10.99.0.2:8080/initrd.img
}

# wrk_run: "requests/s bytes/s" of one run.
wrk_run() {
	local out
	out=$(on cli wrk -t2 -c"$conns" -d"${secs}s" --timeout 60s "$URL" 2>&1) || true
	# Transfer/sec counts every byte read, also of the downloads still
	# running when the time is up; requests/s only the finished ones.
	awk '
		/^Requests\/sec:/ { rps = $2 }
		/^Transfer\/sec:/ {
			v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[A-Za-z]+$/, "", v)
			m = 1; if (u == "KB") m = 1024; if (u == "MB") m = 1048576; if (u == "GB") m = 1073741824
			bps = v * m
		}
		/Non-2xx|Socket errors/ { bad = bad $0 " " }
		END {
			if (rps == "" || bps == "") { print "- -"; exit }
			printf "%.2f %.0f\n", rps, bps
			if (bad != "") print "wrk: " bad > "/dev/stderr"
		}' <<<"$out"
}

declare -A RPS BPS
for s in "${servers[@]}"; do
	log "HTTP: $s"
	"start_${s//-/_}"
	got=$(on cli curl -s --max-time 60 -o /dev/null -w '%{http_code} %{size_download}' "$URL")
	[ "$got" = "200 $size" ] || die "$s answered $got for $URL, want 200 $size"
	rs=() bs=()
	for _ in $(seq 1 "$runs"); do
		read -r r b < <(wrk_run)
		rs+=("$r") bs+=("$b")
		log "  $r requests/s, $(human "$b")"
	done
	RPS[$s]=$(median "${rs[@]}")
	BPS[$s]=$(median "${bs[@]}")
	stop_pid "$PID"
done

label() {
	case $1 in
	mayu) echo "mayu (/boot/initrd)" ;;
	nginx) echo "nginx $(nginx -v 2>&1 | sed -n 's/.*nginx\/\([^ ]*\).*/\1/p') (sendfile)" ;;
	esac
}

echo
echo "### HTTP: a $mb MiB initrd over $conns connections (wrk -t2 -c$conns -d${secs}s), median of $runs runs"
echo
echo "$(machine); wrk and the server share the cores."
echo
if [ -n "$LIMITS" ]; then
	echo "mayu ran with these limits (its defaults):"
	echo
	echo "$LIMITS"
	echo
fi
echo "| server | requests/s | bytes/s | mayu / server |"
echo "|---|---:|---:|---:|"
for s in "${servers[@]}"; do
	echo "| $(label "$s") | ${RPS[$s]} | $(human "${BPS[$s]}") | $(ratio "${BPS[mayu]:-}" "${BPS[$s]}") |"
done
echo
