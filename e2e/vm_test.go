package e2e

// Real machines: qemu VMs network-boot through mayu, install the OS image
// on their disk, reboot into it and report boot-complete, under SeaBIOS
// and OVMF. On its first boot the OS runs the real Ignition (Debian's 2.14)
// from its initramfs on the final config mayu rendered for it, from the
// shipped template etc/templates/final-config.ign.yaml, and switches to a
// systemd root where the network comes up as Ignition's files say and the
// unit Ignition enabled reports boot-complete; what Ignition wrote is then
// read from the VM's disk. The installer and the OS image are built from Debian packages
// when the tests start (package internal/vmlab); the VMs run with TCG, one
// at a time, on a bridge inside namespaces the test creates.
//
// Each VM's serial console is read line by line: every step below waits
// for the marker the flow prints at that moment (iPXE echoes mayu's
// scripts, the installer and its first-stage script log as
// mayu-installer: / mayu-install[<id>]:, the OS's initramfs and its
// console report as MAYU-OS:), and the machine's record in etcd is checked
// where the flow changes it.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/netlab"
	"github.com/mayu-boot/mayu/internal/vmlab"
	"github.com/mayu-boot/mayu/pkg/machine"
)

// A console line that ends every wait: the installer, its first stage or
// the OS says it failed, or the kernel died.
var vmFailure = regexp.MustCompile(`mayu-installer: FAILED|mayu-install\[.*\]: FAILED|MAYU-OS: FAILED|Kernel panic`)

// vmSSHKey is template var ssh_authorized_key of the VM tests: the
// shipped final config has Ignition install it for the user core.
const vmSSHKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE2eVmTestKeyOfMayuE2eOnly vm-test@mayu"

// vmVars are the template variables of the VM tests' replicas, with more.
func vmVars(more map[string]string) map[string]string {
	vars := map[string]string{"ssh_authorized_key": vmSSHKey}
	for k, v := range more {
		vars[k] = v
	}
	return vars
}

var vmBuild struct {
	sync.Once
	b   *vmlab.Build
	err error
}

// requireVM skips the test unless VMs can be built and booted with fw
// here: root, qemu, the firmware, the build tools. -short skips them too.
func requireVM(t *testing.T, fw vmlab.Firmware) *vmlab.Build {
	t.Helper()
	if testing.Short() {
		t.Skip("VM boots take minutes: skipped with -short")
	}
	netlab.Require(t, "curl")
	if miss := append(vmlab.MissingForBuild(), vmlab.MissingForBoot(fw)...); len(miss) > 0 {
		t.Skipf("VM tests need %s (make test installs them)", strings.Join(miss, ", "))
	}
	vmBuild.Do(func() {
		cache := os.Getenv("MAYU_VMLAB_CACHE")
		if cache == "" {
			cache, _ = filepath.Abs("../.work/vmlab") // git-ignored; keeps the kernel between runs
		}
		vmBuild.b, vmBuild.err = vmlab.BuildAll(t.Context(), cache, filepath.Join(bins.dir, "vm"), t.Logf)
		if b := vmBuild.b; vmBuild.err == nil {
			t.Logf("built kernel %s in %s, installer in %s, OS image in %s", b.Kernel.Version,
				b.KernelTime.Round(10*time.Millisecond), b.InstallerTime.Round(10*time.Millisecond), b.ImageTime.Round(10*time.Millisecond))
		}
	})
	if vmBuild.err != nil {
		t.Fatalf("building the installer and OS image: %v", vmBuild.err)
	}
	return vmBuild.b
}

// startRA runs the lab's IPv6 router advertiser (dnsmasq, RA only) on
// iface in ns, so that iPXE does not wait ~13 s for one on every boot.
func startRA(t *testing.T, lab *netlab.TLab, ns, iface string) {
	t.Helper()
	lab.MustIP("-n", ns, "addr", "add", vmlab.RAAddress, "dev", iface, "nodad")
	argv := vmlab.RouterAdvertiser(iface, t.TempDir())
	lab.Start(ns, argv[0], argv[1:]...)
}

// vmLab is one mayu replica on its embedded etcd, and a bridge with a tap
// for the VM:
//
//	netns <id>-sw: br0 ─┬─ tap0 ── qemu
//	                    ├─ veth ── netns <id>-srv: eth0 10.99.0.1/24 (mayu, dnsmasq RA)
//	                    └─ veth ── netns <id>-site: eth0 10.99.0.2/24 (proxy labs: the site's DHCP server)
type vmLab struct {
	seg  *netlab.TSegment
	srv  string
	r    *replica
	site *siteDHCP // proxy labs only
}

func newVMLab(t *testing.T, b *vmlab.Build) *vmLab {
	t.Helper()
	return newVMLabWith(t, b, false)
}

// newVMLabWith is newVMLab; with proxy, mayu runs in proxy mode and a
// site DHCP server that is not mayu (dnsmasq) hands out the addresses.
func newVMLabWith(t *testing.T, b *vmlab.Build, proxy bool) *vmLab {
	t.Helper()
	l := &vmLab{seg: netlab.NewSegmentT(t)}
	l.srv = l.seg.AddHost("srv", "10.99.0.1/24")
	startRA(t, l.seg.TLab, l.srv, "eth0")
	if proxy {
		l.site = startSiteDHCP(t, l.seg)
	}
	l.r = startReplica(t, l.seg.TLab, l.srv, replicaOptions{iface: "eth0", files: b.Dir, kernelArgs: vmlab.KernelArgs,
		ignition: true, vars: vmVars(nil), proxy: proxy})
	l.r.waitLog(t, "answering DHCP", 30*time.Second)
	l.seg.AddTap("tap0")
	return l
}

// siteDHCP is the site's own DHCP server on the lab segment: plain DHCP,
// addresses 10.99.0.200 to 10.99.0.249 (outside mayu's pool and static
// range), no boot options.
type siteDHCP struct {
	ns  string
	cfg vmlab.SiteDHCP
	log *netlab.Output
}

// siteLease matches an address of the site DHCP server's range.
const siteLease = `10\.99\.0\.2[0-4]\d`

func startSiteDHCP(t *testing.T, seg *netlab.TSegment) *siteDHCP {
	t.Helper()
	s := &siteDHCP{ns: seg.AddHost("site", "10.99.0.2/24"),
		cfg: vmlab.SiteDHCP{Interface: "eth0", First: "10.99.0.200", Last: "10.99.0.249", Router: "10.99.0.1", Dir: t.TempDir()}}
	argv := s.cfg.Command()
	_, s.log = seg.Start(s.ns, argv[0], argv[1:]...)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("site DHCP server (dnsmasq) log:\n%s", tail(s.log.String(), 40))
		}
	})
	return s
}

// leaseOf is the address the site DHCP server leased to mac, if any.
func (s *siteDHCP) leaseOf(t *testing.T, mac string) string {
	t.Helper()
	data, err := os.ReadFile(s.cfg.Leases())
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 3 && strings.EqualFold(f[1], mac) {
			return f[2]
		}
	}
	return ""
}

// vm is a booted VM and the test's view of it.
type vm struct {
	*vmlab.VM
	t    *testing.T
	cfg  vmlab.VMConfig
	id   string
	mac  string
	disk string // its raw disk image
	// lease matches the address the installer's DHCP gets: from mayu's
	// pool, or from the site's DHCP server in proxy mode.
	lease string
}

func bootVM(t *testing.T, seg *netlab.TSegment, fw vmlab.Firmware, firmwarePXE bool, serial, mac string) *vm {
	t.Helper()
	return bootVMWith(t, seg, vmlab.VMConfig{Firmware: fw, FirmwarePXE: firmwarePXE}, serial, mac)
}

// bootVMWith boots the VM cfg describes (its firmware and how it boots
// from the network) as machine serial with mac, on seg's tap0.
func bootVMWith(t *testing.T, seg *netlab.TSegment, cfg vmlab.VMConfig, serial, mac string) *vm {
	t.Helper()
	dir := t.TempDir()
	cfg.Name, cfg.Netns, cfg.Tap, cfg.MAC, cfg.Serial = serial, seg.Switch, "tap0", mac, serial
	cfg.Disk, cfg.Dir, cfg.FailOn = filepath.Join(dir, "disk.raw"), dir, vmFailure
	vv, err := vmlab.StartVM(cfg)
	if err != nil {
		t.Fatal(err)
	}
	v := &vm{VM: vv, t: t, cfg: cfg, id: strings.ToLower(serial), mac: mac, disk: cfg.Disk, lease: `10\.99\.0\.1\d\d`}
	t.Cleanup(func() {
		v.Stop() // the qemu running now (restartDiskFirst starts another)
		if t.Failed() {
			t.Logf("serial console of %s (last 60 lines):\n%s", serial, v.Tail(60))
		}
	})
	how := ""
	switch {
	case cfg.HTTPBoot:
		how = ", UEFI HTTP boot"
	case cfg.FirmwarePXE:
		how = ", firmware PXE"
	}
	t.Logf("qemu %s (%s%s), MAC %s, pid %d; console: %s", serial, cfg.Firmware, how, mac, v.Pid(), v.LogPath())
	return v
}

// restartDiskFirst stands in for the rest of the firmware's fall-through
// where it costs minutes: OVMF tries each of its network boot options in
// turn, each waiting ~60 s for a DHCP answer that never comes, before the
// disk (TestVMUEFIInstallBootReinstall goes through all of it). Once the
// leader has been seen ignoring the installed machine's network boot, the
// machine is powered off and started again, same disk and NVRAM, with
// its disk first.
func (v *vm) restartDiskFirst(r *replica, within time.Duration) {
	v.t.Helper()
	deadline := time.Now().Add(within)
	for !ignoredInstalled(r.log.String(), v.mac) {
		if time.Now().After(deadline) {
			v.t.Fatalf("mayu's log shows no network boot of the installed machine ignored within %s", within)
		}
		time.Sleep(200 * time.Millisecond)
	}
	v.t.Logf("%7.1fs  %-44s", v.Since().Seconds(), "the leader ignores its network boot: power off")
	v.VM.Stop()
	cfg := v.cfg
	cfg.DiskFirst = true
	vv, err := vmlab.StartVM(cfg)
	if err != nil {
		v.t.Fatal(err)
	}
	v.VM = vv
	v.t.Logf("          started again with the disk first, pid %d", v.Pid())
}

// step waits for the next console line matching pattern and logs it.
func (v *vm) step(within time.Duration, what, pattern string) vmlab.Line {
	v.t.Helper()
	l, err := v.Expect(within, pattern)
	if err != nil {
		v.t.Fatal(err)
	}
	v.t.Logf("%7.1fs  %-44s %s", l.At.Seconds(), what, clipLine(l.Text, 100))
	return l
}

func clipLine(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// install follows one network boot from the firmware to `installed`.
func (v *vm) install(firmware time.Duration) {
	v.t.Helper()
	id := regexp.QuoteMeta(v.id)
	v.step(firmware, "iPXE runs mayu's chain script", `mayu: identifying`)
	v.step(30*time.Second, "mayu answers the installer script", `mayu: installing machine `+id)
	v.step(60*time.Second, "the installer kernel runs /init", `mayu-installer: kernel`)
	v.step(30*time.Second, "the installer gets a DHCP lease", `mayu-installer: DHCP lease `+v.lease+`/`)
	v.step(30*time.Second, "the first stage runs", `mayu-installer: running the first-stage script`)
	v.step(30*time.Second, "it writes the OS image", `mayu-install\[`+id+`\]: writing the OS image to /dev/vda`)
	v.step(300*time.Second, "it puts the final config on the disk", `mayu-install\[`+id+`\]: putting the final config on /dev/vda1`)
	v.step(30*time.Second, "it announces installed", `mayu-install\[`+id+`\]: announcing installed`)
	v.step(120*time.Second, "and reboots", `mayu-install\[`+id+`\]: done, rebooting`)
}

// bootDisk follows the boot after an install: nobody answers the network
// boot, the firmware falls through to the disk, the OS's initramfs runs
// Ignition on the final config (first boot), switches to the root's
// systemd, and the OS comes up on its static address. It returns the
// hostname and address the OS reports on its console; boot-complete is
// the business of the unit Ignition installed (the caller waits for
// `running` in etcd).
func (v *vm) bootDisk(fallThrough time.Duration) (hostname, addr string) {
	v.t.Helper()
	first := v.step(fallThrough, "the disk boots: its initramfs runs Ignition", `MAYU-OS: ignition: first boot, running Ignition`)
	v.step(60*time.Second, "Ignition's files stage applies the final config", `MAYU-OS: ignition files stage done`)
	v.step(30*time.Second, "the initramfs switches to the systemd root", `MAYU-OS: switching to the root file system`)
	up := v.step(180*time.Second, "the OS is up", `MAYU-OS: up: hostname=`)
	m := regexp.MustCompile(`hostname=(\S+) addresses=\S+:([0-9.]+)/24`).FindStringSubmatch(up.Text)
	if m == nil {
		v.t.Fatalf("the OS names no hostname and address: %s", up.Text)
	}
	// The way there: the firmware's network boot got no script this time.
	from := v.lastInstall()
	for _, l := range v.Lines() {
		if l.At > from && l.At < first.At && strings.Contains(l.Text, "mayu: installing machine") {
			v.t.Fatalf("the installed machine was netbooted into the installer again: %s", l)
		}
	}
	return m[1], m[2]
}

// checkIgnition reads from the VM's disk what the real Ignition wrote
// from the final config mayu rendered for m (etc/templates/
// final-config.ign.yaml), and checks that the unit that reported
// boot-complete is the one Ignition installed and enabled (through its
// preset, which systemd applied on the first boot), and that the OS
// answers on its InternalAddr.
func checkIgnition(t *testing.T, lab *netlab.TLab, ns string, v *vm, m *machine.Machine) {
	t.Helper()
	root, err := vmlab.OpenRootFS(t.Context(), v.disk, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
		uid  int
		want []string // each a substring; the first line-exact when it ends in \n
	}{
		{"/etc/hostname", 0o644, 0, []string{m.Hostname + "\n"}},
		{"/etc/systemd/network/00-mayu.network", 0o644, 0, []string{"[Match]\nMACAddress=" + v.mac,
			"[Network]\nAddress=" + m.InternalAddr + "/24\n", "Gateway=10.99.0.1\n"}},
		{"/home/core/.ssh/authorized_keys.d/ignition", 0o600, 500, []string{vmSSHKey + "\n"}},
		{"/etc/mayu/metadata", 0o644, 0, nil},
		{"/etc/mayu/boot-complete", 0o600, 0, []string{"/machines/" + v.id + "/boot-complete?token="}},
		{"/etc/systemd/system/mayu-boot-complete.service", 0o644, 0, []string{"ExecStart=/bin/sh -c", "curl"}},
		{"/etc/systemd/system-preset/20-ignition.preset", 0o644, 0, []string{"enable mayu-boot-complete.service\n"}},
	} {
		f, err := root.File(c.path)
		if err != nil {
			t.Errorf("Ignition wrote no %s: %v", c.path, err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(string(f.Data), w) {
				t.Errorf("%s lacks %q:\n%s", c.path, w, f.Data)
			}
		}
		if f.Mode != c.mode || f.UID != c.uid {
			t.Errorf("%s: mode %o owner %d, want %o owner %d", c.path, f.Mode, f.UID, c.mode, c.uid)
		}
	}
	wants := "/etc/systemd/system/multi-user.target.wants/mayu-boot-complete.service"
	if target, err := root.Link(wants); err != nil || target != "/etc/systemd/system/mayu-boot-complete.service" {
		t.Errorf("systemd did not enable the unit Ignition installed (%s → %q, %v)", wants, target, err)
	}
	if out, err := lab.Run(10*time.Second, ns, "busybox", "ping", "-c", "1", "-W", "2", m.InternalAddr); err != nil {
		t.Errorf("the OS's static address %s does not answer ping: %v\n%s", m.InternalAddr, err, out)
	}
	t.Logf("          disk: Ignition wrote hostname %s, networkd file for %s, core's SSH key, metadata, the boot-complete unit (enabled)", m.Hostname, m.InternalAddr)
}

// lastInstall is when the last first-stage script announced the reboot.
func (v *vm) lastInstall() time.Duration {
	var at time.Duration
	for _, l := range v.Lines() {
		if strings.Contains(l.Text, "done, rebooting") {
			at = l.At
		}
	}
	return at
}

// record reads the machine's record from etcd (etcdctl in ns).
func record(t *testing.T, lab *netlab.TLab, ns, endpoints, id string) *machine.Machine {
	t.Helper()
	out, err := lab.Run(20*time.Second, ns, bins.etcdctl, "--endpoints", endpoints, "get", "/mayu/machines/"+id, "--print-value-only")
	if err != nil {
		t.Fatalf("etcdctl: %v\n%s", err, out)
	}
	if strings.TrimSpace(out) == "" {
		return nil
	}
	var m machine.Machine
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatalf("record of %s: %v\n%s", id, err, out)
	}
	return &m
}

// waitState waits until the machine's record in etcd is in state.
func waitState(t *testing.T, lab *netlab.TLab, ns, endpoints, id string, state machine.State, within time.Duration) *machine.Machine {
	t.Helper()
	deadline := time.Now().Add(within)
	var m *machine.Machine
	for time.Now().Before(deadline) {
		if m = record(t, lab, ns, endpoints, id); m != nil && m.State == state {
			t.Logf("          etcd: %s is %s (replica %s, generation %d, address %s)", id, m.State, m.LastReplica, m.Generation, m.InternalAddr)
			return m
		}
		time.Sleep(200 * time.Millisecond)
	}
	got := "no record"
	if m != nil {
		got = string(m.State)
	}
	t.Fatalf("%s never became %s in etcd (%s)", id, state, got)
	return nil
}

// ignoredInstalled reports whether the replica's log shows the leader
// ignoring a DHCP request of mac because the machine is installed.
func ignoredInstalled(log, mac string) bool {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "dhcp: ignored") && strings.Contains(line, mac) && strings.Contains(line, "reason=installed") {
			return true
		}
	}
	return false
}

func (l *vmLab) mayuctl(t *testing.T, args ...string) string {
	t.Helper()
	env := []string{"MAYU_SERVER=http://127.0.0.1:4080", "MAYU_TOKEN_FILE=" + filepath.Join(l.r.dir, "admin-token"), filepath.Join(filepath.Dir(bins.mayu), "mayuctl")}
	out, err := l.seg.Run(20*time.Second, l.srv, "env", append(env, args...)...)
	if err != nil {
		t.Fatalf("mayuctl %v: %v\n%s", args, err, out)
	}
	return out
}

// fullCycle is item 3 of the flow for one firmware: install, the disk
// boot while the leader stays silent, `running`, and a reinstall; with
// shortReinstall the reinstall ends when its first stage writes the image
// (the rest is the first install's again).
func fullCycle(t *testing.T, fw vmlab.Firmware, mac string, fallThrough time.Duration, shortReinstall bool) {
	b := requireVM(t, fw)
	l := newVMLab(t, b)
	const etcd = "http://127.0.0.1:2379"
	start := time.Now()
	v := bootVM(t, l.seg, fw, false, "VM-"+strings.ToUpper(string(fw))+"-0001", mac)

	t.Log("boot 1: network → iPXE → mayu's script → installer → installed")
	v.install(90 * time.Second)
	m := waitState(t, l.seg.TLab, l.srv, etcd, v.id, machine.Installed, 30*time.Second)
	boot1 := time.Since(start)

	t.Log("boot 2: the leader stays silent, the firmware falls through to the disk; Ignition configures the OS")
	hostname, addr := v.bootDisk(fallThrough)
	if addr != m.InternalAddr || hostname != m.Hostname {
		t.Errorf("the OS came up as %s on %s; its record says %s on %s", hostname, addr, m.Hostname, m.InternalAddr)
	}
	m = waitState(t, l.seg.TLab, l.srv, etcd, v.id, machine.Running, 120*time.Second)
	if m.LastBoot.IsZero() {
		t.Error("running, but no last boot time")
	}
	if !ignoredInstalled(l.r.log.String(), mac) {
		t.Error("mayu's log shows no DHCP request of the installed machine ignored")
	}
	checkIgnition(t, l.seg.TLab, l.srv, v, m)
	boot2 := time.Since(start) - boot1
	t.Logf("mayuctl list:\n%s", l.mayuctl(t, "list"))

	t.Log("boot 3: mayuctl reinstall, a reset, and it installs again")
	l.mayuctl(t, "reinstall", v.id)
	waitState(t, l.seg.TLab, l.srv, etcd, v.id, machine.Configured, 10*time.Second)
	if err := v.Reset(); err != nil {
		t.Fatal(err)
	}
	var m2 *machine.Machine
	if shortReinstall {
		v.step(90*time.Second, "iPXE runs mayu's chain script", `mayu: identifying`)
		v.step(30*time.Second, "mayu answers the installer script", `mayu: installing machine `+regexp.QuoteMeta(v.id))
		v.step(120*time.Second, "the first stage writes the OS image", `mayu-install\[`+regexp.QuoteMeta(v.id)+`\]: writing the OS image`)
		m2 = waitState(t, l.seg.TLab, l.srv, etcd, v.id, machine.Installing, 30*time.Second)
	} else {
		v.install(90 * time.Second)
		m2 = waitState(t, l.seg.TLab, l.srv, etcd, v.id, machine.Installed, 30*time.Second)
	}
	if m2.Generation != m.Generation+1 || m2.InternalAddr != m.InternalAddr || m2.MachineID != m.MachineID {
		t.Errorf("after the reinstall: generation %d → %d, address %s → %s, machine-id %s → %s",
			m.Generation, m2.Generation, m.InternalAddr, m2.InternalAddr, m.MachineID, m2.MachineID)
	}
	t.Logf("%s: install boot %s, disk boot %s, reinstall boot %s, total %s", fw,
		boot1.Round(100*time.Millisecond), boot2.Round(100*time.Millisecond),
		(time.Since(start) - boot1 - boot2).Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
}

// SeaBIOS with qemu's iPXE NIC ROM. An unanswered network boot costs
// ~20 s before SeaBIOS tries the disk.
func TestVMBIOSInstallBootReinstall(t *testing.T) {
	fullCycle(t, vmlab.BIOS, "52:54:00:00:05:01", 90*time.Second, false)
}

// OVMF with the iPXE EFI ROM. When nobody answers, OVMF goes on through
// its own PXEv4, PXEv6 and HTTP boot options, each with its own timeout,
// before it tries the disk: ~150 s (lab.md §7). The reinstall stops when
// the first stage writes the image: the BIOS test follows it to the end.
func TestVMUEFIInstallBootReinstall(t *testing.T) {
	fullCycle(t, vmlab.UEFI, "52:54:00:00:05:02", 300*time.Second, true)
}

// OVMF without the NIC's iPXE ROM: the firmware's own PXE gets ipxe.efi
// from mayu over TFTP, that iPXE asks DHCP again and gets the script. It
// stops when the installer asks for its first stage: from there on the
// install is the same as every other (TestVMProxyUEFIFirmwarePXEInstallRunning
// follows this firmware's to `running`).
func TestVMUEFIFirmwarePXEInstall(t *testing.T) {
	b := requireVM(t, vmlab.UEFI)
	l := newVMLab(t, b)
	start := time.Now()
	v := bootVM(t, l.seg, vmlab.UEFI, true, "VM-UEFI-PXE-0001", "52:54:00:00:05:03")
	v.step(120*time.Second, "iPXE runs mayu's chain script", `mayu: identifying`)
	v.step(30*time.Second, "mayu answers the installer script", `mayu: installing machine `+regexp.QuoteMeta(v.id))
	v.step(60*time.Second, "the installer kernel runs /init", `mayu-installer: kernel`)
	v.step(30*time.Second, "the first stage runs", `mayu-installer: running the first-stage script`)
	waitState(t, l.seg.TLab, l.srv, "http://127.0.0.1:2379", v.id, machine.Installing, 30*time.Second)
	if log := l.r.log.String(); !regexp.MustCompile(`tftp: sent.* file=ipxe.efi`).MatchString(log) {
		t.Errorf("mayu's log shows no TFTP transfer of ipxe.efi:\n%s", tail(log, 30))
	}
	t.Logf("UEFI firmware PXE: installing after %s", time.Since(start).Round(100*time.Millisecond))
}

// Three replicas on a 3-member etcd: the DHCP leader, which served the
// machine its iPXE script, installer and first stage, is killed while the
// machine installs. The first-stage script retries its calls on the other
// replicas (template var mayu_urls), the install completes, the new
// leader stays silent on the next boot, and the machine ends `running`.
func TestVMThreeReplicasLeaderKilledDuringInstall(t *testing.T) {
	b := requireVM(t, vmlab.BIOS)
	var urls []string
	for _, a := range []string{"10.99.0.2", "10.99.0.3", "10.99.0.4"} {
		urls = append(urls, "http://"+a+":4081")
	}
	c := newClusterWith(t, replicaOptions{files: b.Dir,
		kernelArgs: vmlab.KernelArgs + " mayu.urls=" + strings.Join(urls, ","), ignition: true,
		vars: vmVars(map[string]string{"mayu_urls": strings.Join(urls, " ")})})
	ra := c.seg.AddHost("ra")
	startRA(t, c.seg.TLab, ra, "eth0")
	c.seg.AddTap("tap0")
	etcd := endpoints
	l := c.leader(30 * time.Second)
	t.Logf("r%d leads DHCP", l+1)
	start := time.Now()
	v := bootVM(t, c.seg, vmlab.BIOS, false, "VM-HA-0001", "52:54:00:00:05:04")
	v.step(90*time.Second, "iPXE runs mayu's chain script", `mayu: identifying`)
	v.step(30*time.Second, "mayu answers the installer script", `mayu: installing machine `+v.id)

	// Kill the leader the moment it has handed out the first stage: the
	// machine is installing, everything after goes elsewhere.
	leader := c.replicas[l]
	deadline := time.Now().Add(90 * time.Second)
	for !regexp.MustCompile(`machine state changed.*state=installing`).MatchString(leader.log.String()) {
		if time.Now().After(deadline) {
			t.Fatalf("r%d never handed out the first stage:\n%s", l+1, v.Tail(30))
		}
		time.Sleep(20 * time.Millisecond)
	}
	leader.cmd.Process.Signal(syscall.SIGKILL)
	leader.cmd.Wait()
	t.Logf("%7.1fs  killed the leader r%d (kill -9) while the machine installs", v.Since().Seconds(), l+1)

	// The kill may land before the first stage reached the machine (the
	// state changes before the response is written): then the installer
	// fetches it again from another replica (mayu.urls), else the first
	// stage retries its calls there (mayu_urls).
	v.step(60*time.Second, "the installer or the first stage retries on another replica",
		`(mayu-install\[`+v.id+`\]|mayu-installer): retry 1: `)
	v.step(300*time.Second, "it announces installed", `mayu-install\[`+v.id+`\]: announcing installed`)
	v.step(120*time.Second, "and reboots", `mayu-install\[`+v.id+`\]: done, rebooting`)
	m := waitState(t, c.seg.TLab, c.nodes[(l+1)%3], etcd, v.id, machine.Installed, 30*time.Second)
	if m.LastReplica == fmt.Sprintf("r%d", l+1) {
		t.Errorf("installed recorded by the killed replica r%d", l+1)
	}
	nl := c.leader(30 * time.Second)
	t.Logf("r%d leads DHCP now", nl+1)

	_, addr := v.bootDisk(90 * time.Second)
	// The unit Ignition installed reports boot-complete to the first
	// replica of mayu_urls that answers: the killed leader may be first.
	m = waitState(t, c.seg.TLab, c.nodes[(l+1)%3], etcd, v.id, machine.Running, 120*time.Second)
	if addr != m.InternalAddr {
		t.Errorf("the OS brought up %s, its InternalAddr is %s", addr, m.InternalAddr)
	}
	checkIgnition(t, c.seg.TLab, c.cli, v, m)
	if !ignoredInstalled(c.replicas[nl].log.String(), v.mac) {
		t.Error("the new leader's log shows no DHCP request of the installed machine ignored")
	}
	var history []string
	for _, e := range m.History {
		history = append(history, fmt.Sprintf("%s by %s", e.State, e.Replica))
	}
	t.Logf("history: %s; running after %s", strings.Join(history, ", "), time.Since(start).Round(100*time.Millisecond))
}

// The OS image is an artifact, uploaded to a replica that does not lead
// DHCP and copied from there to the others: the machine installs from the
// leader, which got the image from a peer, and its record keeps the
// image's digest. The configuration names it, so it cannot be removed.
func TestVMInstallsArtifactFromPeer(t *testing.T) {
	b := requireVM(t, vmlab.BIOS)
	c := newClusterWith(t, replicaOptions{files: b.Dir, kernelArgs: vmlab.KernelArgs, image: "artifact:os-vm",
		ignition: true, vars: vmVars(nil)})
	ra := c.seg.AddHost("ra")
	startRA(t, c.seg.TLab, ra, "eth0")
	c.seg.AddTap("tap0")
	l := c.leader(30 * time.Second)
	up := (l + 1) % 3
	image := filepath.Join(b.Dir, "images", "os.img")
	if out, err := c.mayuctl(up, "artifact", "add", "os-vm", "--file", image); err != nil {
		t.Fatalf("mayuctl artifact add --file on r%d: %v\n%s", up+1, err, out)
	}
	a := c.waitArtifact(l, "os-vm", time.Minute, "held by every replica", heldBy("r1", "r2", "r3"))
	t.Logf("os-vm uploaded to r%d, held by %s; r%d leads DHCP", up+1, holderNames(a), l+1)
	if out, err := c.mayuctl(l, "artifact", "rm", "os-vm"); err == nil || !strings.Contains(out, "cluster.install.image") {
		t.Errorf("removing the configured image: %v\n%s", err, out)
	}

	v := bootVM(t, c.seg, vmlab.BIOS, false, "VM-ART-0001", "52:54:00:00:05:07")
	v.install(90 * time.Second)
	m := waitState(t, c.seg.TLab, c.nodes[l], endpoints, v.id, machine.Installed, 30*time.Second)
	if got := m.Artifacts["image"]; !strings.Contains(got, a.SHA256) {
		t.Errorf("the machine's record keeps image %q, want the artifact's digest %s", got, a.SHA256)
	}
	// The leader served the image from its own cache, copied from a peer.
	if log := c.replicas[l].log.String(); strings.Contains(log, "machine sent to a peer") {
		t.Errorf("the leader sent the machine elsewhere instead of serving the image it holds:\n%s", tail(log, 20))
	}
}

// OVMF without the NIC's iPXE ROM and without its PXE boot options boots
// through its own UEFI HTTP boot: it asks DHCP as vendor class HTTPClient,
// gets the URL of ipxe.efi from mayu (no next-server, no TFTP), fetches
// it over HTTP (it aborts its first GET and fetches the file again), and
// that iPXE goes on as ever: install; the leader is silent to the
// firmware's next HTTP boot; the disk boots (restartDiskFirst); `running`.
func TestVMUEFIHTTPBootInstallRunning(t *testing.T) {
	b := requireVM(t, vmlab.UEFI)
	l := newVMLab(t, b)
	const etcd = "http://127.0.0.1:2379"
	start := time.Now()
	mac := "52:54:00:00:05:08"
	v := bootVMWith(t, l.seg, vmlab.VMConfig{Firmware: vmlab.UEFI, HTTPBoot: true}, "VM-UEFI-HTTP-0001", mac)
	v.step(90*time.Second, "OVMF's HTTP boot starts", `>>Start HTTP Boot over IPv4`)
	v.step(30*time.Second, "it gets the URL of ipxe.efi from mayu", `URI: http://10\.99\.0\.1:4081/tftp/ipxe\.efi`)
	v.install(60 * time.Second)
	m := waitState(t, l.seg.TLab, l.srv, etcd, v.id, machine.Installed, 30*time.Second)
	boot1 := time.Since(start)

	log := l.r.log.String()
	if !regexp.MustCompile(`dhcp: ack.*` + mac + `.*firmware=httpboot.*boot="http boot"`).MatchString(log) {
		t.Errorf("mayu's log shows no DHCP answer to the firmware's HTTP boot:\n%s", tail(log, 40))
	}
	samples, _ := scrape(t, l.seg.TLab, l.srv)
	if got := samples[`mayu_http_requests_total{code="200",route="/tftp/{name}"}`]; got < 1 {
		t.Errorf("mayu served ipxe.efi over HTTP %v times, want at least once", got)
	}
	for _, r := range []string{"ok", "failed", "refused", "not_found"} {
		if got := samples[`mayu_tftp_transfers_total{result="`+r+`"}`]; got != 0 {
			t.Errorf("mayu_tftp_transfers_total{result=%q} = %v: the firmware used TFTP", r, got)
		}
	}
	if strings.Contains(log, "tftp: ") {
		t.Errorf("mayu's log shows TFTP traffic:\n%s", tail(log, 40))
	}

	// The firmware's HTTP boot asks again and gets nothing; its fall-
	// through (HTTPv4, then HTTPv6: ~170 s) is TestVMUEFIInstallBootReinstall's.
	v.restartDiskFirst(l.r, 90*time.Second)
	hostname, addr := v.bootDisk(90 * time.Second)
	if addr != m.InternalAddr || hostname != m.Hostname {
		t.Errorf("the OS came up as %s on %s; its record says %s on %s", hostname, addr, m.Hostname, m.InternalAddr)
	}
	waitState(t, l.seg.TLab, l.srv, etcd, v.id, machine.Running, 120*time.Second)
	if !regexp.MustCompile(`dhcp: ignored.*` + mac + `.*firmware=httpboot.*reason=installed`).MatchString(l.r.log.String()) {
		t.Error("mayu's log shows no HTTP boot request of the installed machine ignored")
	}
	t.Logf("UEFI HTTP boot: installed after %s, running after %s", boot1.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
}

// proxyCycle is the flow of one machine on a segment whose addresses a
// site DHCP server hands out (dnsmasq, plain DHCP) while mayu runs in
// proxy mode: the firmware and iPXE get their address from dnsmasq and
// only the boot information from mayu; the machine installs, its next
// boot gets nothing from mayu and falls through to the disk, and it
// reaches `running`. mayu writes no lease at any point. A fallThrough of
// 0: restartDiskFirst once the leader has ignored the installed machine.
func proxyCycle(t *testing.T, cfg vmlab.VMConfig, serial, mac string, firmware, fallThrough time.Duration) (*vmLab, *vm) {
	t.Helper()
	b := requireVM(t, cfg.Firmware)
	l := newVMLabWith(t, b, true)
	const etcd = "http://127.0.0.1:2379"
	start := time.Now()
	v := bootVMWith(t, l.seg, cfg, serial, mac)
	v.lease = siteLease
	v.install(firmware)
	m := waitState(t, l.seg.TLab, l.srv, etcd, v.id, machine.Installed, 30*time.Second)
	boot1 := time.Since(start)

	// The boot address came from the site's server: iPXE's, which it
	// prints when it has configured the NIC, is in dnsmasq's range and
	// is the one dnsmasq leased to the MAC.
	ipxe := ""
	for _, line := range v.Lines() {
		if f := regexp.MustCompile(`net0: (10\.99\.0\.\d+)/`).FindStringSubmatch(line.Text); f != nil {
			ipxe = f[1]
			break
		}
	}
	leased := l.site.leaseOf(t, mac)
	if !regexp.MustCompile(`^` + siteLease + `$`).MatchString(leased) {
		t.Errorf("the site DHCP server leased %q to %s, want an address of its range 10.99.0.200-249", leased, mac)
	}
	if ipxe != "" && ipxe != leased {
		t.Errorf("iPXE configured %s, the site DHCP server leased %s", ipxe, leased)
	}
	t.Logf("          boot address %s (iPXE: %q) leased by the site DHCP server", leased, ipxe)
	noLeases(t, l)

	if fallThrough == 0 {
		v.restartDiskFirst(l.r, 90*time.Second)
		fallThrough = 90 * time.Second
	}
	hostname, addr := v.bootDisk(fallThrough)
	if addr != m.InternalAddr || hostname != m.Hostname {
		t.Errorf("the OS came up as %s on %s; its record says %s on %s", hostname, addr, m.Hostname, m.InternalAddr)
	}
	waitState(t, l.seg.TLab, l.srv, etcd, v.id, machine.Running, 120*time.Second)
	if !ignoredInstalled(l.r.log.String(), mac) {
		t.Error("mayu's log shows no DHCP request of the installed machine ignored")
	}
	noLeases(t, l)
	t.Logf("proxy mode, %s: installed after %s, running after %s", cfg.Firmware,
		boot1.Round(100*time.Millisecond), time.Since(start).Round(100*time.Millisecond))
	return l, v
}

// noLeases fails the test if mayu wrote any DHCP lease to etcd.
func noLeases(t *testing.T, l *vmLab) {
	t.Helper()
	if out := strings.TrimSpace(l.r.etcdctl(t, "get", "--prefix", "--keys-only", "/mayu/leases/")); out != "" {
		t.Errorf("mayu in proxy mode wrote leases:\n%s", out)
	}
}

// SeaBIOS with qemu's iPXE ROM, mayu in proxy mode: the ROM's iPXE gets
// its address from the site's dnsmasq and mayu's script URL from mayu's
// proxy answer.
func TestVMProxyBIOSInstallRunning(t *testing.T) {
	l, _ := proxyCycle(t, vmlab.VMConfig{Firmware: vmlab.BIOS}, "VM-PROXY-BIOS-0001", "52:54:00:00:05:09", 90*time.Second, 90*time.Second)
	samples, _ := scrape(t, l.seg.TLab, l.srv)
	if got := samples[`mayu_dhcp_proxy_answers_total{firmware="ipxe",port="67"}`]; got < 1 {
		t.Errorf("mayu_dhcp_proxy_answers_total{firmware=ipxe,port=67} = %v, want at least 1", got)
	}
}

// OVMF without the iPXE ROM, mayu in proxy mode: OVMF's own PXE gets its
// address from the site's dnsmasq and, from mayu's proxy answer and its
// boot-server request on port 4011, ipxe.efi, which it fetches over TFTP;
// that iPXE goes on as in full mode.
func TestVMProxyUEFIFirmwarePXEInstallRunning(t *testing.T) {
	l, _ := proxyCycle(t, vmlab.VMConfig{Firmware: vmlab.UEFI, FirmwarePXE: true},
		"VM-PROXY-UEFI-0001", "52:54:00:00:05:0a", 120*time.Second, 0)
	if log := l.r.log.String(); !regexp.MustCompile(`tftp: sent.* file=ipxe.efi`).MatchString(log) {
		t.Errorf("mayu's log shows no TFTP transfer of ipxe.efi:\n%s", tail(log, 30))
	}
	samples, _ := scrape(t, l.seg.TLab, l.srv)
	for _, c := range []string{
		`mayu_dhcp_proxy_answers_total{firmware="pxe",port="67"}`,  // OVMF's DISCOVER
		`mayu_dhcp_boot_server_requests_total{outcome="answered"}`, // its request to 4011
		`mayu_dhcp_proxy_answers_total{firmware="ipxe",port="67"}`, // the chained ipxe.efi
	} {
		if samples[c] < 1 {
			t.Errorf("%s = %v, want at least 1", c, samples[c])
		}
	}
}
