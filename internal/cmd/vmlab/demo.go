package main

// vmlab demo (`make demo`): a real virtual machine network-boots through
// mayu, gets its OS installed, reboots into it and reports in; then a
// reinstall.
//
//  1. builds the installer (Debian kernel + busybox initramfs) and a small
//     OS image that boots on BIOS and UEFI (package internal/vmlab);
//  2. creates a lab network in namespaces (package internal/netlab): a
//     bridge with a tap for the VM and the replicas' hosts (nothing
//     touches the machine's interfaces);
//  3. starts bin/mayu on its embedded etcd, or with -replicas 3 three
//     replicas on a 3-member etcd (bin/etcd), configured by package
//     internal/fixture, and adds the OS image to the artifact catalogue
//     (mayuctl artifact add --file) for every replica to hold;
//  4. boots a qemu VM (SeaBIOS; -fw uefi for OVMF), network first and disk
//     second, and prints each step of the flow as it happens, from the
//     VM's serial console and mayu's log;
//  5. shows the machine with bin/mayuctl and bin/etcdctl, reinstalls it
//     (with three replicas, the DHCP leader is killed meanwhile), and
//     removes everything it made, also on SIGINT and SIGTERM: processes
//     by their id, the namespaces it created, its work directory.
//
// With -flatcar DIR it installs Flatcar Container Linux from the release
// files in DIR instead, through etc/examples/flatcar (flatcar.go).
//
// Needs root, the binaries in -bin (make demo builds them) and the
// packages scripts/install-deps.sh installs.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mayu-boot/mayu/internal/fixture"
	"github.com/mayu-boot/mayu/internal/netlab"
	"github.com/mayu-boot/mayu/internal/vmlab"
	"github.com/mayu-boot/mayu/pkg/config"
)

const (
	demoSerial  = "DEMO-SN-0001"
	demoMachine = "demo-sn-0001" // the id mayu derives from the SMBIOS serial
	demoMAC     = "52:54:00:12:34:56"
	demoImage   = "demo-os-image" // the OS image, an artifact of the catalogue
)

// A console line that ends every wait: the installer, its first stage or
// the OS says it failed, or the kernel died.
var demoFailure = regexp.MustCompile(`mayu-installer: FAILED|mayu-install\[.*\]: FAILED|MAYU-OS: FAILED|Kernel panic`)

type demoRun struct {
	replicas int
	fw       vmlab.Firmware
	flatcar  *flatcarRelease // -flatcar: the release to install
	top, bin string
	work     string

	clean       netlab.Cleanups
	interrupted atomic.Bool

	seg       *netlab.Segment
	addrs     []string
	hosts     []string // the replicas' namespaces
	endpoints string   // etcd, as etcdctl takes them
	token     string   // the admin token file
	ctlNS     string   // where mayuctl runs: a replica's host
	mayu      []*exec.Cmd
	log       *tagLog
	vm        *vmlab.VM
	vmDone    chan struct{}
}

func demo(args []string) int {
	d := &demoRun{}
	fs := flag.NewFlagSet("demo", flag.ExitOnError)
	replicas := fs.String("replicas", envOr("REPLICAS", "1"), "1, or 3 replicas on a 3-member etcd (env REPLICAS)")
	fw := fs.String("fw", envOr("FW", "bios"), "firmware: bios (SeaBIOS) or uefi (OVMF) (env FW)")
	exe, _ := os.Executable()
	fs.StringVar(&d.bin, "bin", filepath.Dir(exe), "directory of mayu, mayuctl, etcd and etcdctl")
	cache := fs.String("cache", os.Getenv("MAYU_VMLAB_CACHE"), "cache for the Debian kernel (default: .work/vmlab at the top of the checkout; env MAYU_VMLAB_CACHE)")
	// No environment defaults here: `make demo` stays the Debian demo
	// whatever FLATCAR_DIR holds; `make flatcar-demo` passes them.
	flatcar := fs.String("flatcar", "", "install Flatcar Container Linux from the release files in DIR (make flatcar-demo FLATCAR_DIR=DIR)")
	flatcarKey := fs.String("flatcar-key", "", "Flatcar's image signing key (make flatcar-demo FLATCAR_KEY=FILE; default DIR/"+flatcarKeyFile+")")
	fs.Parse(args)
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "unexpected arguments: %q\n", fs.Args())
		return 2
	}
	d.top = filepath.Dir(d.bin)
	switch *replicas {
	case "1", "3":
		d.replicas, _ = strconv.Atoi(*replicas)
	default:
		fmt.Fprintln(os.Stderr, "REPLICAS must be 1 or 3")
		return 2
	}
	switch *fw {
	case "bios", "uefi":
		d.fw = vmlab.Firmware(*fw)
	default:
		fmt.Fprintln(os.Stderr, "FW must be bios or uefi")
		return 2
	}
	if *cache == "" {
		*cache = filepath.Join(d.top, ".work", "vmlab")
	}
	flatcarSet := *flatcarKey != ""
	fs.Visit(func(f *flag.Flag) { flatcarSet = flatcarSet || f.Name == "flatcar" }) // -flatcar="" too: say what is missing
	if flatcarSet {
		// Checked before anything else: the release files are the
		// operator's to fetch, and a missing one should cost nothing.
		var err error
		if d.flatcar, err = checkFlatcarDir(*flatcar, *flatcarKey); err != nil {
			fmt.Fprintln(os.Stderr, "vmlab demo -flatcar:", err)
			return 2
		}
	}
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "make demo needs root (network namespaces, tap devices)")
		return 1
	}
	for _, b := range []string{"mayu", "mayuctl", "etcd", "etcdctl"} {
		if _, err := os.Stat(filepath.Join(d.bin, b)); err != nil {
			fmt.Fprintf(os.Stderr, "%s is missing: run make demo\n", filepath.Join(d.bin, b))
			return 1
		}
	}
	needs := vmlab.MissingForBoot(d.fw)
	if d.flatcar == nil {
		needs = append(vmlab.MissingForBuild(), needs...)
	}
	if miss := needs; len(miss) > 0 {
		fmt.Fprintf(os.Stderr, "missing: %s (scripts/install-deps.sh installs them)\n", strings.Join(miss, ", "))
		return 1
	}
	if err := netlab.Check("busybox", "curl"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}

	// Ctrl-C or SIGTERM: remove everything, whatever the demo is doing.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		d.interrupted.Store(true)
		fmt.Fprintln(os.Stderr, "\ninterrupted: cleaning up")
		d.clean.Run()
		os.Exit(130)
	}()

	err := d.run(*cache)
	if err != nil {
		// On Ctrl-C the VM and mayu get the signal too and may stop
		// before this process has heard of it: give the handler its say.
		time.Sleep(500 * time.Millisecond)
		if d.interrupted.Load() {
			select {} // the handler cleans up and exits
		}
		d.fail(err)
		d.clean.Run()
		return 1
	}
	d.clean.Run()
	return 0
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func step(format string, args ...any) {
	fmt.Printf("\n\033[1m== %s\033[0m\n", fmt.Sprintf(format, args...))
}

func note(format string, args ...any) { fmt.Printf("    %s\n", fmt.Sprintf(format, args...)) }

// show prints text indented, without empty lines.
func show(text string) {
	for _, l := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		if strings.TrimSpace(l) != "" {
			fmt.Printf("    %s\n", l)
		}
	}
}

// fail says why the demo failed, with the end of the VM's console and of
// mayu's log.
func (d *demoRun) fail(err error) {
	fmt.Fprintf(os.Stderr, "\n\033[1mdemo failed: %v\033[0m\n", err)
	if d.vm != nil {
		fmt.Fprintln(os.Stderr, "VM console (last 25 lines):")
		fmt.Fprint(os.Stderr, indent(d.vm.Tail(25)))
	}
	if d.log != nil {
		fmt.Fprintln(os.Stderr, "mayu log (last 25 lines):")
		fmt.Fprint(os.Stderr, indent(d.log.tail(25)))
	}
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("    " + l + "\n")
	}
	return b.String()
}

func failf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func (d *demoRun) run(cache string) error {
	var err error
	if d.work, err = os.MkdirTemp("", "mayu-demo."); err != nil {
		return err
	}
	d.clean.Add(func() { os.RemoveAll(d.work) })

	build := "" // Flatcar's installer and image are the release's
	if d.flatcar == nil {
		step("building the installer and the OS image from Debian packages (kernel cached in %s)", relTo(d.top, cache))
		b, err := vmlab.BuildAll(context.Background(), cache, filepath.Join(d.work, "build"), func(f string, a ...any) { note(f, a...) })
		if err != nil {
			return err
		}
		if err := printBuild(os.Stdout, "    ", b); err != nil {
			return err
		}
		build = b.Dir
	}

	if d.replicas == 1 {
		d.addrs = []string{"10.99.0.1"}
	} else {
		d.addrs = []string{"10.99.0.2", "10.99.0.3", "10.99.0.4"}
	}
	if d.seg, err = netlab.NewSegmentNamed(d.clean.Add, "mayu-demo-"); err != nil {
		return err
	}
	step("a lab network: namespace %s (bridge br0, tap0 for the VM) and %d replica host(s)", d.seg.Switch, len(d.addrs))
	if err := d.seg.AddTap("tap0"); err != nil {
		return err
	}
	for i, a := range d.addrs {
		ns, err := d.seg.AddHost(fmt.Sprintf("r%d", i+1), a+"/24")
		if err != nil {
			return err
		}
		d.hosts = append(d.hosts, ns)
		note("%s: eth0 %s/24", ns, a)
	}
	// IPv6 router advertisements only (dnsmasq: no DNS, no DHCP): without
	// a router on the segment iPXE waits ~13 s for one on every network
	// boot.
	if err := d.seg.IP("-n", d.hosts[0], "addr", "add", vmlab.RAAddress, "dev", "eth0", "nodad"); err != nil {
		return err
	}
	ra := vmlab.RouterAdvertiser("eth0", d.work)
	if _, _, err := d.seg.Start(d.hosts[0], ra[0], ra[1:]...); err != nil {
		return err
	}
	note("%s: IPv6 router advertisements for fd99::/64 (dnsmasq, RA only)", d.hosts[0])

	var etcd, urls []string
	if d.replicas == 3 {
		if etcd, err = d.startEtcd(); err != nil {
			return err
		}
		for _, a := range d.addrs {
			urls = append(urls, "http://"+a+":4081")
		}
		d.endpoints = strings.Join(etcd, ",")
	} else {
		d.endpoints = "http://127.0.0.1:2379"
		urls = []string{"http://" + d.addrs[0] + ":4081"}
	}

	if d.flatcar != nil {
		if err := d.startUpstream(); err != nil {
			return err
		}
		if err := d.startMayu(build, etcd, urls); err != nil {
			return err
		}
		if err := d.addFlatcarArtifacts(); err != nil {
			return err
		}
		return d.flatcarFlow()
	}
	if err := d.startMayu(build, etcd, urls); err != nil {
		return err
	}
	if err := d.addImage(build); err != nil {
		return err
	}
	return d.flow()
}

// startEtcd starts one etcd member on each replica host and waits until
// all three are healthy; it returns the client URLs.
func (d *demoRun) startEtcd() ([]string, error) {
	step("a 3-member etcd cluster, one member on each replica host (bin/etcd)")
	var peers, eps []string
	for i, a := range d.addrs {
		peers = append(peers, fmt.Sprintf("e%d=http://%s:2380", i+1, a))
		eps = append(eps, "http://"+a+":2379")
	}
	for i, a := range d.addrs {
		_, _, err := d.seg.Start(d.hosts[i], filepath.Join(d.bin, "etcd"), "--name", fmt.Sprintf("e%d", i+1),
			"--data-dir", filepath.Join(d.work, fmt.Sprintf("etcd%d", i+1)),
			"--listen-client-urls", "http://"+a+":2379", "--advertise-client-urls", "http://"+a+":2379",
			"--listen-peer-urls", "http://"+a+":2380", "--initial-advertise-peer-urls", "http://"+a+":2380",
			"--initial-cluster", strings.Join(peers, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", "mayu-demo", "--log-level", "error")
		if err != nil {
			return nil, err
		}
	}
	var out string
	for range 150 {
		var err error
		out, err = d.seg.Run(10*time.Second, d.hosts[0], filepath.Join(d.bin, "etcdctl"), "--endpoints", strings.Join(eps, ","), "endpoint", "health")
		if err == nil {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	show(out)
	if strings.Count(out, "is healthy") != 3 {
		return nil, failf("etcd did not become healthy")
	}
	return eps, nil
}

// startMayu writes each replica's files and config and starts it; one
// log for all replicas, each line tagged with its replica.
func (d *demoRun) startMayu(build string, etcd, urls []string) error {
	if d.replicas == 1 {
		step("starting mayu in %s (embedded etcd; DHCP 67, TFTP 69, HTTP 4081)", d.hosts[0])
	} else {
		step("starting three mayu replicas, each advertising its own address; the first stage fails over between them (mayu_urls)")
	}
	logFile, err := os.Create(filepath.Join(d.work, "mayu.log"))
	if err != nil {
		return err
	}
	d.clean.Add(func() { logFile.Close() })
	d.log = newTagLog(logFile)
	token := ""
	for i, a := range d.addrs {
		name := fmt.Sprintf("r%d", i+1)
		dir := filepath.Join(d.work, name)
		if err := fixture.WriteFiles(dir, fixture.Files{Installer: build, IPXE: true,
			Templates: filepath.Join(d.top, "etc", "templates"), Token: token}); err != nil {
			return err
		}
		if token == "" { // one admin token for all replicas
			data, err := os.ReadFile(fixture.TokenFile(dir))
			if err != nil {
				return err
			}
			token = strings.TrimSpace(string(data))
			d.token = fixture.TokenFile(dir)
		}
		path, err := fixture.Config{Dir: dir, Name: name, Interface: "eth0", Advertise: a, Router: d.addrs[0], Etcd: etcd,
			Image:      config.ArtifactPrefix + demoImage,
			Profiles:   []fixture.Profile{{Name: "core", Quantity: 3, Tags: map[string]string{"rule-core": "true"}}},
			KernelArgs: vmlab.KernelArgs, IgnitionFinalConfig: true,
			TemplateVars: map[string]string{
				"ssh_authorized_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDemoKeyOnly demo@mayu",
				"ntp":                d.addrs[0],
				"mayu_urls":          strings.Join(urls, " "),
			}}.Write()
		if err != nil {
			return err
		}
		if d.flatcar != nil {
			if err := d.flatcarConfig(dir, path); err != nil {
				return err
			}
		}
		cmd := d.seg.Command(context.Background(), d.hosts[i], filepath.Join(d.bin, "mayu"), "-config", path, "-log-level", "debug")
		w := d.log.writer("[" + name + "] ")
		cmd.Stdout, cmd.Stderr = w, w
		if err := d.seg.StartCmd(cmd); err != nil {
			return err
		}
		d.mayu = append(d.mayu, cmd)
	}
	// mayu first, before the network goes: each resigns on SIGTERM.
	d.clean.Add(func() {
		for _, c := range d.mayu {
			c.Process.Signal(syscall.SIGTERM)
		}
		for _, c := range d.mayu {
			waitOrKill(c, 5*time.Second)
		}
	})
	d.ctlNS = d.hosts[0]
	for range 300 {
		if d.log.count("mayu started") == d.replicas && d.log.count("answering DHCP") > 0 {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, l := range d.log.matching("mayu started") {
		show(plain(l))
	}
	return d.mayulog("answering DHCP", time.Second)
}

// addImage puts the OS image into the artifact catalogue the way an
// operator would (the configuration names it: cluster.install.image:
// artifact:demo-os-image), and waits until every replica holds it.
func (d *demoRun) addImage(build string) error {
	image := filepath.Join(build, "images", "os.img")
	step("mayuctl artifact add %s --file %s: streamed to a replica, verified, copied to the others", demoImage, relTo(d.top, image))
	if err := d.ctl("artifact", "add", demoImage, "--file", image); err != nil {
		return err
	}
	for range 300 {
		out, err := d.ctlOutput("artifact", "show", demoImage, "-o", "json")
		if err == nil && strings.Count(out, `"peerUrl"`) == d.replicas {
			return d.ctl("artifact", "list")
		}
		time.Sleep(200 * time.Millisecond)
	}
	return failf("not every replica holds %s after 60 s", demoImage)
}

// waitOrKill waits for c to end, SIGKILL after d.
func waitOrKill(c *exec.Cmd, d time.Duration) {
	done := make(chan struct{})
	go func() { c.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		c.Process.Kill()
		<-done
	}
}

// flow boots the VM and follows the boot flow, then the reinstall.
func (d *demoRun) flow() error {
	firmware := map[vmlab.Firmware]string{vmlab.BIOS: "SeaBIOS", vmlab.UEFI: "OVMF"}[d.fw]
	step("booting the VM: %s firmware (%s), SMBIOS serial %s, MAC %s, network first, disk second (qemu -accel tcg)", d.fw, firmware, demoSerial, demoMAC)
	vmDir := filepath.Join(d.work, "vm")
	vm, err := vmlab.StartVM(vmlab.VMConfig{Name: "mayu-demo", Netns: d.seg.Switch, Tap: "tap0", MAC: demoMAC, Serial: demoSerial,
		Firmware: d.fw, Disk: filepath.Join(vmDir, "disk.raw"), Dir: vmDir, FailOn: demoFailure})
	if err != nil {
		return err
	}
	d.vm, d.vmDone = vm, make(chan struct{})
	go func() { vm.Wait(context.Background()); close(d.vmDone) }()
	d.clean.Add(vm.Stop) // first of all
	note("console: %s (times are seconds since qemu started)", vm.LogPath())

	mac := regexp.QuoteMeta(demoMAC)
	id := regexp.QuoteMeta(demoMachine)
	step("1. the firmware runs qemu's iPXE NIC ROM, which asks DHCP; the leader answers with the script URL")
	note("(qemu's NIC ROM is iPXE already, so steps 1-2 of the flow, PXE firmware and TFTP of iPXE, collapse into this one)")
	if err := d.follow(inLog("dhcp: ack.*"+mac+".*ipxe script"), onConsole("Filename: http")); err != nil {
		return err
	}
	step("3-4. iPXE fetches mayu's chain script and sends serial, UUID and MAC; mayu registers the machine")
	if err := d.follow(onConsole("mayu: identifying"), inLog("machine registered"), onConsole("mayu: installing machine")); err != nil {
		return err
	}
	step("   iPXE loads the installer kernel and initrd from mayu and boots it")
	if err := d.follow(onConsole("boot/initrd"), onConsole("mayu-installer: kernel", 90*time.Second)); err != nil {
		return err
	}
	step("5. the installer gets an address, fetches its first-stage script (state: installing) and runs it")
	if err := d.follow(onConsole("mayu-installer: DHCP lease"), inLog("state=installing"),
		onConsole(`mayu-install\[`+id+`\]: writing the OS image`), onConsole(`mayu-install\[`+id+`\]: putting the final config`, 300*time.Second),
		onConsole(`mayu-install\[`+id+`\]: announcing installed`), inLog("state=installed"),
		onConsole(`mayu-install\[`+id+`\]: done, rebooting`)); err != nil {
		return err
	}
	step("6. the reboot: the firmware asks DHCP again, the leader ignores the installed machine, the firmware boots the disk")
	if d.fw == vmlab.BIOS {
		note("(SeaBIOS tries the disk after iPXE gives up: ~20 s)")
	} else {
		note("(OVMF tries PXEv4, PXEv6 and HTTP boot before the disk: ~150 s)")
	}
	if err := d.follow(inLog("dhcp: ignored.*reason=installed", 60*time.Second), onConsole("MAYU-OS: kernel", 300*time.Second)); err != nil {
		return err
	}
	step("7. first boot: the OS's initramfs runs the real Ignition on the final config mayu rendered (Ignition JSON, on the disk)")
	if err := d.follow(onConsole("MAYU-OS: ignition: first boot"), onConsole("MAYU-OS: ignition files stage done"),
		onConsole("MAYU-OS: switching to the root file system")); err != nil {
		return err
	}
	step("   systemd comes up on what Ignition wrote: hostname, static address; the unit Ignition enabled reports boot-complete (state: running)")
	if err := d.follow(onConsole("MAYU-OS: up:", 180*time.Second), inLog("state=running")); err != nil {
		return err
	}
	addr := ""
	upRe := regexp.MustCompile(`MAYU-OS: up: .*addresses=\S+:([0-9.]+)/`)
	for _, l := range vm.Lines() {
		if s := upRe.FindStringSubmatch(l.Text); s != nil {
			addr = s[1]
		}
	}
	out, err := d.seg.Run(10*time.Second, d.hosts[0], "busybox", "ping", "-c", "1", "-W", "2", addr)
	if err != nil {
		return failf("the OS's address %s does not answer ping", addr)
	}
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "bytes from") {
			show(l)
		}
	}

	step("mayuctl list")
	if err := d.ctl("list"); err != nil {
		return err
	}
	step("mayuctl status %s", demoMachine)
	if err := d.ctl("status", demoMachine); err != nil {
		return err
	}
	if d.replicas == 3 {
		step("mayuctl replicas")
		if err := d.ctl("replicas"); err != nil {
			return err
		}
	}
	step("etcdctl get /mayu/machines/%s", demoMachine)
	if err := d.etcdctl("get", "/mayu/machines/"+demoMachine, "--print-value-only"); err != nil {
		return err
	}
	step("etcdctl get --prefix --keys-only /mayu/")
	if err := d.etcdctl("get", "--prefix", "--keys-only", "/mayu/"); err != nil {
		return err
	}
	return d.reinstall()
}

func first(ds []time.Duration, def time.Duration) time.Duration {
	if len(ds) > 0 {
		return ds[0]
	}
	return def
}

// wait is one step of the flow the demo waits for: a line of the VM's
// console (onConsole) or of mayu's log (inLog), each within 120 s unless told.
type wait struct {
	console bool
	re      string
	within  time.Duration
}

func onConsole(re string, within ...time.Duration) wait {
	return wait{true, re, first(within, 120*time.Second)}
}

func inLog(re string, within ...time.Duration) wait {
	return wait{false, re, first(within, 120*time.Second)}
}

// follow waits for each step in turn and prints its line.
func (d *demoRun) follow(ws ...wait) error {
	for _, w := range ws {
		var err error
		if w.console {
			err = d.console(w.re, w.within)
		} else {
			err = d.mayulog(w.re, w.within)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// reinstall is step 8: a reinstall that the next boot honours; with three
// replicas, the DHCP leader is killed while the machine installs.
func (d *demoRun) reinstall() error {
	id := regexp.QuoteMeta(demoMachine)
	step("8. mayuctl reinstall %s (state: configured), then a power cycle: the next network boot installs again", demoMachine)
	if err := d.ctl("reinstall", demoMachine); err != nil {
		return err
	}
	if err := d.vm.Reset(); err != nil { // QMP system_reset
		return err
	}
	if err := d.follow(onConsole("mayu: installing machine")); err != nil {
		return err
	}
	leader, killedAt := -1, 0
	if d.replicas == 3 {
		// The DHCP leader handed the machine its script URL, so the
		// installer talks to it: kill it the moment the first stage is out.
		for i, ns := range d.hosts {
			if _, err := d.seg.Run(5*time.Second, ns, "curl", "-sf", "--max-time", "2", "http://127.0.0.1:4082/leader"); err == nil {
				leader = i
			}
		}
		if leader < 0 {
			return failf("no replica leads DHCP")
		}
		if err := d.follow(inLog(fmt.Sprintf(`\[r%d\] .*state=installing`, leader+1))); err != nil {
			return err
		}
		killedAt = d.log.len()
		d.mayu[leader].Process.Kill()
		d.mayu[leader].Wait()
		d.ctlNS = d.hosts[(leader+1)%3]
		step("   kill -9 of the leader r%d while the machine installs: the first stage carries on at another replica", leader+1)
		if err := d.follow(onConsole(`mayu-install\[`+id+`\]: retry 1:`, 60*time.Second)); err != nil {
			return err
		}
	}
	if err := d.follow(onConsole(`mayu-install\[`+id+`\]: announcing installed`, 300*time.Second), inLog("state=installed")); err != nil {
		return err
	}
	if d.replicas == 3 {
		note("meanwhile another replica took over DHCP, after the election's session TTL (3 s):")
		line := ""
		for range 150 {
			if l := d.log.firstAfter(killedAt, "answering DHCP"); l != "" {
				line = l
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if line == "" {
			return failf("no replica took over DHCP")
		}
		show(plain(line))
	}
	if err := d.ctl("list"); err != nil {
		return err
	}
	if d.replicas == 3 {
		step("mayuctl replicas (a dead replica's announcement expires after 10 s)")
		dead := fmt.Sprintf("r%d ", leader+1)
		for range 75 {
			out, err := d.ctlOutput("replicas")
			if err == nil && !hasLinePrefix(out, dead) {
				break
			}
			time.Sleep(200 * time.Millisecond)
		}
		if err := d.ctl("replicas"); err != nil {
			return err
		}
	}
	step("done: stopping the VM and mayu, removing the namespaces and %s", d.work)
	return nil
}

func hasLinePrefix(text, prefix string) bool {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

// ctl runs mayuctl against the replica on d.ctlNS and prints its output.
func (d *demoRun) ctl(args ...string) error {
	out, err := d.ctlOutput(args...)
	show(out)
	if err != nil {
		return failf("mayuctl %s: %v", strings.Join(args, " "), err)
	}
	return nil
}

func (d *demoRun) ctlOutput(args ...string) (string, error) {
	return d.seg.Run(30*time.Second, d.ctlNS, "env", append([]string{"MAYU_SERVER=http://127.0.0.1:4080",
		"MAYU_TOKEN_FILE=" + d.token, filepath.Join(d.bin, "mayuctl")}, args...)...)
}

// etcdctl runs etcdctl on the first replica's host and prints its output.
func (d *demoRun) etcdctl(args ...string) error {
	out, err := d.seg.Run(30*time.Second, d.hosts[0], filepath.Join(d.bin, "etcdctl"), append([]string{"--endpoints", d.endpoints}, args...)...)
	show(out)
	if err != nil {
		return failf("etcdctl %s: %v", strings.Join(args, " "), err)
	}
	return nil
}

// console waits for the next console line matching re and prints it.
func (d *demoRun) console(re string, within time.Duration) error {
	l, err := d.vm.Expect(within, re)
	if err != nil {
		return err
	}
	show(filtered(l.String()))
	return nil
}

// mayulog waits for the next line of mayu's log matching re, after the
// one the previous wait matched (the flow is read in order), and prints
// it without its time, level, MAC and remote address.
func (d *demoRun) mayulog(re string, within time.Duration) error {
	rx, err := regexp.Compile(re)
	if err != nil {
		return err
	}
	deadline := time.Now().Add(within)
	for {
		if l, ok := d.log.next(rx); ok {
			show(filtered(l))
			return nil
		}
		if time.Now().After(deadline) {
			return failf("nothing matched /%s/ in mayu.log within %s", re, within)
		}
		if d.vmDone != nil {
			select {
			case <-d.vmDone:
				return failf("the VM stopped")
			default:
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

var (
	timeLevel = regexp.MustCompile(`time=[^ ]+ level=[A-Z]+ `)
	plainer   = regexp.MustCompile(` (mac|remote)=[^ ]+`)
)

// plain is a log line without its time and level.
func plain(l string) string { return timeLevel.ReplaceAllString(l, "") }

// filtered is a line of the flow as the demo prints it: without time,
// level, MAC and remote address.
func filtered(l string) string { return plainer.ReplaceAllString(plain(l), "") }

// tagLog is mayu's log: every replica's lines, each tagged with its
// replica, in the order they came, also written to a file.
type tagLog struct {
	mu     sync.Mutex
	file   io.Writer
	lines  []string
	cursor int // next searches from here
}

func newTagLog(file io.Writer) *tagLog { return &tagLog{file: file} }

// writer is one replica's output: tag goes before each of its lines.
func (t *tagLog) writer(tag string) io.Writer {
	return &tagWriter{log: t, tag: tag}
}

type tagWriter struct {
	log     *tagLog
	tag     string
	partial []byte
}

func (w *tagWriter) Write(p []byte) (int, error) {
	w.partial = append(w.partial, p...)
	for {
		i := strings.IndexByte(string(w.partial), '\n')
		if i < 0 {
			break
		}
		w.log.add(w.tag + string(w.partial[:i]))
		w.partial = w.partial[i+1:]
	}
	return len(p), nil
}

func (t *tagLog) add(l string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, l)
	fmt.Fprintln(t.file, l)
}

func (t *tagLog) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.lines)
}

// next finds the next line matching re after the cursor and moves the
// cursor past it.
func (t *tagLog) next(re *regexp.Regexp) (string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := t.cursor; i < len(t.lines); i++ {
		if re.MatchString(t.lines[i]) {
			t.cursor = i + 1
			return t.lines[i], true
		}
	}
	return "", false
}

func (t *tagLog) matching(s string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []string
	for _, l := range t.lines {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

func (t *tagLog) count(s string) int { return len(t.matching(s)) }

// firstAfter is the first line after the first n that contains s.
func (t *tagLog) firstAfter(n int, s string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, l := range t.lines[min(n, len(t.lines)):] {
		if strings.Contains(l, s) {
			return l
		}
	}
	return ""
}

func (t *tagLog) tail(n int) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.Join(t.lines[max(0, len(t.lines)-n):], "\n")
}

// relTo is path relative to top when it lies below it.
func relTo(top, path string) string {
	if r, err := filepath.Rel(top, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}
