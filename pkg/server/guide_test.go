package server

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docs/operations.md's troubleshooting tables are keyed by what an
// operator sees: every log line and /readyz answer they quote (each part
// between "…") is written by mayu's code, so a message reworded in the
// code cannot leave the guide describing a line nobody will ever see.
func TestOperationsGuideQuotesRealLines(t *testing.T) {
	guide, err := os.ReadFile("../../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	var code strings.Builder
	for _, dir := range []string{"../../pkg", "../../cmd"} {
		err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			code.Write(b)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	src := code.String()
	_, troubleshooting, ok := strings.Cut(string(guide), "\n## Troubleshooting\n")
	if !ok {
		t.Fatal("docs/operations.md has no Troubleshooting section")
	}
	troubleshooting, _, _ = strings.Cut(troubleshooting, "\n## ")
	quoted := regexp.MustCompile("`([^`]+)`")
	rows := 0
	for _, line := range strings.Split(troubleshooting, "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "| line ") || strings.HasPrefix(line, "| `/readyz` says") {
			continue
		}
		cells := strings.Split(line, " | ")
		rows++
		for _, m := range quoted.FindAllStringSubmatch(cells[0], -1) {
			for _, part := range strings.Split(m[1], "…") {
				part = strings.TrimSpace(part)
				// The default the code formats into the line.
				part = strings.TrimSuffix(part, " 5m0s:")
				if len(part) < 8 {
					continue
				}
				if !strings.Contains(src, part) {
					t.Errorf("docs/operations.md quotes %q, which no code writes", part)
				}
			}
		}
	}
	if rows < 30 {
		t.Errorf("only %d rows in the troubleshooting tables", rows)
	}
	// The procedures name the tests that run them, and those run the
	// commands the guide gives.
	for _, s := range []string{"TestBackupAndRestore", "TestRestoreTheEmbeddedEtcd", "TestMoveTheEmbeddedEtcdToACluster",
		"snapshot save", "etcdutl snapshot restore", "--skip-hash-check", "<node.data_dir>/etcd/member/snap/db",
		"--initial-advertise-peer-urls"} {
		if !strings.Contains(string(guide), s) {
			t.Errorf("docs/operations.md does not mention %q", s)
		}
	}
}
