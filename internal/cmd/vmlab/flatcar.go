package main

// vmlab demo -flatcar DIR (`make flatcar-demo FLATCAR_DIR=DIR`): the demo
// through the Flatcar example (etc/examples/flatcar) with Flatcar's own
// release files, which the operator fetches (README "Installing Flatcar
// Container Linux"): they cannot be downloaded from the machines this was
// built on, so this mode is not part of `make test`.
//
// It serves DIR from an upstream host on the lab segment (bin/upstream),
// adds the PXE kernel, the PXE initrd and the image to the artifact
// catalogue with `mayuctl artifact add --url --digests --keyring` (each
// replica verifies the signed DIGESTS and the SHA-512 as it streams),
// starts mayu with the example's install and templates sections, and
// boots a VM with 4 GiB of RAM (Flatcar's PXE live system runs from RAM
// and holds the downloaded image) and a 12 GiB disk: iPXE boots the PXE
// kernel with ignition.config.url, the installer's Ignition config runs
// mayu-install.service (flatcar-install), the machine reboots into
// Flatcar, whose Ignition applies the final config, and reports
// boot-complete. Under TCG (vmlab's qemu) that takes long: the waits
// allow an hour for the install.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/mayu-boot/mayu/internal/fixture"
	"github.com/mayu-boot/mayu/internal/vmlab"
)

// A Flatcar release's files the demo needs, as Flatcar publishes them at
// https://stable.release.flatcar-linux.net/amd64-usr/<version>/, each
// with its <file>.DIGESTS.asc, and the artifact each becomes.
var flatcarArtifacts = []struct{ file, artifact, role string }{
	{"flatcar_production_pxe.vmlinuz", "flatcar-pxe-kernel", "kernel"},
	{"flatcar_production_pxe_image.cpio.gz", "flatcar-pxe-initrd", "initrd"},
	{"flatcar_production_image.bin.bz2", "flatcar-image", "image"},
}

// flatcarKeyFile is the name Flatcar publishes its image signing key
// under (https://www.flatcar.org/security/image-signing-key/).
const flatcarKeyFile = "Flatcar_Image_Signing_Key.asc"

// The lab's upstream: a host of its own on the segment.
const (
	upstreamAddr = "10.99.0.9"
	upstreamPort = "8080"
)

// flatcarRelease is a checked release directory.
type flatcarRelease struct {
	dir string // absolute
	key string // the armored signing key
}

// checkFlatcarDir says, before anything starts, what is missing from dir
// and where it comes from; key empty means dir/Flatcar_Image_Signing_Key.asc.
func checkFlatcarDir(dir, key string) (*flatcarRelease, error) {
	if dir == "" {
		return nil, errors.New("no Flatcar release directory: give FLATCAR_DIR=DIR (make flatcar-demo) or -flatcar DIR, a directory holding " + flatcarNeeds())
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("FLATCAR_DIR %s is not a directory; it must hold %s", dir, flatcarNeeds())
	}
	if key == "" {
		key = filepath.Join(abs, flatcarKeyFile)
	}
	var missing []string
	for _, a := range flatcarArtifacts {
		for _, name := range []string{a.file, a.file + ".DIGESTS.asc"} {
			if fi, err := os.Stat(filepath.Join(abs, name)); err != nil || !fi.Mode().IsRegular() || fi.Size() == 0 {
				missing = append(missing, name)
			}
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("FLATCAR_DIR %s lacks %s: fetch them from https://stable.release.flatcar-linux.net/amd64-usr/current/ (README \"Installing Flatcar Container Linux\")",
			dir, strings.Join(missing, ", "))
	}
	data, err := os.ReadFile(key)
	if err != nil {
		return nil, fmt.Errorf("Flatcar's image signing key: %w (fetch https://www.flatcar.org/security/image-signing-key/%s into FLATCAR_DIR, or give FLATCAR_KEY=FILE)", err, flatcarKeyFile)
	}
	if !bytes.Contains(data, []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----")) {
		return nil, fmt.Errorf("%s holds no armored public key (-----BEGIN PGP PUBLIC KEY BLOCK-----)", key)
	}
	return &flatcarRelease{dir: abs, key: key}, nil
}

func flatcarNeeds() string {
	var names []string
	for _, a := range flatcarArtifacts {
		names = append(names, a.file, a.file+".DIGESTS.asc")
	}
	return strings.Join(names, ", ") + " and " + flatcarKeyFile
}

// startUpstream serves the release directory on the lab segment.
func (d *demoRun) startUpstream() error {
	up := filepath.Join(d.bin, "upstream")
	if _, err := os.Stat(up); err != nil {
		return fmt.Errorf("%s is missing: run make flatcar-demo", up)
	}
	ns, err := d.seg.AddHost("up", upstreamAddr+"/24")
	if err != nil {
		return err
	}
	step("the Flatcar release's upstream: %s serves %s on http://%s:%s (bin/upstream)", ns, d.flatcar.dir, upstreamAddr, upstreamPort)
	_, _, err = d.seg.Start(ns, up, "-dir", d.flatcar.dir, "-listen", upstreamAddr+":"+upstreamPort)
	return err
}

// flatcarConfig turns the replica's lab config into the Flatcar
// example's: its install and templates sections, with the VM's disk, a
// serial console and an install timeout TCG can keep, and both templates
// in the files directory.
func (d *demoRun) flatcarConfig(dir, path string) error {
	tmpl := filepath.Join(fixture.FilesDir(dir), "templates")
	for _, src := range []string{filepath.Join(d.top, "etc", "templates"), filepath.Join(d.top, "etc", "examples", "flatcar", "templates")} {
		entries, err := os.ReadDir(src)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if e.Type().IsRegular() {
				data, err := fs.ReadFile(os.DirFS(src), e.Name())
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(tmpl, e.Name()), data, 0o644); err != nil {
					return err
				}
			}
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	install := fmt.Sprintf("  install: {kernel: %q, initrd: %q, image: %q, disk: /dev/vda, kernel_args: %q, timeout: 2h}",
		"artifact:"+flatcarArtifacts[0].artifact, "artifact:"+flatcarArtifacts[1].artifact, "artifact:"+flatcarArtifacts[2].artifact,
		"flatcar.first_boot=1 flatcar.autologin console=ttyS0,115200n8")
	templates := "  templates: {first_stage: templates/installer.ign.yaml, first_stage_format: ignition, " +
		"final_config: templates/final-config.ign.yaml, final_config_format: ignition}"
	var out []string
	replaced := 0
	for _, l := range strings.Split(string(data), "\n") {
		switch {
		case strings.HasPrefix(l, "  install: "):
			l = install
			replaced++
		case strings.HasPrefix(l, "  templates: "):
			l = templates
			replaced++
		}
		out = append(out, l)
	}
	if replaced != 2 {
		return fmt.Errorf("%s: the lab config has no one-line install and templates sections to replace (internal/fixture changed?)", path)
	}
	return os.WriteFile(path, []byte(strings.Join(out, "\n")), 0o644)
}

// addFlatcarArtifacts adds the release's files as an operator would, from
// the upstream with their signed digests, and waits until every replica
// holds them.
func (d *demoRun) addFlatcarArtifacts() error {
	base := "http://" + upstreamAddr + ":" + upstreamPort + "/"
	for _, a := range flatcarArtifacts {
		step("mayuctl artifact add %s --url %s%s --digests …/%s.DIGESTS.asc --keyring %s", a.artifact, base, a.file, a.file, filepath.Base(d.flatcar.key))
		note("(one replica downloads it, checking the DIGESTS' signature and the SHA-512 as it streams; the others copy it)")
		if err := d.ctl("artifact", "add", a.artifact, "--url", base+a.file, "--digests", base+a.file+".DIGESTS.asc", "--keyring", d.flatcar.key); err != nil {
			return err
		}
	}
	deadline := time.Now().Add(30 * time.Minute)
	for _, a := range flatcarArtifacts {
		for {
			out, err := d.ctlOutput("artifact", "show", a.artifact, "-o", "json")
			if err == nil && strings.Count(out, `"peerUrl"`) == d.replicas {
				break
			}
			if err == nil && strings.Contains(out, `"status": "failed"`) || strings.Contains(out, `"status":"failed"`) {
				show(out)
				return failf("artifact %s failed", a.artifact)
			}
			if time.Now().After(deadline) {
				show(out)
				return failf("not every replica holds %s after 30 minutes", a.artifact)
			}
			time.Sleep(time.Second)
		}
	}
	return d.ctl("artifact", "list")
}

// flatcarFlow boots the VM through Flatcar's PXE live system and follows
// the install to Flatcar's first boot from disk.
func (d *demoRun) flatcarFlow() error {
	firmware := map[vmlab.Firmware]string{vmlab.BIOS: "SeaBIOS", vmlab.UEFI: "OVMF"}[d.fw]
	step("booting the VM: %s firmware (%s), 4 GiB RAM, 12 GiB disk, SMBIOS serial %s, MAC %s (qemu -accel tcg: slow)", d.fw, firmware, demoSerial, demoMAC)
	vmDir := filepath.Join(d.work, "vm")
	vm, err := vmlab.StartVM(vmlab.VMConfig{Name: "mayu-flatcar", Netns: d.seg.Switch, Tap: "tap0", MAC: demoMAC, Serial: demoSerial,
		Firmware: d.fw, Disk: filepath.Join(vmDir, "disk.raw"), DiskMiB: 12 << 10, MemoryMiB: 4 << 10, Dir: vmDir, FailOn: demoFailure})
	if err != nil {
		return err
	}
	d.vm, d.vmDone = vm, make(chan struct{})
	go func() { vm.Wait(context.Background()); close(d.vmDone) }()
	d.clean.Add(vm.Stop)
	note("console: %s (times are seconds since qemu started)", vm.LogPath())

	mac := regexp.QuoteMeta(demoMAC)
	id := regexp.QuoteMeta(demoMachine)
	step("1-4. iPXE asks DHCP, fetches mayu's chain script; mayu registers the machine and answers Flatcar's PXE kernel with ignition.config.url")
	if err := d.follow(inLog("dhcp: ack.*"+mac+".*ipxe script"), onConsole("mayu: identifying"), inLog("machine registered"),
		onConsole("mayu: installing machine")); err != nil {
		return err
	}
	step("   iPXE loads the PXE kernel and the ~400 MB initrd (minutes under TCG); Ignition in the initramfs fetches the installer config (state: installing)")
	if err := d.follow(inLog("state=installing", 45*time.Minute)); err != nil {
		return err
	}
	step("5. the live system's mayu-install.service: image with its digest checked, final config, flatcar-install, installed, reboot")
	if err := d.follow(onConsole(`mayu-install\[`+id+`\]: downloading the OS image`, 30*time.Minute),
		onConsole(`mayu-install\[`+id+`\]: the image has sha256`, 30*time.Minute),
		onConsole(`mayu-install\[`+id+`\]: running flatcar-install`, 5*time.Minute),
		onConsole(`mayu-install\[`+id+`\]: announcing installed`, 60*time.Minute), inLog("state=installed")); err != nil {
		return err
	}
	step("6-7. the reboot: the leader ignores the installed machine, the firmware boots the disk; Flatcar's Ignition applies the final config and its unit reports boot-complete (state: running)")
	if err := d.follow(inLog("dhcp: ignored.*reason=installed", 10*time.Minute), inLog("state=running", 60*time.Minute)); err != nil {
		return err
	}
	out, err := d.ctlOutput("status", demoMachine, "-o", "json")
	if err != nil {
		return failf("mayuctl status: %v", err)
	}
	var rec struct {
		InternalAddr string `json:"internalAddr"`
	}
	if json.Unmarshal([]byte(out), &rec) == nil && rec.InternalAddr != "" {
		if out, err := d.seg.Run(10*time.Second, d.hosts[0], "busybox", "ping", "-c", "1", "-W", "2", rec.InternalAddr); err == nil {
			for _, l := range strings.Split(out, "\n") {
				if strings.Contains(l, "bytes from") {
					show(l)
				}
			}
		} else {
			return failf("Flatcar's static address %s does not answer ping", rec.InternalAddr)
		}
	}
	step("mayuctl status %s", demoMachine)
	if err := d.ctl("status", demoMachine); err != nil {
		return err
	}
	step("done: stopping the VM and mayu, removing the namespaces and %s", d.work)
	return nil
}
