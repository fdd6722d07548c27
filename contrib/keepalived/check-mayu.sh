#!/bin/sh
# keepalived's health check for the mayu replica on this machine: exit 0
# while mayu is ready to serve boot files (/readyz on the metrics port:
# etcd reachable and this replica's config agrees with the leader's),
# non-zero otherwise. keepalived runs it every second (vrrp_script
# chk_mayu); two failures in a row release the virtual address.
#
# Install as /etc/keepalived/check-mayu.sh, owned by root, mode 0755.
# Change the port if node.ports.metrics is not 4082. --max-time 1 keeps a
# hung replica from holding the address: a check that does not answer
# within a second counts as failed.
exec curl -fsS --max-time 1 -o /dev/null http://127.0.0.1:4082/readyz
