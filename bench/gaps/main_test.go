package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestRun(t *testing.T) {
	dir := t.TempDir()
	// Probes every 50 ms; a 1 s outage after the kill at 1000400, none
	// after the SIGTERM at 1005000.
	var log strings.Builder
	for ms := int64(1000000); ms < 1010000; ms += 50 {
		switch {
		case ms >= 1000400 && ms < 1001400:
			log.WriteString(itoa(ms) + " " + itoa(ms+250) + " fail 02:00:00:00:00:01 timeout\n")
		default:
			log.WriteString(itoa(ms) + " " + itoa(ms+2) + " ok 02:00:00:00:00:01 10.99.0.100 10.99.0.2\n")
		}
	}
	lp, ep := filepath.Join(dir, "probe.log"), filepath.Join(dir, "events")
	os.WriteFile(lp, []byte(log.String()), 0o600)
	os.WriteFile(ep, []byte("1000400 kill-9\n1005000 sigterm\n"), 0o600)
	var out bytes.Buffer
	if err := run(lp, ep, &out); err != nil {
		t.Fatal(err)
	}
	// The gap runs from the end of the last success (1000352) to the start
	// of the next one (1001400).
	for _, want := range []string{"kill-9 gap 1.048", "sigterm gap 0.000", "summary kill-9 n=1 median=1.048 max=1.048"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

// A SIGTERM that left no gap, then a SIGSTOP whose gap starts (at the
// prober's last answer) 20 ms before the SIGSTOP is logged: the gap is the
// SIGSTOP's alone (it was given to the SIGTERM too).
func TestGapOfTheNextEventIsNotThisOnes(t *testing.T) {
	dir := t.TempDir()
	var log strings.Builder
	for ms := int64(1000000); ms < 1010000; ms += 50 {
		switch {
		case ms >= 1005050 && ms < 1006000:
			log.WriteString(itoa(ms) + " " + itoa(ms+100) + " fail 02:00:00:00:00:01 timeout\n")
		default:
			log.WriteString(itoa(ms) + " " + itoa(ms+2) + " ok 02:00:00:00:00:01 10.99.0.100 10.99.0.2\n")
		}
	}
	lp, ep := filepath.Join(dir, "probe.log"), filepath.Join(dir, "events")
	os.WriteFile(lp, []byte(log.String()), 0o600)
	// The last answer ends at 1005002; the SIGSTOP is logged at 1005022.
	os.WriteFile(ep, []byte("1003000 sigterm\n1005022 sigstop\n"), 0o600)
	var out bytes.Buffer
	if err := run(lp, ep, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"sigterm gap 0.000", "sigstop gap 0.998"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
}

func itoa(i int64) string { return strconv.FormatInt(i, 10) }
