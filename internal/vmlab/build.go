package vmlab

import (
	"context"
	"debug/elf"
	_ "embed"
	"encoding/binary"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

var (
	//go:embed rootfs/common.sh
	commonSh []byte
	//go:embed rootfs/installer-init
	installerInit []byte
	//go:embed rootfs/os-init
	osInit []byte
	//go:embed rootfs/udhcpc.script
	udhcpcScript []byte
)

// The files a build produces, laid out as mayu's files directory expects
// them (cluster.install.kernel, .initrd and .image in etc/mayu.yaml).
const (
	KernelFile = "installer/vmlinuz"
	InitrdFile = "installer/initrd.img"
	ImageFile  = "images/os.img"
)

// KernelArgs are the installer kernel arguments mayu's iPXE script must
// pass (cluster.install.kernel_args): the console on the serial port the
// tests read; quiet keeps the kernel's own messages (and the time TCG
// spends printing them) to errors.
const KernelArgs = "console=ttyS0 quiet"

// Build is one build's result.
type Build struct {
	Dir    string // the files directory: KernelFile, InitrdFile, ImageFile
	Kernel *Kernel
	// How long each part took: getting the kernel and busybox from
	// Debian packages (cached after the first time), building the
	// installer's initramfs, building the OS image.
	KernelTime, InstallerTime, ImageTime time.Duration
}

// Path is a file of the build.
func (b *Build) Path(name string) string { return filepath.Join(b.Dir, name) }

// BuildAll builds the installer (kernel + initramfs) and the OS image into
// dir, with the kernel cached under cache.
func BuildAll(ctx context.Context, cache, dir string, logf func(string, ...any)) (*Build, error) {
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	b := &Build{Dir: dir}
	t0 := time.Now()
	k, err := FetchKernel(ctx, cache, logf)
	if err != nil {
		return nil, fmt.Errorf("kernel: %w", err)
	}
	b.Kernel = k
	busybox, err := staticBusybox(ctx, cache)
	if err != nil {
		return nil, fmt.Errorf("busybox: %w", err)
	}
	b.KernelTime = time.Since(t0)

	t0 = time.Now()
	if err := os.MkdirAll(filepath.Join(dir, "installer"), 0o755); err != nil {
		return nil, err
	}
	if err := copyFile(k.Vmlinuz, b.Path(KernelFile)); err != nil {
		return nil, err
	}
	if err := BuildInstaller(busybox, k, b.Path(InitrdFile)); err != nil {
		return nil, fmt.Errorf("installer: %w", err)
	}
	b.InstallerTime = time.Since(t0)

	t0 = time.Now()
	if err := os.MkdirAll(filepath.Join(dir, "images"), 0o755); err != nil {
		return nil, err
	}
	if err := BuildOSImage(ctx, busybox, k, cache, b.Path(ImageFile), logf); err != nil {
		return nil, fmt.Errorf("OS image: %w", err)
	}
	b.ImageTime = time.Since(t0)
	return b, nil
}

// baseInitramfs is what both the installer and the OS boot into: static
// busybox with its applets as symlinks (made here, so nothing runs
// `busybox --install` at boot), the modules, and the shared init code.
func baseInitramfs(busybox string, k *Kernel) (*initramfs, error) {
	r := newInitramfs()
	for _, d := range []string{"proc", "sys", "dev", "tmp", "run", "mnt", "etc", "sbin", "usr/bin", "usr/sbin"} {
		r.dir(d)
	}
	if err := r.copyFile("bin/busybox", 0o755, busybox); err != nil {
		return nil, err
	}
	applets, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return nil, fmt.Errorf("busybox --list: %w", err)
	}
	for _, a := range strings.Fields(string(applets)) {
		if a != "busybox" { // a self-link would replace the binary
			r.symlink("bin/"+a, "busybox")
		}
	}
	// The kernel opens /dev/console for init before devtmpfs is mounted.
	r.charDev("dev/console", 0o600, 5, 1)
	r.charDev("dev/null", 0o666, 1, 3)
	for _, m := range k.Modules {
		if err := r.copyFile("lib/modules/"+m, 0o644, k.ModulePath(m)); err != nil {
			return nil, err
		}
	}
	r.file("lib/modules/load-order", 0o644, []byte(strings.Join(k.Modules, "\n")+"\n"))
	r.file("lib/common.sh", 0o644, commonSh)
	return r, nil
}

// staticBusybox returns a statically linked busybox: the initramfs has no
// C library, so a binary that names an ELF interpreter would not start.
// The machine's own busybox is used when it is static (package
// busybox-static); otherwise busybox-static is downloaded and unpacked
// into the cache, never installed: it conflicts with package busybox,
// which the DHCP tests use, and each would remove the other.
func staticBusybox(ctx context.Context, cache string) (string, error) {
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox"} {
		if isStatic(p) {
			return p, nil
		}
	}
	cached := filepath.Join(cache, "busybox")
	if isStatic(cached) {
		return cached, nil
	}
	tmp, err := os.MkdirTemp(cache, "busybox-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	deb, err := aptDownload(ctx, tmp, "busybox-static")
	if err != nil {
		return "", err
	}
	if err := run(ctx, "", "dpkg-deb", "-x", deb, filepath.Join(tmp, "root")); err != nil {
		return "", err
	}
	if err := copyFile(filepath.Join(tmp, "root", "bin", "busybox"), cached); err != nil {
		return "", err
	}
	if err := os.Chmod(cached, 0o755); err != nil {
		return "", err
	}
	if !isStatic(cached) {
		return "", fmt.Errorf("busybox-static's busybox is not static")
	}
	return cached, nil
}

// isStatic reports whether path is an ELF executable without interpreter.
func isStatic(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// BuildInstaller writes the installer's initramfs: its /init gets an
// address by DHCP and runs the first-stage script mayu rendered.
func BuildInstaller(busybox string, k *Kernel, out string) error {
	r, err := baseInitramfs(busybox, k)
	if err != nil {
		return err
	}
	r.file("init", 0o755, installerInit)
	r.file("etc/udhcpc/default.script", 0o755, udhcpcScript)
	return writeInitramfs(r, out)
}

// IgnitionBinary is the real Ignition, from Debian's package ignition
// (2.14): the binary its dracut module puts in an initramfs.
const IgnitionBinary = "/usr/lib/dracut/modules.d/30ignition/ignition"

// Ignition's stages exec a few tools. For users it runs `usermod --root
// /sysroot core` (useradd, groupadd for new ones): the initramfs has no
// shadow tools, so these run the root's own, chrooted into it. After
// writing, the files stage relabels for SELinux with setfiles, which the
// test OS (SELinux disabled) does not need: a no-op that reads its list.
var (
	shadowShim = []byte(`#!/bin/sh
# Ignition's call of a shadow tool with --root DIR: the root's own tool,
# chrooted there. --root / stays, because usermod refuses a call without
# any option ("no options"), which is what Ignition sends for an existing
# user it only adds SSH keys to.
root=/
if [ "$1" = --root ]; then root=$2; shift 2; fi
exec chroot "$root" "/usr/sbin/${0##*/}" --root / "$@"
`)
	setfilesNoop = []byte(`#!/bin/sh
# The test OS has SELinux disabled: nothing to relabel.
cat >/dev/null
`)
)

// osInitramfs is the OS image's initramfs: its /init runs the real
// Ignition on the final config on the first boot, then switches to the
// root file system's systemd. Ignition is linked against glibc and
// libblkid: the libraries ldd names and the ELF interpreter come along.
func osInitramfs(ctx context.Context, busybox string, k *Kernel, out string) error {
	r, err := baseInitramfs(busybox, k)
	if err != nil {
		return err
	}
	r.file("init", 0o755, osInit)
	if err := r.copyFile("bin/ignition", 0o755, IgnitionBinary); err != nil {
		return fmt.Errorf("%w (package ignition)", err)
	}
	libs, err := sharedLibraries(ctx, IgnitionBinary)
	if err != nil {
		return err
	}
	for _, lib := range libs {
		if err := r.copyFile(strings.TrimPrefix(lib, "/"), 0o755, lib); err != nil {
			return err
		}
	}
	for _, tool := range []string{"usermod", "useradd", "groupadd", "groupmod", "chpasswd"} {
		r.file("sbin/"+tool, 0o755, shadowShim)
	}
	r.file("sbin/setfiles", 0o755, setfilesNoop)
	r.dir("sysroot")
	r.dir("boot")
	return writeInitramfs(r, out)
}

// sharedLibraries are the files ldd says bin loads, the ELF interpreter
// among them, each at the path it is looked up by (symlinks resolved into
// a file there).
func sharedLibraries(ctx context.Context, bin string) ([]string, error) {
	out, err := output(ctx, "ldd", bin)
	if err != nil {
		return nil, err
	}
	var libs []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) >= 3 && f[1] == "=>" && strings.HasPrefix(f[2], "/"):
			libs = append(libs, f[2])
		case len(f) >= 1 && strings.HasPrefix(f[0], "/"): // the interpreter
			libs = append(libs, f[0])
		}
	}
	if len(libs) == 0 {
		return nil, fmt.Errorf("ldd %s names no libraries:\n%s", bin, out)
	}
	return libs, nil
}

func writeInitramfs(r *initramfs, out string) error {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if err := r.write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// The OS image: an MBR disk with two partitions.
//
//  1. at 1 MiB, FAT16, active, labelled MAYU-OS: the boot partition, which
//     boots on both firmwares (BIOS: syslinux's MBR code, SYSLINUX in the
//     partition; UEFI: systemd-boot as the removable-media loader
//     \EFI\BOOT\BOOTX64.EFI) the same kernel and the OS initramfs, and
//     where the installer puts the final config (mayu/final-config);
//  2. at bootMiB, ext4, labelled MAYU-ROOT: the systemd root (OSRoot).
//
// It is built without mounts and without loop devices (mkfs.fat --offset,
// syslinux --offset, mtools, mkfs.ext4 -d), so the build leaves nothing
// behind on the machine (the root's first build, mmdebstrap, needs root).
const (
	bootMiB     = 32   // the end of the boot partition, where the root starts
	partStart   = 2048 // sectors: 1 MiB
	imageLabel  = "MAYU-OS"
	syslinuxMBR = "/usr/lib/syslinux/mbr/mbr.bin"
	sdBootPath  = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
)

// osCmdline is the OS kernel's command line: the console on the serial
// port the tests read, systemd's unit status there while it boots, by
// unit name (a boot that hangs shows on which unit), the kernel's own
// messages kept to errors (TCG is slow to print them).
const osCmdline = "console=ttyS0 quiet systemd.show_status=1 systemd.status_unit_format=name"

// BuildOSImage writes the OS disk image to out, with its root file system
// from the cache (built there the first time).
func BuildOSImage(ctx context.Context, busybox string, k *Kernel, cache, out string, logf func(string, ...any)) error {
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".osimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	rootImg, err := OSRoot(ctx, cache, logf)
	if err != nil {
		return fmt.Errorf("root file system: %w", err)
	}
	initrd := filepath.Join(tmp, "initrd.img")
	if err := osInitramfs(ctx, busybox, k, initrd); err != nil {
		return err
	}
	sdboot, err := systemdBoot(ctx, cache)
	if err != nil {
		return err
	}

	sectors := bootMiB*2048 - partStart
	root, err := os.Open(rootImg)
	if err != nil {
		return err
	}
	defer root.Close()
	st, err := root.Stat()
	if err != nil {
		return err
	}
	rootSectors := (st.Size() + 511) / 512
	img := filepath.Join(tmp, "os.img")
	f, err := os.Create(img)
	if err != nil {
		return err
	}
	mbr, err := os.ReadFile(syslinuxMBR)
	if err != nil {
		f.Close()
		return fmt.Errorf("%w (package syslinux-common)", err)
	}
	// Boot code (440 bytes), two partition entries (active FAT16 LBA
	// 0x0e; Linux 0x83), start and length in sectors; CHS fields unused.
	sector := make([]byte, 512)
	copy(sector, mbr[:min(len(mbr), 440)])
	for i, p := range []struct {
		active     bool
		typ        byte
		start, len uint32
	}{{true, 0x0e, partStart, uint32(sectors)}, {false, 0x83, bootMiB * 2048, uint32(rootSectors)}} {
		entry := sector[446+16*i : 446+16*(i+1)]
		if p.active {
			entry[0] = 0x80
		}
		copy(entry[1:4], []byte{0xfe, 0xff, 0xff})
		entry[4] = p.typ
		copy(entry[5:8], []byte{0xfe, 0xff, 0xff})
		binary.LittleEndian.PutUint32(entry[8:], p.start)
		binary.LittleEndian.PutUint32(entry[12:], p.len)
	}
	sector[510], sector[511] = 0x55, 0xaa
	_, err = f.Write(sector)
	if err == nil {
		_, err = f.Seek(bootMiB<<20, io.SeekStart)
	}
	if err == nil {
		_, err = io.Copy(f, root)
	}
	if err == nil {
		err = f.Truncate(bootMiB<<20 + rootSectors*512)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	offset := strconv.Itoa(partStart * 512)
	if err := run(ctx, "", "mkfs.fat", "-F", "16", "-n", imageLabel, "--offset", strconv.Itoa(partStart), img, strconv.Itoa(sectors/2)); err != nil {
		return err
	}
	if err := run(ctx, "", "syslinux", "--install", "--offset", offset, img); err != nil {
		return err
	}
	files := map[string][]byte{
		"syslinux.cfg": []byte("SERIAL 0 115200\nPROMPT 0\nTIMEOUT 0\nDEFAULT mayu-os\nLABEL mayu-os\n" +
			"  KERNEL vmlinuz\n  INITRD initrd.img\n  APPEND " + osCmdline + "\n"),
		"loader.conf":  []byte("timeout 0\ndefault mayu-os.conf\n"),
		"mayu-os.conf": []byte("title mayu test OS\nlinux /vmlinuz\ninitrd /initrd.img\noptions " + osCmdline + "\n"),
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(tmp, name), data, 0o644); err != nil {
			return err
		}
	}
	part := img + "@@" + offset
	if err := run(ctx, "", "mmd", "-i", part, "::/EFI", "::/EFI/BOOT", "::/loader", "::/loader/entries"); err != nil {
		return err
	}
	for src, dst := range map[string]string{
		k.Vmlinuz:                          "::/vmlinuz",
		initrd:                             "::/initrd.img",
		filepath.Join(tmp, "syslinux.cfg"): "::/syslinux.cfg",
		sdboot:                             "::/EFI/BOOT/BOOTX64.EFI",
		filepath.Join(tmp, "loader.conf"):  "::/loader/loader.conf",
		filepath.Join(tmp, "mayu-os.conf"): "::/loader/entries/mayu-os.conf",
	} {
		if err := run(ctx, "", "mcopy", "-i", part, src, dst); err != nil {
			return err
		}
	}
	return os.Rename(img, out)
}

// systemdBoot returns systemd-boot's EFI binary. Installing the package
// systemd-boot-efi on Debian 12 also upgrades systemd itself to the same
// point release, which a test has no business doing: the package is
// downloaded and unpacked into the cache instead, unless it is installed.
func systemdBoot(ctx context.Context, cache string) (string, error) {
	if _, err := os.Stat(sdBootPath); err == nil {
		return sdBootPath, nil
	}
	cached := filepath.Join(cache, "systemd-bootx64.efi")
	if _, err := os.Stat(cached); err == nil {
		return cached, nil
	}
	tmp, err := os.MkdirTemp(cache, "sdboot-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	deb, err := aptDownload(ctx, tmp, "systemd-boot-efi")
	if err != nil {
		return "", err
	}
	if err := run(ctx, "", "dpkg-deb", "-x", deb, filepath.Join(tmp, "root")); err != nil {
		return "", err
	}
	if err := copyFile(filepath.Join(tmp, "root", sdBootPath), cached); err != nil {
		return "", err
	}
	return cached, nil
}
