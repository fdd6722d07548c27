package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
	"github.com/mayu-boot/mayu/pkg/token"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// Every record gets its own random nonce, so the same id registered again
// after a delete has another token than the one on its old disk.
func TestTokenNonceIsPerRecord(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	r := newRegistry(t, cli, cluster("10.21.0.1", 10), "r0")
	ctx := ctxT(t)
	a := register(t, r, "a", mac(21, 1))
	if !hex32.MatchString(a.TokenNonce) || a.LegacyToken {
		t.Fatalf("new record: nonce %q, legacy %v", a.TokenNonce, a.LegacyToken)
	}
	if b := register(t, r, "b"); b.TokenNonce == a.TokenNonce {
		t.Fatal("two records share a nonce")
	}
	keys, err := r.Secrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old := keys.Make(token.Subject{ID: "a", Nonce: a.TokenNonce})
	if err := r.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	again := register(t, r, "a", mac(21, 1))
	if again.TokenNonce == a.TokenNonce {
		t.Fatal("the re-added machine kept its nonce")
	}
	if keys.Match(token.Subject{ID: "a", Nonce: again.TokenNonce, Generation: again.Generation}, old, time.Now()).Ok() {
		t.Fatal("the old disk's token opens the re-added machine")
	}
	// The nonce never changes with the record's life.
	m, err := r.Update(ctx, "a", func(m *machine.Machine) error { return m.StartInstall("r0", time.Now()) })
	if err != nil || m.TokenNonce != again.TokenNonce {
		t.Fatalf("nonce after a change: %v", err)
	}
}

// A MAC a boot request sends joins a machine only until it is installed;
// an operator's AddMAC joins it in any state.
func TestAttachMACRefusedOnceInstalled(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	r := newRegistry(t, cli, cluster("10.22.0.1", 10), "r0")
	ctx := ctxT(t)
	register(t, r, "a", mac(22, 1))
	if m, err := r.AttachMAC(ctx, "a", mac(22, 2)); err != nil || len(m.MACs) != 2 {
		t.Fatalf("attach to a configured machine: %v", err)
	}
	for _, step := range []func(*machine.Machine) error{
		func(m *machine.Machine) error { return m.StartInstall("r0", time.Now()) },
		func(m *machine.Machine) error { return m.MarkInstalled("r0", time.Now()) },
	} {
		if _, err := r.Update(ctx, "a", step); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.AttachMAC(ctx, "a", mac(22, 3)); !errors.Is(err, registry.ErrInstalled) {
		t.Fatalf("attach to an installed machine: %v", err)
	}
	if mk := keys(t, cli, "macs/"); len(mk) != 2 {
		t.Fatalf("MAC index after a refused attach: %v", mk)
	}
	if m, err := r.AddMAC(ctx, "a", mac(22, 3)); err != nil || !m.HasMAC(mac(22, 3)) {
		t.Fatalf("an operator's AddMAC to an installed machine: %v", err)
	}
	// A MAC it already has is no change, in any state.
	if _, err := r.AttachMAC(ctx, "a", mac(22, 1)); err != nil {
		t.Fatalf("attach of a MAC it has: %v", err)
	}
}

// A rotation on one replica reaches every replica: each follows the secret
// in etcd, and the previous one still opens what it opened for the
// install timeout.
func TestSecretRotationReachesEveryReplica(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	c := cluster("10.23.0.1", 10)
	c.Install.Timeout = 45 * time.Minute
	clk := &clock{}
	clk.Set(time.Date(2026, 11, 29, 9, 0, 0, 0, time.UTC))
	var rs []*registry.Registry
	for _, name := range []string{"r1", "r2", "r3"} {
		r := registry.New(cli, registry.Options{Prefix: etcdtest.Prefix(t), Cluster: c, Replica: name, Now: clk.Now})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); r.FollowSecret(ctx, quiet) }()
		t.Cleanup(func() { cancel(); <-done })
		rs = append(rs, r)
	}
	ctx := ctxT(t)
	before, err := rs[0].Secrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Every replica has the same secret in memory before the rotation
	// (the followers load it; it is then never read from etcd again).
	waitSecret(t, rs, string(before.Current))

	rot, err := rs[0].RotateSecret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := clk.Now().Add(45 * time.Minute); !rot.PreviousUntil.Equal(want) || rot.Replica != "r1" {
		t.Fatalf("rotation %+v", rot)
	}
	after, err := rs[0].Secrets(ctx)
	if err != nil || string(after.Current) == string(before.Current) {
		t.Fatalf("the rotating replica still uses the old secret: %v", err)
	}
	waitSecret(t, rs, string(after.Current))
	for i, r := range rs {
		k, _ := r.Secrets(ctx)
		if string(k.Previous) != string(before.Current) || !k.PreviousUntil.Equal(rot.PreviousUntil) {
			t.Errorf("replica %d: previous secret %q until %v", i, k.Previous, k.PreviousUntil)
		}
	}
	// The secret in etcd says who rotated it, and holds no more than two.
	resp, err := cli.Get(ctx, etcdtest.Prefix(t)+"cluster/secret")
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil || v["replica"] != "r1" || v["previous"] != string(before.Current) {
		t.Fatalf("secret key holds %s", resp.Kvs[0].Value)
	}
	// A second rotation drops the first secret at once.
	if _, err := rs[1].RotateSecret(ctx); err != nil {
		t.Fatal(err)
	}
	third, _ := rs[1].Secrets(ctx)
	waitSecret(t, rs, string(third.Current))
	if k, _ := rs[2].Secrets(ctx); string(k.Previous) != string(after.Current) {
		t.Fatal("the second rotation kept the first secret")
	}
}

// waitSecret waits until every replica uses secret.
func waitSecret(t *testing.T, rs []*registry.Registry, secret string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for i := 0; i < len(rs); {
		k, err := rs[i].Secrets(ctxT(t))
		if err == nil && string(k.Current) == secret {
			i++
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %d does not follow the cluster secret: %v", i, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// oldRecord is a machine record as mayu wrote it before etcd schema 2: no
// tokenNonce.
func oldRecord(id string, state machine.State, gen int, macs ...string) string {
	data, _ := json.Marshal(map[string]any{
		"id": id, "serial": strings.ToUpper(id), "macs": macs, "machineID": "f693c48a322f3b3c023fa62cced236d8",
		"hostname": "f693c48a322f3b3c", "profile": "default", "profileSlot": -1, "internalAddr": "10.24.0.1",
		"metadata": map[string]string{}, "state": state, "since": "2026-11-29T08:00:00Z", "generation": gen,
		"registered": "2026-11-29T07:00:00Z", "history": []any{},
	})
	return string(data)
}

// The upgrade from schema 1: old records get their nonce and keep the old
// token of their install in flight; the schema key says 2; a newer schema
// stops this mayu.
func TestUpgradeSchema(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	p := etcdtest.Prefix(t)
	ctx := ctxT(t)
	for id, rec := range map[string]string{
		"old-installing": oldRecord("old-installing", machine.Installing, 0),
		"old-running":    oldRecord("old-running", machine.Running, 2),
	} {
		if _, err := cli.Put(ctx, p+"machines/"+id, rec); err != nil {
			t.Fatal(err)
		}
	}
	r := newRegistry(t, cli, cluster("10.24.0.10", 10), "r0")
	fresh := register(t, r, "new-one")
	migrated, err := r.UpgradeSchema(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(migrated, ",") != "old-installing,old-running" {
		t.Fatalf("migrated %v", migrated)
	}
	for _, id := range migrated {
		m, err := r.Get(ctx, id)
		if err != nil || !hex32.MatchString(m.TokenNonce) || !m.LegacyToken {
			t.Fatalf("%s after the upgrade: %+v, %v", id, m, err)
		}
	}
	if m, _ := r.Get(ctx, "new-one"); m.TokenNonce != fresh.TokenNonce || m.LegacyToken {
		t.Fatal("the upgrade touched a current record")
	}
	resp, err := cli.Get(ctx, p+"schema")
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != `{"version":2}` {
		t.Fatalf("schema key: %v %v", resp, err)
	}
	// Done once: a second run (another replica) changes nothing.
	if again, err := r.UpgradeSchema(ctx); err != nil || len(again) != 0 {
		t.Fatalf("second upgrade: %v %v", again, err)
	}
	// A reinstall ends the old token.
	m, err := r.Update(ctx, "old-running", func(m *machine.Machine) error { return m.Reinstall("r0", time.Now()) })
	if err != nil || m.LegacyToken || m.Generation != 3 {
		t.Fatalf("after a reinstall: %+v %v", m, err)
	}
	// A record a replica not yet upgraded writes gets its nonce at its
	// next change, keeping the old token of its generation; if that change
	// is a reinstall, the new install has only a token of the new format.
	cli.Put(ctx, p+"machines/straggler", oldRecord("straggler", machine.Configured, 0))
	if m, err := r.Update(ctx, "straggler", func(m *machine.Machine) error { return m.StartInstall("r0", time.Now()) }); err != nil || !m.LegacyToken || m.TokenNonce == "" {
		t.Fatalf("straggler: %+v %v", m, err)
	}
	cli.Put(ctx, p+"machines/straggler2", oldRecord("straggler2", machine.Failed, 0))
	if m, err := r.Update(ctx, "straggler2", func(m *machine.Machine) error { return m.Reinstall("r0", time.Now()) }); err != nil || m.LegacyToken || m.TokenNonce == "" {
		t.Fatalf("straggler reinstalled: %+v %v", m, err)
	}
	// etcd written by a newer mayu: refused, nothing touched.
	if _, err := cli.Put(ctx, p+"schema", `{"version":3}`); err != nil {
		t.Fatal(err)
	}
	if _, err := r.UpgradeSchema(ctx); !errors.Is(err, registry.ErrSchemaNewer) || !strings.Contains(err.Error(), "is 3") {
		t.Fatalf("newer schema: %v", err)
	}
	if resp, _ := cli.Get(ctx, p+"schema"); string(resp.Kvs[0].Value) != `{"version":3}` {
		t.Fatal("a newer schema version was overwritten")
	}
}

// Replicas of the new release starting at once migrate each record once:
// every record ends with one nonce, which every replica reads.
func TestUpgradeSchemaConcurrently(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	p := etcdtest.Prefix(t)
	ctx := ctxT(t)
	const n = 20
	for i := range n {
		id := fmt.Sprintf("old-%02d", i)
		if _, err := cli.Put(ctx, p+"machines/"+id, oldRecord(id, machine.Installing, 0)); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for i := range 4 {
		r := newRegistry(t, cli, cluster("10.25.0.1", 10), fmt.Sprintf("r%d", i))
		wg.Go(func() {
			migrated, err := r.UpgradeSchema(ctx)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			for _, id := range migrated {
				seen[id]++
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("%d records migrated, want %d", len(seen), n)
	}
	for id, k := range seen {
		if k != 1 {
			t.Errorf("%s migrated %d times", id, k)
		}
	}
	ms, _, err := newRegistry(t, cli, cluster("10.25.0.1", 10), "late").List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if !hex32.MatchString(m.TokenNonce) || !m.LegacyToken {
			t.Errorf("%s: nonce %q legacy %v", m.ID, m.TokenNonce, m.LegacyToken)
		}
	}
}
