package vmlab

import (
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// OpenRootFS finds partition 2 by the MBR and reads files, their mode
// and owner, and symbolic links with debugfs; a missing file is an error,
// not empty content (debugfs itself exits 0 then).
func TestOpenRootFSReadsFiles(t *testing.T) {
	for _, tool := range []string{"mkfs.ext4", "debugfs", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s (package e2fsprogs)", tool)
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file another owner")
	}
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	os.MkdirAll(filepath.Join(tree, "etc", "mayu"), 0o755)
	if err := os.WriteFile(filepath.Join(tree, "etc", "hostname"), []byte("h1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(tree, "etc", "mayu", "boot-complete")
	if err := os.WriteFile(secret, []byte("http://x/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(secret, 500, 501); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc/hostname", filepath.Join(tree, "etc", "link")); err != nil {
		t.Fatal(err)
	}
	ext4 := filepath.Join(dir, "root.ext4")
	if out, err := exec.Command("mkfs.ext4", "-q", "-d", tree, ext4, "4M").CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v\n%s", err, out)
	}
	fsys, err := os.ReadFile(ext4)
	if err != nil {
		t.Fatal(err)
	}
	mbr := make([]byte, 1<<20)
	e := mbr[446+16:]
	e[4] = 0x83
	binary.LittleEndian.PutUint32(e[8:], 2048)
	binary.LittleEndian.PutUint32(e[12:], uint32(len(fsys)/512))
	mbr[510], mbr[511] = 0x55, 0xaa
	disk := filepath.Join(dir, "disk.raw")
	if err := os.WriteFile(disk, append(mbr, fsys...), 0o644); err != nil {
		t.Fatal(err)
	}

	root, err := OpenRootFS(t.Context(), disk, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f, err := root.File("/etc/hostname")
	if err != nil || string(f.Data) != "h1\n" || f.Mode != 0o644 || f.UID != 0 {
		t.Errorf("/etc/hostname: %+v, %v", f, err)
	}
	f, err = root.File("/etc/mayu/boot-complete")
	if err != nil || string(f.Data) != "http://x/\n" || f.Mode != 0o600 || f.UID != 500 || f.GID != 501 {
		t.Errorf("/etc/mayu/boot-complete: %+v, %v", f, err)
	}
	if target, err := root.Link("/etc/link"); err != nil || target != "/etc/hostname" {
		t.Errorf("/etc/link → %q, %v", target, err)
	}
	if f, err := root.File("/etc/missing"); err == nil {
		t.Errorf("a missing file read as %+v", f)
	}
	if _, err := root.Link("/etc/hostname"); err == nil {
		t.Error("a regular file read as a link")
	}

	// Not the test OS's layout: no partition 2.
	if err := os.WriteFile(disk, make([]byte, 4096), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenRootFS(t.Context(), disk, t.TempDir()); err == nil {
		t.Error("a disk without partition table opened")
	}
}
