#!/bin/sh
# Installs the Debian packages mayu's tests and demo use, if any is missing.
# Run as root on Debian; does nothing when everything is there.
#   iproute2          network namespaces for the DHCP/TFTP tests and the demo
#   busybox           udhcpc, the DHCP client the tests pose as firmware with
#   kea-admin         perfdhcp, Kea's DHCP load generator
#   atftp, curl       TFTP and HTTP clients
#   ipxe              the iPXE builds served over TFTP (undionly.kpxe, ipxe.efi)
#   prometheus        promtool, which checks and unit-tests contrib/prometheus/alerts.yml
set -eu

packages="curl ca-certificates git iproute2 busybox kea-admin atftp ipxe prometheus keepalived"

missing=""
for p in $packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "install-deps: installing$missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends $missing
fi
