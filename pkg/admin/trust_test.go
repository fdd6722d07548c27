package admin_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
)

// A MAC joins an installed machine only through the admin API: on real
// etcd, record and index together.
func TestAddMACToAnInstalledMachine(t *testing.T) {
	e := startEtcd(t)
	ctx := context.Background()
	reg := e.reg.(*registry.Registry)
	for _, id := range []string{"m1", "m2"} {
		if code, data := e.call(t, "POST", "/api/v1/machines", `{"id":"`+id+`","macs":["52:54:00:00:00:`+id[1:]+`1"]}`); code != http.StatusCreated {
			t.Fatalf("add %s: %d %s", id, code, data)
		}
	}
	for _, step := range []func(*machine.Machine) error{
		func(m *machine.Machine) error { return m.StartInstall("r", time.Now()) },
		func(m *machine.Machine) error { return m.MarkInstalled("r", time.Now()) },
	} {
		if _, err := reg.Update(ctx, "m1", step); err != nil {
			t.Fatal(err)
		}
	}
	// What a boot request may not do, an operator may.
	if _, err := reg.AttachMAC(ctx, "m1", "52:54:00:00:01:99"); err == nil {
		t.Fatal("a boot attached a MAC to an installed machine")
	}
	code, data := e.call(t, "POST", "/api/v1/machines/m1/macs", `{"mac":"52-54-00-00-01-99"}`)
	if code != http.StatusOK {
		t.Fatalf("add-mac: %d %s", code, data)
	}
	if m := decode[machine.Machine](t, data); !m.HasMAC("52:54:00:00:01:99") || m.State != machine.Installed {
		t.Fatalf("after add-mac: %+v", m)
	}
	if m, err := reg.ByMAC(ctx, "52:54:00:00:01:99"); err != nil || m.ID != "m1" {
		t.Fatalf("the new MAC is not indexed: %v", err)
	}
	code, data = e.call(t, "POST", "/api/v1/machines/m1/macs", `{"mac":"52:54:00:00:00:21"}`)
	wantError(t, "another machine's MAC", code, data, http.StatusConflict, "belongs to machine m2")
	code, data = e.call(t, "POST", "/api/v1/machines/m1/macs", `{"mac":"not-a-mac"}`)
	wantError(t, "a bad MAC", code, data, http.StatusBadRequest, "not-a-mac")
	code, data = e.call(t, "POST", "/api/v1/machines/m1/macs", `{"macs":["52:54:00:00:01:98"]}`)
	wantError(t, "a typo in the body", code, data, http.StatusBadRequest, "unknown field")
	code, data = e.call(t, "POST", "/api/v1/machines/nobody/macs", `{"mac":"52:54:00:00:01:98"}`)
	wantError(t, "an unknown machine", code, data, http.StatusNotFound, "nobody is not registered")
	code, data = e.callAs(t, "", "POST", "/api/v1/machines/m1/macs", `{"mac":"52:54:00:00:01:97"}`)
	wantError(t, "no token", code, data, http.StatusUnauthorized, "authentication")

	// The client does the same.
	c := &api.Client{BaseURL: e.srv.URL, Token: token}
	if m, err := c.AddMAC(ctx, "m2", "52:54:00:00:02:22"); err != nil || len(m.MACs) != 2 {
		t.Fatalf("client AddMAC: %+v %v", m, err)
	}
}

// rotate-secret makes a new cluster secret on real etcd, keeps the old
// one for the install timeout, and never tells either.
func TestRotateSecret(t *testing.T) {
	e := startEtcd(t)
	ctx := context.Background()
	reg := e.reg.(*registry.Registry)
	before, err := reg.Secrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &api.Client{BaseURL: e.srv.URL, Token: token}
	start := time.Now()
	rot, err := c.RotateSecret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	after, err := reg.Secrets(ctx)
	if err != nil || string(after.Current) == string(before.Current) || string(after.Previous) != string(before.Current) {
		t.Fatalf("the secret was not rotated: %v", err)
	}
	if rot.Replica != e.cfg.Node.Name || rot.Rotated.Before(start.Add(-time.Second)) || !rot.PreviousValidUntil.Equal(after.PreviousUntil) {
		t.Fatalf("rotation %+v, previous until %v", rot, after.PreviousUntil)
	}
	code, data := e.call(t, "POST", "/api/v1/secret/rotate", "")
	if code != http.StatusOK || strings.Contains(string(data), string(after.Current)) {
		t.Fatalf("second rotation: %d %s", code, data)
	}
	now, _ := reg.Secrets(ctx)
	if strings.Contains(string(data), string(now.Current)) {
		t.Fatal("the answer tells the new secret")
	}
	code, data = e.call(t, "GET", "/api/v1/secret/rotate", "")
	wantError(t, "GET", code, data, http.StatusMethodNotAllowed, "not allowed")
	code, data = e.callAs(t, "", "POST", "/api/v1/secret/rotate", "")
	wantError(t, "no token", code, data, http.StatusUnauthorized, "authentication")
}
