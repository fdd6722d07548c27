package vmlab

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The init scripts run under busybox sh in the VM; a syntax error there
// shows only as a VM that hangs, so check them here.
func TestInitScriptsParse(t *testing.T) {
	for name, data := range map[string][]byte{"common.sh": commonSh, "installer-init": installerInit, "os-init": osInit, "udhcpc.script": udhcpcScript,
		"customize-root.sh": customizeRoot, "shadow shim": shadowShim, "setfiles": setfilesNoop} {
		f := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(f, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := exec.Command("sh", "-n", f).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", name, err, out)
		}
	}
}

// The archive must be one the kernel unpacks: checked with busybox cpio,
// which reads the same newc format.
func TestInitramfsArchive(t *testing.T) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("no busybox to read the archive with")
	}
	r := newInitramfs()
	r.file("init", 0o755, []byte("#!/bin/sh\necho hi\n"))
	r.file("lib/modules/load-order", 0o644, []byte("a.ko\n"))
	r.symlink("bin/sh", "busybox")
	r.charDev("dev/console", 0o600, 5, 1)
	var gz bytes.Buffer
	if err := r.write(&gz); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", busybox+" gunzip | "+busybox+" cpio -tv")
	cmd.Stdin = &gz
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio: %v\n%s", err, out)
	}
	listing := string(out)
	for _, want := range []string{
		"-rwxr-xr-x", " init",
		"drwxr-xr-x", " lib/modules",
		"lrwxrwxrwx", "bin/sh -> busybox",
		"crw-------", "dev/console",
	} {
		if !strings.Contains(listing, want) {
			t.Errorf("listing lacks %q:\n%s", want, listing)
		}
	}
	// Directories come before what they hold.
	if strings.Index(listing, " lib\n") > strings.Index(listing, "lib/modules/load-order") {
		t.Errorf("lib listed after its content:\n%s", listing)
	}
}

// Two markers on one console line (no newline between iPXE's "ok" and
// the kernel's first line) satisfy two waits in turn; a wait never goes
// back before the previous match.
func TestExpectReadsOn(t *testing.T) {
	v := &VM{cfg: VMConfig{Name: "t"}, changed: make(chan struct{}), exited: true}
	for _, s := range []string{"boot/initrd... okmayu-installer: kernel up", "later: kernel again", "end"} {
		v.lines = append(v.lines, Line{Text: s})
	}
	for _, c := range []struct{ pattern, line string }{
		{"boot/initrd", "boot/initrd... okmayu-installer: kernel up"},
		{"mayu-installer: kernel", "boot/initrd... okmayu-installer: kernel up"},
		{"kernel", "later: kernel again"},
		{"end", "end"},
	} {
		l, err := v.Expect(time.Second, c.pattern)
		if err != nil || l.Text != c.line {
			t.Fatalf("Expect(%q) = %q, %v; want %q", c.pattern, l.Text, err, c.line)
		}
	}
	if _, err := v.Expect(time.Second, "boot"); err == nil {
		t.Fatal("a wait went back")
	}
}
