#!/bin/sh
# keepalived's health checks for the mayu replica on this machine, run
# every second by the two vrrp_scripts of keepalived.conf:
#
#   check-mayu.sh alive   exit 0 while this replica may hold the virtual
#                         address: mayu answers /healthz, and /readyz is
#                         either 200 or fails only because etcd is
#                         unreachable. Non-zero when mayu is dead or hung,
#                         or when it must not serve (its configuration or
#                         files differ from the leader's, it lacks an
#                         artifact): keepalived puts the instance in FAULT
#                         and the address moves at once.
#   check-mayu.sh ready   exit 0 while /readyz is 200 (etcd reachable,
#                         configuration and files agree). A failure only
#                         lowers the instance's priority (weight): during a
#                         full etcd outage every replica is unready, and the
#                         address stays where it is, so boot files keep
#                         flowing through it.
#
# Install as /etc/keepalived/check-mayu.sh, owned by root, mode 0755.
# MAYU_HEALTH is where the metrics port answers: set it (in the
# vrrp_script's script line, or here) if node.ports.metrics is not 4082 or
# node.metrics_listen_address is not loopback or 0.0.0.0, e.g. an address
# on a management network (docs/security.md).
# (MAYU_READYZ, the full /readyz URL, is the older way to say it.)
if [ -z "$MAYU_HEALTH" ] && [ -n "$MAYU_READYZ" ]; then
	MAYU_HEALTH=${MAYU_READYZ%/readyz}
fi
base=${MAYU_HEALTH:-http://127.0.0.1:4082}

# No argument: "ready", what the one check of older keepalived.conf files
# (without a weight) meant.
case "${1:-ready}" in
alive)
	# --max-time 1: a hung replica must not hold the address.
	curl -fsS --max-time 1 -o /dev/null "$base/healthz" || exit 1
	# /readyz asks etcd with a 2 s bound: give it 3. A replica that
	# does not answer it in time is alive (it answered /healthz) and
	# counts as unready through the other check.
	out=$(curl -sS --max-time 3 -w ' HTTP %{http_code}' "$base/readyz" 2>/dev/null) || exit 0
	case "$out" in
	*" HTTP 200") exit 0 ;;
	*"not ready: etcd unreachable"*) exit 0 ;;
	esac
	echo "mayu must not serve: $out" >&2
	exit 1
	;;
ready)
	exec curl -fsS --max-time 3 -o /dev/null "$base/readyz"
	;;
*)
	echo "usage: check-mayu.sh alive|ready" >&2
	exit 2
	;;
esac
