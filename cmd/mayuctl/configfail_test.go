package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
)

// A machine failed because its config does not validate: `mayuctl
// status` and `mayuctl list` show the validator's message, path included.
func TestStatusShowsConfigFailure(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	if _, _, err := e.reg.Register(ctx, registry.Registration{ID: "node-cfg", MACs: []string{"52:54:00:00:00:21"}}); err != nil {
		t.Fatal(err)
	}
	const reason = "config: cluster.templates.final_config: invalid Ignition 3.3.0 config: $.storage.files.0.path: path not absolute"
	if _, err := e.reg.Update(ctx, "node-cfg", func(m *machine.Machine) error {
		return m.MarkConfigFailed(reason, "r1", time.Now())
	}); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := e.mayuctl("status", "node-cfg")
	if code != 0 || !strings.Contains(out, "failed") || !strings.Contains(out, reason) {
		t.Fatalf("status: %d\n%s\n%s", code, out, errOut)
	}
	if code, out, _ := e.mayuctl("list", "-o", "wide"); code != 0 || !strings.Contains(out, "$.storage.files.0.path") {
		t.Fatalf("list: %d\n%s", code, out)
	}
}
