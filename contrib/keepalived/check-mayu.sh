#!/bin/sh
# keepalived's health check for the mayu replica on this machine: exit 0
# while mayu is ready to serve boot files (/readyz on the metrics port:
# etcd reachable and this replica's config agrees with the leader's),
# non-zero otherwise. keepalived runs it every second (vrrp_script
# chk_mayu); two failures in a row release the virtual address.
#
# Install as /etc/keepalived/check-mayu.sh, owned by root, mode 0755.
# MAYU_READYZ is where the metrics port answers: set it (in the
# vrrp_script's script line, or here) if node.ports.metrics is not 4082 or
# node.metrics_listen_address is not loopback or 0.0.0.0, e.g. an address
# on a management network (docs/security.md). --max-time 1 keeps a hung
# replica from holding the address: a check that does not answer within a
# second counts as failed.
exec curl -fsS --max-time 1 -o /dev/null "${MAYU_READYZ:-http://127.0.0.1:4082/readyz}"
