package vmlab

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

var (
	//go:embed rootfs/customize-root.sh
	customizeRoot []byte
	//go:embed rootfs/mayu-os-console.service
	osConsoleUnit []byte
)

// The test OS's root file system: a small systemd root from Debian
// packages, in which the units the real Ignition enables (through a
// systemd preset) run as they do on Flatcar. Ignition itself runs from
// the OS initramfs, before the switch to this root (osInitramfs).
const (
	rootSuite = "bookworm"
	rootLabel = "MAYU-ROOT"
	// rootRevision changes the cache key when the way the root is built
	// changes in a way the package list and the hook script do not show.
	rootRevision = "1"
)

// rootPackages are installed on top of mmdebstrap's minbase (which brings
// passwd, for the user core and Ignition's usermod): systemd as init,
// udev for the devices, iproute2 and ping to look at the network, curl
// for the boot-complete unit of the final config.
var rootPackages = []string{"systemd", "systemd-sysv", "udev", "dbus", "iproute2", "iputils-ping", "curl"}

// rootKey names the cached root image: everything its content follows from.
func rootKey() string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%s\n%s\n", rootRevision, rootSuite, strings.Join(rootPackages, ","))
	h.Write(customizeRoot)
	h.Write(osConsoleUnit)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// OSRoot returns the ext4 image of the test OS's root file system,
// labelled MAYU-ROOT, building it when the cache has none for rootKey:
// mmdebstrap (~2 min, as root) into a directory, customized and trimmed
// by rootfs/customize-root.sh, then `mkfs.ext4 -d`, so nothing is mounted
// and no loop device is used. The packages come from this machine's apt
// sources.
func OSRoot(ctx context.Context, cache string, logf func(string, ...any)) (string, error) {
	img := filepath.Join(cache, "osroot-"+rootKey()+".ext4")
	if _, err := os.Stat(img); err == nil {
		return img, nil
	}
	logf("building the test OS root with mmdebstrap (%s: %s); cached as %s", rootSuite, strings.Join(rootPackages, " "), filepath.Base(img))
	tmp, err := os.MkdirTemp(cache, "osroot-build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	hook := filepath.Join(tmp, "customize-root.sh")
	unit := filepath.Join(tmp, "mayu-os-console.service")
	if err := os.WriteFile(hook, customizeRoot, 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(unit, osConsoleUnit, 0o644); err != nil {
		return "", err
	}
	root := filepath.Join(tmp, "root")
	args := []string{"--variant=minbase", "--include=" + strings.Join(rootPackages, ","),
		"--dpkgopt=path-exclude=/usr/share/man/*", "--dpkgopt=path-exclude=/usr/share/doc/*",
		"--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-exclude=/usr/share/info/*",
		// merged /usr without the package usrmerge, which would bring perl
		"--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
		"--customize-hook=sh " + hook + ` "$1" ` + unit,
		rootSuite, root}
	args = append(args, aptSources()...)
	if err := run(ctx, "", "mmdebstrap", args...); err != nil {
		return "", err
	}
	// "uninitialized": systemd treats the boot as the first one and
	// applies the presets, among them Ignition's 20-ignition.preset, which
	// is how the units Ignition enables start on Flatcar (machine-id(5),
	// "First Boot Semantics"). Written here: mmdebstrap empties the file
	// after its customize hooks ran.
	if err := os.WriteFile(filepath.Join(root, "etc", "machine-id"), []byte("uninitialized\n"), 0o444); err != nil {
		return "", err
	}
	// The file system: what the root holds, a tenth more and 24 MiB
	// (ext4's own metadata, what Ignition and the first boot write), a
	// small journal. Every byte of it is written to each VM's disk.
	used, err := treeSize(root)
	if err != nil {
		return "", err
	}
	mib := (used*11/10)>>20 + 24
	part := filepath.Join(tmp, "root.ext4")
	if err := run(ctx, "", "mkfs.ext4", "-q", "-L", rootLabel, "-d", root, "-m", "0", "-J", "size=4",
		"-E", "lazy_itable_init=0,lazy_journal_init=0", part, strconv.FormatInt(mib, 10)+"M"); err != nil {
		return "", err
	}
	if err := os.Rename(part, img); err != nil {
		return "", err
	}
	// The roots of earlier keys: ~140 MiB each, never used again.
	old, _ := filepath.Glob(filepath.Join(cache, "osroot-*.ext4"))
	for _, o := range old {
		if o != img {
			os.Remove(o)
		}
	}
	return img, nil
}

// aptSources are this machine's apt source files, which mmdebstrap takes
// as its mirrors; none: mmdebstrap's default, deb.debian.org.
func aptSources() []string {
	var srcs []string
	if st, err := os.Stat("/etc/apt/sources.list"); err == nil && st.Size() > 0 {
		srcs = append(srcs, "/etc/apt/sources.list")
	}
	for _, pat := range []string{"/etc/apt/sources.list.d/*.list", "/etc/apt/sources.list.d/*.sources"} {
		m, _ := filepath.Glob(pat)
		srcs = append(srcs, m...)
	}
	return srcs
}

// treeSize is the bytes of the regular files under dir, each rounded up to
// a 1 KiB block (mkfs.ext4's block size for a file system this small),
// plus a block per entry.
func treeSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		n += 1024
		if d.Type().IsRegular() {
			info, err := d.Info()
			if err != nil {
				return err
			}
			n += (info.Size() + 1023) &^ 1023
		}
		return nil
	})
	return n, err
}
