package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// -help and -version are answers, not errors: stdout and exit 0, so
// `mayu -help | less` and scripts reading the version work. A bad flag is
// an error: usage on stderr, exit 2.
func TestHelpAndVersion(t *testing.T) {
	for _, c := range []struct {
		args       []string
		code       int
		stdout     string
		stderrWant string
	}{
		{[]string{"-help"}, 0, "usage: mayu [flags]", ""},
		{[]string{"-h"}, 0, "-check", ""},
		{[]string{"-version"}, 0, "mayu ", ""},
		{[]string{"-no-such-flag"}, 2, "", "usage: mayu [flags]"},
		{[]string{"extra"}, 2, "", "unexpected argument"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(c.args, &stdout, &stderr)
		if code != c.code {
			t.Errorf("mayu %v: exit %d, want %d (stderr %q)", c.args, code, c.code, stderr.String())
		}
		if c.stdout != "" && !strings.Contains(stdout.String(), c.stdout) {
			t.Errorf("mayu %v: stdout %q lacks %q", c.args, stdout.String(), c.stdout)
		}
		if c.stdout == "" && stdout.Len() != 0 {
			t.Errorf("mayu %v: wrote to stdout: %q", c.args, stdout.String())
		}
		if c.stderrWant != "" && !strings.Contains(stderr.String(), c.stderrWant) {
			t.Errorf("mayu %v: stderr %q lacks %q", c.args, stderr.String(), c.stderrWant)
		}
		if c.stderrWant == "" && stderr.Len() != 0 {
			t.Errorf("mayu %v: wrote to stderr: %q", c.args, stderr.String())
		}
	}
	var stdout, stderr bytes.Buffer
	run([]string{"-version"}, &stdout, &stderr)
	if v := strings.TrimSpace(strings.TrimPrefix(stdout.String(), "mayu ")); v == "" || v == "dev" {
		t.Errorf("unstamped version %q: want what the toolchain recorded", v)
	}
}

// The watchdog is fed only while the replica answers, and says once when
// it stops and when it answers again.
func TestWatchdog(t *testing.T) {
	var mu sync.Mutex
	var fed int
	var healthy atomic.Bool
	healthy.Store(true)
	alive := func(context.Context) error {
		if healthy.Load() {
			return nil
		}
		return errors.New("listener stuck")
	}
	notify := func(state string) error {
		if state != "WATCHDOG=1" {
			t.Errorf("notified %q", state)
		}
		mu.Lock()
		fed++
		mu.Unlock()
		return nil
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return fed }
	var logs bytes.Buffer
	var logMu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return logs.Write(p)
	}), nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { watchdog(ctx, 30*time.Millisecond, alive, notify, log); close(done) }()
	waitFor(t, func() bool { return count() >= 3 })
	healthy.Store(false)
	time.Sleep(50 * time.Millisecond) // a tick in flight may still feed
	stuck := count()
	time.Sleep(200 * time.Millisecond)
	if n := count(); n != stuck {
		t.Errorf("fed %d times while the replica did not answer", n-stuck)
	}
	healthy.Store(true)
	waitFor(t, func() bool { return count() > stuck })
	cancel()
	<-done
	logMu.Lock()
	defer logMu.Unlock()
	if out := logs.String(); strings.Count(out, "does not answer its own health check") != 1 || !strings.Contains(out, "answers its health check again") {
		t.Errorf("log:\n%s", out)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
