// Package ignitiontest checks Ignition configs with Debian's
// ignition-validate (package ignition, 2.14): a second opinion, from
// another build of Ignition than the library mayu links, on what mayu
// serves. Tests only; mayu never runs it.
package ignitiontest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Binary is where Debian installs ignition-validate.
const Binary = "ignition-validate"

// Validate fails t unless ignition-validate accepts config without an
// error or an unused key; it skips t when the binary is not installed
// (make deps installs it).
func Validate(t testing.TB, config []byte) {
	t.Helper()
	if out, ok := Run(t, config); !ok || strings.Contains(out, "Unused key") {
		t.Fatalf("ignition-validate refuses what mayu accepted:\n%s\nconfig:\n%s", out, config)
	}
}

// Run runs ignition-validate on config and returns what it printed and
// whether it accepted it (exit status 0).
func Run(t testing.TB, config []byte) (string, bool) {
	t.Helper()
	bin, err := exec.LookPath(Binary)
	if err != nil {
		t.Skip("ignition-validate is not installed (Debian package ignition; make deps installs it)")
	}
	path := filepath.Join(t.TempDir(), "config.ign")
	if err := os.WriteFile(path, config, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, path).CombinedOutput()
	if _, exit := err.(*exec.ExitError); err != nil && !exit {
		t.Fatal(err)
	}
	return string(out), err == nil
}
