package main

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayu-boot/mayu/pkg/config"
)

type countReloads int

func (c *countReloads) Reload() error { *c++; return nil }

// A SIGHUP applies node.log_level, names what waits for a restart, keeps
// everything when the file is broken, and reloads the credentials always.
func TestReload(t *testing.T) {
	example, err := os.ReadFile("../../etc/mayu.yaml")
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "mayu.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(string(example))
	running, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	level := new(slog.LevelVar)
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	var reloads countReloads

	edited := strings.Replace(string(example), "log_level: info", "log_level: debug", 1)
	edited = strings.Replace(edited, "http: 4081", "http: 4091", 1)
	write(edited)
	reload(running, level, false, &reloads, log)
	if level.Level() != slog.LevelDebug {
		t.Errorf("level %s after the reload, want debug", level.Level())
	}
	if out := logs.String(); !strings.Contains(out, "key=node.ports") || strings.Contains(out, "key=node.log_level") ||
		!strings.Contains(out, "log level changed") {
		t.Errorf("log:\n%s", out)
	}

	// -log-level given: the file's level is not applied.
	level.Set(slog.LevelWarn)
	reload(running, level, true, &reloads, log)
	if level.Level() != slog.LevelWarn {
		t.Errorf("the flag's level was overridden: %s", level.Level())
	}

	logs.Reset()
	write(strings.Replace(edited, "log_level: debug", "log_level: loud", 1))
	level.Set(slog.LevelInfo)
	reload(running, level, false, &reloads, log)
	if level.Level() != slog.LevelInfo || !strings.Contains(logs.String(), "node.log_level") ||
		!strings.Contains(logs.String(), "the running one stays") {
		t.Errorf("a broken file: level %s, log:\n%s", level.Level(), logs.String())
	}
	if reloads != 3 {
		t.Errorf("credentials reloaded %d times, want 3", reloads)
	}
}
