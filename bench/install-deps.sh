#!/bin/sh
# Installs the Debian packages only the benchmarks use (make bench runs it;
# make test does not). Run as root on Debian; does nothing when everything
# is there.
#   kea-dhcp4-server  Kea, the DHCP peer (memfile, and an HA hot-standby pair)
#   kea-admin         perfdhcp, Kea's DHCP load generator (also a test dependency)
#   dnsmasq-base      dnsmasq without its service: DHCP and TFTP peer
#   tftpd-hpa         in.tftpd, the TFTP peer
#   nginx-light       the HTTP peer
#   wrk               the HTTP load generator
#   atftp, curl       TFTP clients
#   jq                reads `mayuctl artifact list -o json` (artifacts.sh)
#   ipxe              the files served over TFTP
#
# The peers only ever run inside the benchmarks' own network namespaces. The
# Debian packages of Kea, tftpd-hpa and nginx come with services that would
# start on the root namespace (Kea's DHCP server on port 67, in.tftpd on 69,
# nginx on 80), so no service may start during the install (a policy-rc.d
# that refuses, put there only for the install if there is none), and any
# that is enabled or running afterwards is stopped and disabled.
set -eu

packages="kea-dhcp4-server kea-admin dnsmasq-base tftpd-hpa nginx-light wrk atftp curl jq ipxe iproute2"
services="kea-dhcp4-server kea-ctrl-agent kea-dhcp6-server kea-dhcp-ddns-server tftpd-hpa nginx dnsmasq"

missing=""
for p in $packages; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
	echo "bench/install-deps: installing$missing"
	policy=/usr/sbin/policy-rc.d
	ours=""
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# mayu bench/install-deps.sh: no service starts during the install\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		ours=1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	rc=0
	apt-get install -y -qq --no-install-recommends $missing || rc=$?
	[ -z "$ours" ] || rm -f "$policy"
	[ "$rc" = 0 ] || exit "$rc"
fi

# Whatever the packages set up to run on the machine itself: stop it, and
# keep it from starting at boot.
for s in $services; do
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		if systemctl is-enabled --quiet "$s" 2>/dev/null || systemctl is-active --quiet "$s" 2>/dev/null; then
			echo "bench/install-deps: stopping and disabling the $s service (benchmarks run it in namespaces only)"
			systemctl disable --now "$s" >/dev/null 2>&1 || true
		fi
	elif [ -x "/etc/init.d/$s" ]; then
		"/etc/init.d/$s" stop >/dev/null 2>&1 || true
		command -v update-rc.d >/dev/null 2>&1 && update-rc.d "$s" disable >/dev/null 2>&1 || true
	fi
done
