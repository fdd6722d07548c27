#!/bin/sh
# Installs the Debian packages mayu's tests and demo use, if any is missing.
# Run as root on Debian; does nothing when everything is there.
#   iproute2          network namespaces for the DHCP/TFTP tests and the demo
#   busybox           udhcpc, the DHCP client the tests pose as firmware with
#   kea-admin         perfdhcp, Kea's DHCP load generator
#   atftp, curl       TFTP and HTTP clients
#   ipxe              the iPXE builds served over TFTP (undionly.kpxe, ipxe.efi)
#   gnupg             gpg, which signs the Flatcar-format releases of the
#                     artifact tests (internal/flatcarfixture)
#   prometheus        promtool, which checks and unit-tests contrib/prometheus/alerts.yml
#   ignition          ignition-validate, a second, independent check of the
#                     Ignition configs mayu renders (pkg/ignition, pkg/render);
#                     its ignition binary runs in the VM tests' OS (below)
# The VM tests and the demo (package internal/vmlab; shared/reference/lab.md §1):
#   qemu-system-x86   the VMs (TCG: this machine's KVM cannot run them)
#   ovmf              UEFI firmware; SeaBIOS comes with qemu
#   ipxe-qemu         the iPXE option ROM of qemu's virtio NIC
#   syslinux syslinux-common mtools dosfstools
#                     the OS image: MBR, SYSLINUX and a FAT file system, built
#                     without root or loop devices
#   kmod xz-utils     depmod/modprobe resolve the installer's kernel modules;
#                     xz unpacks them where the kernel ships them compressed
#   mmdebstrap e2fsprogs
#                     the test OS's systemd root from Debian packages, into an
#                     ext4 image (mkfs.ext4 -d); debugfs reads what Ignition
#                     wrote there, without mounting
#                     (the test OS's initramfs runs the real Ignition, package
#                     ignition above, on the final config mayu rendered)
#   systemd           systemd-analyze, which checks systemd/mayu.service (verify,
#                     security); nothing is started
#   lintian           checks the Debian package `make release` builds (package
#                     packaging's test, which also installs and purges it)
#   skopeo umoci      read the OCI image `make release` builds: skopeo inspects
#                     it, umoci unpacks it (no container daemon)
#   dnsmasq-base      IPv6 router advertisements on the lab segment, so iPXE
#                     does not wait ~13 s for one (no DHCP, no service: -base)
# Not installed, downloaded by the tests with `apt-get download` instead:
# the Debian kernel (installing it runs update-initramfs and touches /boot),
# busybox-static (it conflicts with busybox above: each removes the other)
# and systemd-boot-efi (on Debian 12 it upgrades systemd with it).
set -eu

packages="curl ca-certificates git iproute2 busybox kea-admin atftp ipxe gnupg prometheus keepalived ignition
qemu-system-x86 ovmf ipxe-qemu syslinux syslinux-common mtools dosfstools kmod xz-utils dnsmasq-base
mmdebstrap e2fsprogs systemd lintian skopeo umoci"

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
