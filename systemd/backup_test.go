package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mayu-boot/mayu/internal/etcdtest"
)

// The backup units of contrib/systemd: systemd accepts them, and the
// command the service runs, as systemd hands it to sh, writes a snapshot
// of a real etcd that etcdutl reads, one file per run.
func TestBackupUnits(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed (package systemd)")
	}
	service, err := os.ReadFile("../contrib/systemd/mayu-backup.service")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, name := range []string{"mayu-backup.service", "mayu-backup.timer"} {
		b, err := os.ReadFile(filepath.Join("../contrib/systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(analyze, "verify", filepath.Join(dir, "mayu-backup.service"), filepath.Join(dir, "mayu-backup.timer")).CombinedOutput(); err != nil || len(out) != 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	// ExecStart, unescaped as systemd does: "$$" → "$", "%%" → "%". Any
	// other "$" or "%" would be systemd's to expand, never the shell's.
	m := regexp.MustCompile(`(?m)^ExecStart=/bin/sh -c '(.*)'$`).FindSubmatch(service)
	if m == nil {
		t.Fatal("no ExecStart=/bin/sh -c '…' in mayu-backup.service")
	}
	script := string(m[1])
	if rest := strings.NewReplacer("$$", "", "%%", "").Replace(script); strings.ContainsAny(rest, "$%") {
		t.Errorf("ExecStart has a $ or %% that systemd would expand: %s", script)
	}
	script = strings.NewReplacer("$$", "$", "%%", "%").Replace(script)
	backups := filepath.Join(t.TempDir(), "backups")
	script = strings.ReplaceAll(script, "/var/backups/mayu", backups)

	client := etcdtest.Start(t)
	if _, err := client.Put(t.Context(), "/mayu/machines/m1", `{"state":"installed"}`); err != nil {
		t.Fatal(err)
	}
	etcdctl := etcdtest.Binary(t, "etcdctl")
	run := func() {
		t.Helper()
		cmd := exec.Command("/bin/sh", "-c", script)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(etcdctl)+":/usr/bin:/bin", "ETCDCTL_ENDPOINTS="+client.Endpoints()[0])
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("the backup command: %v\n%s", err, out)
		}
	}
	run()
	snaps, _ := filepath.Glob(filepath.Join(backups, "mayu-*.db"))
	if len(snaps) != 1 || !regexp.MustCompile(`/mayu-\d{8}T\d{4}\.db$`).MatchString(snaps[0]) {
		t.Fatalf("snapshots after one run: %v", snaps)
	}
	// The second run of the same minute replaces the first; the check
	// docs/operations.md gives reads each file.
	run()
	out, err := exec.Command(etcdtest.Binary(t, "etcdutl"), "snapshot", "status", snaps[0], "-w", "json").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"totalKey"`) {
		t.Errorf("etcdutl snapshot status %s: %v\n%s", snaps[0], err, out)
	}
}
