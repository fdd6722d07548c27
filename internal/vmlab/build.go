package vmlab

import (
	"context"
	"debug/elf"
	_ "embed"
	"encoding/binary"
	"fmt"
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
	if err := BuildOSImage(ctx, busybox, k, cache, b.Path(ImageFile)); err != nil {
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

// osInitramfs is the OS image's initramfs: its /init reads the final
// config from the disk and reports boot-complete.
func osInitramfs(busybox string, k *Kernel, out string) error {
	r, err := baseInitramfs(busybox, k)
	if err != nil {
		return err
	}
	r.file("init", 0o755, osInit)
	return writeInitramfs(r, out)
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

// The OS image: an MBR disk with one active FAT16 partition at 1 MiB,
// labelled MAYU-OS, that boots on both firmwares:
//   - BIOS: syslinux's MBR code, SYSLINUX in the partition;
//   - UEFI: systemd-boot as the removable-media loader \EFI\BOOT\BOOTX64.EFI.
//
// Both boot the same kernel and the OS initramfs. It is built without root
// and without loop devices (mkfs.fat --offset, syslinux --offset, mtools),
// so the build leaves nothing behind on the machine.
const (
	imageMiB    = 32
	partStart   = 2048 // sectors: 1 MiB
	imageLabel  = "MAYU-OS"
	osCmdline   = "console=ttyS0 quiet"
	syslinuxMBR = "/usr/lib/syslinux/mbr/mbr.bin"
	sdBootPath  = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"
)

// BuildOSImage writes the OS disk image to out.
func BuildOSImage(ctx context.Context, busybox string, k *Kernel, cache, out string) error {
	tmp, err := os.MkdirTemp(filepath.Dir(out), ".osimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	initrd := filepath.Join(tmp, "initrd.img")
	if err := osInitramfs(busybox, k, initrd); err != nil {
		return err
	}
	sdboot, err := systemdBoot(ctx, cache)
	if err != nil {
		return err
	}

	sectors := imageMiB*2048 - partStart
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
	// Boot code (440 bytes), one partition entry: active, type 0x0e
	// (FAT16, LBA), start and length in sectors; CHS fields unused.
	sector := make([]byte, 512)
	copy(sector, mbr[:min(len(mbr), 440)])
	entry := sector[446:462]
	entry[0] = 0x80
	copy(entry[1:4], []byte{0xfe, 0xff, 0xff})
	entry[4] = 0x0e
	copy(entry[5:8], []byte{0xfe, 0xff, 0xff})
	binary.LittleEndian.PutUint32(entry[8:], partStart)
	binary.LittleEndian.PutUint32(entry[12:], uint32(sectors))
	sector[510], sector[511] = 0x55, 0xaa
	_, err = f.Write(sector)
	if err == nil {
		err = f.Truncate(imageMiB << 20)
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
