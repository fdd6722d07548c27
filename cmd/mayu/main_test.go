package main

import (
	"bytes"
	"strings"
	"testing"
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
