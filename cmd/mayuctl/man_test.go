package main

import (
	"bytes"
	"os/exec"
	"strings"
	"testing"
)

// mayuctl man writes a page groff reads without a warning, naming every
// command and every global flag.
func TestManPage(t *testing.T) {
	code, page, errOut := runArgs("man")
	if code != 0 {
		t.Fatalf("mayuctl man: exit %d: %s", code, errOut)
	}
	root := (&cli{}).newRoot()
	for _, cmd := range root.Commands() {
		if cmd.IsAvailableCommand() && cmd.Name() != "help" && !strings.Contains(page, ".SS mayuctl "+roffEscape(cmd.Name())) {
			t.Errorf("the page has no section for %s", cmd.Name())
		}
	}
	for _, flag := range []string{"server", "token\\-file", "output"} {
		if !strings.Contains(page, "\\-\\-"+flag) {
			t.Errorf("the page lacks --%s", flag)
		}
	}
	groff, err := exec.LookPath("groff")
	if err != nil {
		t.Skip("groff not installed (package groff-base)")
	}
	cmd := exec.Command(groff, "-man", "-Tutf8", "-ww", "-z")
	cmd.Stdin = strings.NewReader(page)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil || stderr.Len() != 0 {
		t.Errorf("groff: %v\n%s", err, stderr.String())
	}
}
