package httpboot_test

import (
	"context"
	"encoding/json"
	"net/netip"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/httpboot"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
	"github.com/mayu-boot/mayu/pkg/token"
)

// An upgrade to etcd schema 2 on real etcd: installs in flight complete
// with the old-format tokens they carry, a machine installed before keeps
// reporting boot-complete with the token on its disk, and every new
// install (a new machine, a reinstall) gets a token of the new format, by
// which the old one opens nothing.
func TestUpgradeKeepsInstallsInFlight(t *testing.T) {
	cli := etcdtest.Start(t)
	prefix := etcdtest.Prefix(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// etcd as the previous release left it: its secret, and records
	// without a tokenNonce.
	const secret = "6d61797520636c7573746572207365637265742c2077726974746e206279207631"
	put := func(key, value string) {
		t.Helper()
		if _, err := cli.Put(ctx, prefix+key, value); err != nil {
			t.Fatal(err)
		}
	}
	put("cluster/secret", `{"secret":"`+secret+`"}`)
	old := map[string]struct {
		state machine.State
		gen   int
		addr  string
	}{
		"old-configured": {machine.Configured, 0, "10.99.0.10"}, // its iPXE script was served before the upgrade
		"old-installing": {machine.Installing, 0, "10.99.0.11"}, // its first stage ran before the upgrade
		"old-running":    {machine.Running, 1, "10.99.0.12"},    // installed before: its disk holds its token
	}
	for id, o := range old {
		rec, _ := json.Marshal(map[string]any{
			"id": id, "serial": strings.ToUpper(id), "macs": []string{}, "machineID": "f693c48a322f3b3c023fa62cced236d8",
			"hostname": "f693c48a322f3b3c", "profile": "default", "profileSlot": -1, "internalAddr": o.addr,
			"metadata": map[string]string{}, "state": o.state, "since": time.Now().UTC(), "generation": o.gen,
			"registered": "2026-11-29T07:00:00Z", "history": []any{},
		})
		put("machines/"+id, string(rec))
		put("addresses/"+o.addr, `{"machine":"`+id+`"}`)
	}
	legacy := func(id string) string { return token.Legacy([]byte(secret), id, old[id].gen) }

	c := config.Cluster{Static: config.Static{Subnet: netip.MustParsePrefix("10.99.0.0/24"),
		Range: config.Range{Start: netip.MustParseAddr("10.99.0.10"), End: netip.MustParseAddr("10.99.0.60")}},
		Install: config.Install{Timeout: time.Hour}}
	reg := registry.New(cli, registry.Options{Prefix: prefix, Cluster: c, Replica: "upgraded"})
	// What a replica of this release does before it serves.
	if migrated, err := reg.UpgradeSchema(ctx); err != nil || len(migrated) != 3 {
		t.Fatalf("upgrade: %v %v", migrated, err)
	}
	l := newLabOn(t, nil, func(*testfakes.Machines) httpboot.Machines { return reg })
	call := func(method, id, path, tok string, want int) string {
		t.Helper()
		return l.expect(method, "/machines/"+id+"/"+path+"?token="+tok, want)
	}
	stateOf := func(id string) machine.State {
		t.Helper()
		m, err := reg.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return m.State
	}

	// The installer booted before the upgrade: its whole install runs on
	// the old token.
	fs := call("GET", "old-configured", "first-stage", legacy("old-configured"), 200)
	if strings.Contains(fs, legacy("old-configured")) {
		t.Fatal("the first stage rendered after the upgrade carries the old token")
	}
	call("GET", "old-configured", "final-config", legacy("old-configured"), 200)
	call("POST", "old-configured", "installed", legacy("old-configured"), 200)
	call("POST", "old-configured", "boot-complete", legacy("old-configured"), 200)
	if s := stateOf("old-configured"); s != machine.Running {
		t.Fatalf("old-configured is %s", s)
	}
	// Its install over, the old token opens nothing of an install.
	call("GET", "old-configured", "first-stage", legacy("old-configured"), 403)
	call("GET", "old-configured", "final-config", legacy("old-configured"), 403)

	// Mid-install: final config and the announcement on the old token.
	call("GET", "old-installing", "final-config", legacy("old-installing"), 200)
	call("POST", "old-installing", "installed", legacy("old-installing"), 200)
	// Installed before the upgrade: boot-complete from its disk.
	call("POST", "old-running", "boot-complete", legacy("old-running"), 200)
	// (The two install calls after the install count too: the token is
	// the machine's, the state refuses them.)
	if l.counter("mayu_node_tokens_accepted_total", "legacy") != 9 {
		t.Errorf("legacy tokens accepted: %v", l.counter("mayu_node_tokens_accepted_total", "legacy"))
	}

	// A reinstall is a new install: a token of the new format, and the
	// old one opens nothing.
	if _, err := reg.Update(ctx, "old-running", func(m *machine.Machine) error { return m.Reinstall("op", time.Now()) }); err != nil {
		t.Fatal(err)
	}
	fsURL, tok := installerURLs(t, l.script("OLD-RUNNING", "", ""))
	m, _ := reg.Get(ctx, "old-running")
	if tok != token.For([]byte(secret), "old-running", m.TokenNonce, 2) {
		t.Fatal("the reinstall got no token of the new format")
	}
	call("GET", "old-running", "first-stage", token.Legacy([]byte(secret), "old-running", 2), 403)
	call("POST", "old-running", "boot-complete", legacy("old-running"), 403)
	l.expect("GET", fsURL, 200)

	// A new machine: a token of the new format only.
	_, tok = installerURLs(t, l.script("SN-NEW", "", "52-54-00-00-99-01"))
	m, _ = reg.Get(ctx, "sn-new")
	if tok != token.For([]byte(secret), "sn-new", m.TokenNonce, 0) || m.LegacyToken {
		t.Fatalf("new machine: token %s, record %+v", tok, m)
	}
	call("GET", "sn-new", "first-stage", token.Legacy([]byte(secret), "sn-new", 0), 403)
	if got := regexp.MustCompile(`[0-9a-f]{64}`).FindString(call("GET", "sn-new", "first-stage", tok, 200)); got != tok {
		t.Fatalf("first stage of the new machine carries %q", got)
	}
}
