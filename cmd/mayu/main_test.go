package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/fixture"
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
	// failedAt is fed when alive first failed, failures how often it has
	// since: the watchdog calls alive and notify from one goroutine, so
	// once alive has failed every later feed follows an alive that
	// answered. (A sleep stood for this before: a tick that had read
	// healthy and was descheduled past it fed after the count was taken.)
	failedAt, failures := -1, 0
	var healthy atomic.Bool
	healthy.Store(true)
	alive := func(context.Context) error {
		if healthy.Load() {
			return nil
		}
		mu.Lock()
		defer mu.Unlock()
		if failedAt < 0 {
			failedAt = fed
		}
		failures++
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
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return failures >= 6 })
	mu.Lock()
	stuck := failedAt
	mu.Unlock()
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

// checkOutput runs `mayu -check` on the lab's config with poolExtra in
// its pool, and returns what it printed.
func checkOutput(t *testing.T, poolExtra string) (string, int) {
	t.Helper()
	return checkOutputWith(t, func(c *fixture.Config) { c.PoolExtra = poolExtra })
}

// checkOutputWith is checkOutput on the lab's config changed by edit.
func checkOutputWith(t *testing.T, edit func(*fixture.Config)) (string, int) {
	t.Helper()
	dir := t.TempDir()
	if err := fixture.WriteFiles(dir, fixture.Files{Token: "check-test-token-0123456789"}); err != nil {
		t.Fatal(err)
	}
	c, err := fixture.Loopback(dir)
	if err != nil {
		t.Fatal(err)
	}
	// The lab's segment, so that the pool and the advertise address fit.
	c.Advertise, c.Listen = "10.99.0.1", ""
	edit(&c)
	path, err := c.Write()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code := run([]string{"-config", path, "-check"}, &out, &out)
	return out.String(), code
}

// -check shows, per kind of client, the options the leader's own reply
// code puts in its OFFER: requested ones only, the boot file by
// architecture, what is not sent and why.
func TestCheckShowsTheOffers(t *testing.T) {
	out, code := checkOutput(t, `      domain_name: lab.example.com
      domain_search: [lab.example.com, example.com]
      ntp: [10.99.0.1]
      mtu: 1500
      options:
        - {code: 252, type: string, value: "http://10.99.0.1/wpad.dat", always: true}
        - {code: 2, type: uint32, value: 3600}
      reservations:
        - {mac: "52:54:00:12:34:56", address: 10.99.0.70}
`)
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, out)
	}
	t.Logf("%s", out)
	section := func(client string) string {
		_, rest, ok := strings.Cut(out, "mayu:   "+client+":")
		if !ok {
			t.Fatalf("no section for %s in:\n%s", client, out)
		}
		if i := regexp.MustCompile(`\nmayu: {3}\S`).FindStringIndex(rest); i != nil {
			rest = rest[:i[0]]
		}
		return rest
	}
	for _, tc := range []struct {
		client     string
		want, dont []string
	}{
		{"BIOS PXE (arch 0)",
			[]string{`file "undionly.kpxe"`, "1 Subnet Mask: 255.255.255.0", `15 Domain Name: "lab.example.com"`, "2 Time Offset: 3600",
				`252 option: "http://10.99.0.1/wpad.dat"`, "not sent: 42 (ntp): not requested", "not sent: 26 (mtu): not requested",
				"not sent: 119 (domain_search): not requested", "54 Server Identifier: 10.99.0.1"},
			[]string{"42 NTP", "175"}},
		{"UEFI x64 PXE (arch 7)",
			[]string{`file "ipxe.efi"`, "42 NTP Servers: 10.99.0.1", `15 Domain Name: "lab.example.com"`},
			[]string{"26 Interface MTU", "119 "}},
		{"UEFI x64 HTTP boot (arch 16)",
			[]string{"/tftp/ipxe.efi\"", `60 Class Identifier: HTTPClient`, "42 NTP Servers: 10.99.0.1"},
			nil},
		{"iPXE",
			[]string{"/boot.ipxe\"", "26 Interface MTU: 1500", "119 DNS Domain Search List: lab.example.com, example.com",
				"175 ", "not sent: 42 (ntp): not requested", "not sent: 2 (options[1]): not requested"},
			[]string{"2 Time Offset"}},
	} {
		s := section(tc.client)
		for _, w := range tc.want {
			if !strings.Contains(s, w) {
				t.Errorf("%s: no %q in:\n%s", tc.client, w, s)
			}
		}
		for _, d := range tc.dont {
			if strings.Contains(s, "mayu:     "+d) {
				t.Errorf("%s: %q, which it does not ask for, in:\n%s", tc.client, d, s)
			}
		}
	}
}

// In a proxy pool -check shows the proxy's answers: boot options, no
// address, no 175.
func TestCheckShowsTheProxyOffers(t *testing.T) {
	s, code := checkOutputWith(t, func(c *fixture.Config) { c.Proxy = true })
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, s)
	}
	if n := strings.Count(s, "yiaddr 0.0.0.0"); n != 4 {
		t.Errorf("%d of 4 sample clients offered no address:\n%s", n, s)
	}
	for _, d := range []string{"175 ", "51 IP Addresses Lease Time", "1 Subnet Mask", "3 Router"} {
		if strings.Contains(s, "mayu:     "+d) {
			t.Errorf("a proxy offer carries %q:\n%s", d, s)
		}
	}
	if !strings.Contains(s, "60 Class Identifier: PXEClient") {
		t.Errorf("no PXEClient class in:\n%s", s)
	}
}
