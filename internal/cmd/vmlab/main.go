// Command vmlab is the lab tool: it runs the demo, builds the test
// installer and OS image, boots VMs through mayu and prints the mayu
// configuration the tests run (the Go tests use packages internal/vmlab,
// internal/netlab and internal/fixture directly).
//
//	vmlab demo [-replicas 1|3] [-fw bios|uefi]
//	    `make demo`: a VM network-boots through mayu, is installed, reboots
//	    into its OS, then is reinstalled; see demo.go.
//
//	vmlab demo -flatcar DIR [-flatcar-key FILE] [-replicas 1|3] [-fw bios|uefi]
//	    `make flatcar-demo FLATCAR_DIR=DIR`: the same through
//	    etc/examples/flatcar with Flatcar's release files in DIR; see
//	    flatcar.go.
//
//	vmlab build -out DIR [-cache DIR]
//	    builds DIR/installer/vmlinuz, DIR/installer/initrd.img and
//	    DIR/images/os.img (mayu's files layout); the Debian kernel is
//	    cached in -cache (default $MAYU_VMLAB_CACHE, else .work/vmlab).
//
//	vmlab run -netns NS -tap TAP -mac MAC -serial S -disk FILE -dir DIR [-fw bios|uefi] [-firmware-pxe]
//	    boots a VM (network first, disk second) until SIGTERM or SIGINT,
//	    writing its serial console with timestamps to DIR/serial.log and
//	    to stdout with -echo. SIGUSR1 resets the machine (a power cycle).
//	    It stops qemu when it ends.
//
//	vmlab config -dir DIR [-name N] [-interface IF] [-advertise A] [-etcd URL,...] ...
//	    prints the mayu configuration of package internal/fixture for a
//	    replica whose files are under DIR (the benchmark scripts).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mayu-boot/mayu/internal/fixture"
	"github.com/mayu-boot/mayu/internal/vmlab"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "build":
		err = build(os.Args[2:])
	case "run":
		err = runVM(os.Args[2:])
	case "config":
		err = printConfig(os.Args[2:])
	case "demo":
		os.Exit(demo(os.Args[2:]))
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "vmlab:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage: vmlab demo [-replicas 1|3] [-fw bios|uefi] [-flatcar DIR [-flatcar-key FILE]]
       vmlab build -out DIR [-cache DIR]
       vmlab run -netns NS -tap TAP -mac MAC -serial S -disk FILE -dir DIR [-fw bios|uefi] [-firmware-pxe] [-echo]
       vmlab config -dir DIR [flags] (vmlab config -h lists them)`)
	os.Exit(2)
}

func build(args []string) error {
	fs := flag.NewFlagSet("build", flag.ExitOnError)
	out := fs.String("out", "", "output directory (required)")
	cache := fs.String("cache", defaultCache(), "cache for the Debian kernel")
	fs.Parse(args)
	if *out == "" {
		usage()
	}
	if miss := vmlab.MissingForBuild(); len(miss) > 0 {
		return fmt.Errorf("missing: %v (scripts/install-deps.sh installs them)", miss)
	}
	b, err := vmlab.BuildAll(context.Background(), *cache, *out, func(f string, a ...any) { fmt.Printf(f+"\n", a...) })
	if err != nil {
		return err
	}
	return printBuild(os.Stdout, "", b)
}

// printBuild says what BuildAll made, each line after indent.
func printBuild(w io.Writer, indent string, b *vmlab.Build) error {
	for _, f := range []string{vmlab.KernelFile, vmlab.InitrdFile, vmlab.ImageFile} {
		st, err := os.Stat(b.Path(f))
		if err != nil {
			return err
		}
		fmt.Fprintf(w, "%s%-20s %9d bytes\n", indent, f, st.Size())
	}
	fmt.Fprintf(w, "%skernel %s (%s), installer %s, OS image %s\n", indent, b.Kernel.Version,
		b.KernelTime.Round(10*time.Millisecond), b.InstallerTime.Round(10*time.Millisecond), b.ImageTime.Round(10*time.Millisecond))
	return nil
}

func defaultCache() string {
	if c := os.Getenv("MAYU_VMLAB_CACHE"); c != "" {
		return c
	}
	abs, _ := filepath.Abs(".work/vmlab")
	return abs
}

func runVM(args []string) error {
	var cfg vmlab.VMConfig
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	fs.StringVar(&cfg.Name, "name", "mayu-vm", "VM name")
	fs.StringVar(&cfg.Netns, "netns", "", "network namespace holding the tap (required)")
	fs.StringVar(&cfg.Tap, "tap", "", "tap device (required)")
	fs.StringVar(&cfg.MAC, "mac", "52:54:00:12:34:56", "NIC MAC")
	fs.StringVar(&cfg.Serial, "serial", "", "SMBIOS serial (required)")
	fs.StringVar(&cfg.Disk, "disk", "", "disk image, created empty if missing (required)")
	fs.StringVar(&cfg.Dir, "dir", "", "directory for the serial log, NVRAM and QMP socket (required)")
	fw := fs.String("fw", "bios", "firmware: bios (SeaBIOS) or uefi (OVMF)")
	fs.BoolVar(&cfg.FirmwarePXE, "firmware-pxe", false, "no iPXE NIC ROM: UEFI's own PXE fetches ipxe.efi over TFTP")
	echo := fs.Bool("echo", false, "print each serial line to stdout")
	fs.Parse(args)
	if cfg.Netns == "" || cfg.Tap == "" || cfg.Serial == "" || cfg.Disk == "" || cfg.Dir == "" {
		usage()
	}
	cfg.Firmware = vmlab.Firmware(*fw)
	if miss := vmlab.MissingForBoot(cfg.Firmware); len(miss) > 0 {
		return fmt.Errorf("missing: %v (scripts/install-deps.sh installs them)", miss)
	}
	if *echo {
		cfg.Echo = func(l vmlab.Line) { fmt.Println(l) }
	}
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1)
	vm, err := vmlab.StartVM(cfg)
	if err != nil {
		return err
	}
	defer vm.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exited := make(chan error, 1)
	go func() { exited <- vm.Wait(ctx) }()
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGUSR1 {
				if err := vm.Reset(); err != nil {
					fmt.Fprintln(os.Stderr, "vmlab: reset:", err)
				}
				continue
			}
			return nil // deferred Stop ends qemu
		case err := <-exited:
			if err != nil {
				return fmt.Errorf("qemu: %w", err)
			}
			return nil
		}
	}
}

func printConfig(args []string) error {
	var c fixture.Config
	fs := flag.NewFlagSet("config", flag.ExitOnError)
	fs.StringVar(&c.Dir, "dir", "", "the replica's directory: data, files, boot, admin-token (required)")
	fs.StringVar(&c.Name, "name", "r1", "node.name")
	fs.StringVar(&c.Interface, "interface", "", "node.interface (DHCP)")
	fs.StringVar(&c.Advertise, "advertise", "10.99.0.1", "node.advertise_address")
	etcd := fs.String("etcd", "", "etcd endpoints, comma separated; none: the embedded etcd")
	fs.StringVar(&c.ElectionTTL, "election-ttl", "", "node.election_ttl")
	fs.StringVar(&c.Router, "router", "10.99.0.1", "the segment's router, DNS server and static gateway")
	fs.StringVar(&c.LeaseTime, "lease-time", "", "the segment pool's lease time")
	fs.BoolVar(&c.RelayPool, "relay-pool", false, "add the pool 10.98.0.0/16 (perfdhcp's relay network)")
	fs.BoolVar(&c.FleetPool, "fleet-pool", false, "add the pool 10.128.0.0/10 that holds bin/fleetgen's leases")
	fs.BoolVar(&c.Proxy, "proxy", false, "every pool in proxy mode: a site DHCP server hands out the addresses")
	fs.StringVar(&c.KernelArgs, "kernel-args", "", "cluster.install.kernel_args")
	vars := map[string]string{}
	fs.Func("var", "a template variable, KEY=VALUE (repeatable)", func(s string) error {
		k, v, ok := strings.Cut(s, "=")
		if !ok {
			return fmt.Errorf("want KEY=VALUE")
		}
		vars[k] = v
		return nil
	})
	fs.StringVar(&c.Extra, "extra", "", "more YAML appended as is (cluster keys indented by two spaces)")
	fs.Parse(args)
	if c.Dir == "" || fs.NArg() > 0 {
		usage()
	}
	if *etcd != "" {
		c.Etcd = strings.Split(*etcd, ",")
	}
	if len(vars) > 0 {
		c.TemplateVars = vars
	}
	_, err := fmt.Print(c.Render())
	return err
}
