// Package systemd holds mayu's systemd unit; its test checks the unit
// with systemd's own tools, and the backup units of contrib/systemd too.
package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// maxExposure is what `systemd-analyze security` may score the unit
// (0 is best, 10 worst); the unit scored 3.9 before it ran as its own user
// with a system-call filter, 1.7 after.
const maxExposure = 2.0

func TestUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (package systemd)")
	}
	unit, err := os.ReadFile("mayu.service")
	if err != nil {
		t.Fatal(err)
	}
	// verify wants the binary to exist: any executable stands in.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "mayu.service")
	if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/mayu", self)), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(analyze, "verify", path).CombinedOutput(); err != nil || len(out) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
	out, err := exec.Command(analyze, "security", "--offline=yes", path).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`Overall exposure level for mayu.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no exposure level in:\n%s", out)
	}
	if level, _ := strconv.ParseFloat(string(m[1]), 64); level > maxExposure {
		t.Errorf("exposure level %.1f, want at most %.1f:\n%s", level, maxExposure, out)
	}
	for _, want := range []string{"User=mayu", "Type=notify", "WatchdogSec=", "SystemCallFilter=@system-service",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW", "StateDirectory=mayu"} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lacks %s", want)
		}
	}
}
