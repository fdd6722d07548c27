// Package vmlab boots real virtual machines through mayu, the way a
// machine in a rack meets it, for the end-to-end tests and `make demo`:
//
//   - Kernel: a Debian kernel, downloaded (never installed) with the few
//     modules a VM needs;
//   - BuildInstaller: the installer mayu's iPXE script boots, a busybox
//     initramfs whose /init gets an address by DHCP and runs the
//     first-stage script mayu rendered for the machine;
//   - BuildOSImage: the OS image mayu writes to the machine's disk, which
//     boots on BIOS and UEFI; on its first boot its initramfs runs the real
//     Ignition on the final config (Ignition JSON) the installer put on
//     the disk, then it switches to a small systemd root (OSRoot), where
//     the network comes up as Ignition's files say and the unit Ignition
//     enabled reports boot-complete; OpenRootFS reads what it wrote;
//   - VM: qemu with SeaBIOS or OVMF, network first and disk second, its
//     serial console captured line by line, reset like a real machine;
//   - RouterAdvertiser: IPv6 router advertisements for the lab segment,
//     so iPXE does not wait for them.
//
// Everything here runs inside network namespaces the caller created; the
// machine's own interfaces are never touched. What it learned from
// shared/reference/lab.md is said where it matters.
package vmlab

import (
	"os"
	"os/exec"
	"path/filepath"
)

// MissingForBuild names what building the installer and the OS image
// needs and this machine lacks (scripts/install-deps.sh installs it).
func MissingForBuild() []string {
	var miss []string
	for tool, pkg := range map[string]string{
		"apt-get": "apt", "apt-cache": "apt", "dpkg-deb": "dpkg",
		"depmod": "kmod", "modprobe": "kmod",
		"mkfs.fat": "dosfstools", "syslinux": "syslinux", "mcopy": "mtools", "mmd": "mtools",
		"mmdebstrap": "mmdebstrap", "mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs", "e2fsck": "e2fsprogs",
		"ldd": "libc-bin",
	} {
		if _, err := exec.LookPath(tool); err != nil {
			miss = append(miss, tool+" ("+pkg+")")
		}
	}
	if _, err := os.Stat(syslinuxMBR); err != nil {
		miss = append(miss, syslinuxMBR+" (syslinux-common)")
	}
	if _, err := os.Stat(IgnitionBinary); err != nil {
		miss = append(miss, IgnitionBinary+" (ignition)")
	}
	return miss
}

// MissingForBoot names what booting a VM with fw needs and this machine
// lacks.
func MissingForBoot(fw Firmware) []string {
	var miss []string
	if _, err := exec.LookPath(QEMU); err != nil {
		miss = append(miss, QEMU+" (qemu-system-x86)")
	}
	if _, err := exec.LookPath("dnsmasq"); err != nil {
		miss = append(miss, "dnsmasq (dnsmasq-base)")
	}
	files := map[string]string{virtioROM: "ipxe-qemu"}
	if fw == UEFI {
		files[ovmfCode], files[ovmfVars] = "ovmf", "ovmf"
	}
	for f, pkg := range files {
		if _, err := os.Stat(f); err != nil {
			miss = append(miss, f+" ("+pkg+")")
		}
	}
	return miss
}

// RAAddress is the address the router advertiser's interface needs: the
// prefix it advertises is its /64.
const RAAddress = "fd99::1/64"

// RouterAdvertiser is the command line of a dnsmasq that only sends IPv6
// router advertisements for fd99::/64 on iface: no DNS (port 0), no DHCP
// for IPv4 or IPv6 (ra-only), so mayu stays the only DHCP server. Run it
// in foreground, in a namespace the caller created, with RAAddress on
// iface.
//
// Why: iPXE configures IPv4 (DHCP) and IPv6 (router solicitation) at once
// and waits for both; without any router on the segment it waits ~13 s
// for its solicitations to time out, on every network boot (lab.md §5).
// An RA ends that at once; iPXE then also takes a fd99:: SLAAC address,
// which nothing uses. mayu itself has no business sending RAs on an
// operator's network, so the lab brings its own.
func RouterAdvertiser(iface, dir string) []string {
	return []string{"dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
		"--port=0", "--interface=" + iface, "--bind-interfaces", "--user=root", "--group=root",
		"--enable-ra", "--dhcp-range=fd99::,ra-only,64",
		"--pid-file=" + filepath.Join(dir, "ra.pid"), "--dhcp-leasefile=" + filepath.Join(dir, "ra.leases"),
		"--log-facility=-"}
}

// SiteDHCP is a site's own DHCP server, which is not mayu: a dnsmasq
// that hands out addresses First to Last on its interface and nothing
// else a network boot could use (no next-server, no boot file, no PXE
// service, no DNS), as a corporate DHCP server beside mayu in proxy
// mode. Its leases and its log (--log-dhcp) say who got which address.
type SiteDHCP struct {
	Interface   string // in the namespace the caller runs it in
	First, Last string // the dynamic range, e.g. 10.99.0.200 and 10.99.0.249
	Netmask     string // default 255.255.255.0
	Router      string // option 3, if set
	Dir         string // its lease and pid files
}

// Leases is dnsmasq's lease file: one line per lease, "expiry MAC IP
// hostname client-id".
func (s SiteDHCP) Leases() string { return filepath.Join(s.Dir, "site-dhcp.leases") }

// Command is its command line, run in foreground (logging to stderr).
func (s SiteDHCP) Command() []string {
	mask := s.Netmask
	if mask == "" {
		mask = "255.255.255.0"
	}
	argv := []string{"dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null",
		"--port=0", "--interface=" + s.Interface, "--bind-interfaces", "--user=root", "--group=root",
		"--dhcp-range=" + s.First + "," + s.Last + "," + mask + ",1h",
		// Answer at once: the firmware's DHCP is what the VM tests time.
		"--no-ping", "--dhcp-authoritative", "--log-dhcp",
		"--pid-file=" + filepath.Join(s.Dir, "site-dhcp.pid"), "--dhcp-leasefile=" + s.Leases(),
		"--log-facility=-"}
	if s.Router != "" {
		argv = append(argv, "--dhcp-option=option:router,"+s.Router)
	}
	return argv
}
