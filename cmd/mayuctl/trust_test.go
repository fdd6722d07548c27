package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/machine"
)

func TestAddMACAndRotateSecret(t *testing.T) {
	e := start(t)
	ctx := context.Background()
	e.ok("add", "node-1", "--mac", "52:54:00:00:00:01")
	for _, step := range []func(*machine.Machine) error{
		func(m *machine.Machine) error { return m.StartInstall("r", time.Now()) },
		func(m *machine.Machine) error { return m.MarkInstalled("r", time.Now()) },
	} {
		if _, err := e.reg.Update(ctx, "node-1", step); err != nil {
			t.Fatal(err)
		}
	}
	out := e.ok("add-mac", "node-1", "52-54-00-00-00-02", "52:54:00:00:00:03")
	if !strings.Contains(out, "node-1 (installed) has MACs 52:54:00:00:00:01, 52:54:00:00:00:02, 52:54:00:00:00:03") {
		t.Fatalf("add-mac printed:\n%s", out)
	}
	if m, err := e.reg.ByMAC(ctx, "52:54:00:00:00:03"); err != nil || m.ID != "node-1" {
		t.Fatalf("ByMAC: %v", err)
	}
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"add-mac", "ghost", "52:54:00:00:00:09"}, 3, "ghost is not registered"},
		{[]string{"add-mac", "node-1"}, 2, "at least one MAC"},
		{[]string{"add-mac", "node-1", "zz"}, 1, "zz"},
		{[]string{"rotate-secret", "now"}, 2, "no arguments"},
	} {
		code, _, errOut := e.mayuctl(tt.args...)
		if code != tt.code || !strings.Contains(errOut, tt.want) {
			t.Errorf("%v: exit %d, %s", tt.args, code, errOut)
		}
	}

	before, err := e.reg.Secrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if out := e.ok("rotate-secret"); !strings.Contains(out, "cluster secret rotated at") || !strings.Contains(out, "by replica-a") {
		t.Fatalf("rotate-secret printed:\n%s", out)
	}
	after, _ := e.reg.Secrets(ctx)
	if string(after.Current) == string(before.Current) || string(after.Previous) != string(before.Current) {
		t.Fatal("rotate-secret did not rotate")
	}
	var rot api.SecretRotation
	out = e.ok("rotate-secret", "-o", "json")
	if err := json.Unmarshal([]byte(out), &rot); err != nil || rot.Replica != "replica-a" {
		t.Fatalf("rotate-secret -o json: %v\n%s", err, out)
	}
}
