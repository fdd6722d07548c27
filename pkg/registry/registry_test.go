package registry_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
)

var hex32 = regexp.MustCompile(`^[0-9a-f]{32}$`)

// cluster is a cluster config with a static range of n addresses from start.
func cluster(start string, n int, profiles ...config.Profile) config.Cluster {
	s := netip.MustParseAddr(start)
	e := s
	for i := 1; i < n; i++ {
		e = e.Next()
	}
	return config.Cluster{
		Static: config.Static{
			Subnet: netip.MustParsePrefix(s.String() + "/16").Masked(),
			Range:  config.Range{Start: s, End: e},
		},
		Profiles: profiles,
	}
}

func newRegistry(t *testing.T, cli *clientv3.Client, c config.Cluster, replica string) *registry.Registry {
	t.Helper()
	return registry.New(cli, registry.Options{Prefix: etcdtest.Prefix(t), Cluster: c, Replica: replica})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mac(a, b int) string { return fmt.Sprintf("52:54:00:00:%02x:%02x", a, b) }

// keys returns the keys under <prefix><dir> and their owners.
func keys(t *testing.T, cli *clientv3.Client, dir string) map[string]string {
	t.Helper()
	p := etcdtest.Prefix(t) + dir
	resp, err := cli.Get(ctxT(t), p, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		var o struct{ Machine string }
		if err := json.Unmarshal(kv.Value, &o); err != nil {
			t.Fatalf("index key %s holds %q: %v", kv.Key, kv.Value, err)
		}
		out[strings.TrimPrefix(string(kv.Key), p)] = o.Machine
	}
	return out
}

func register(t *testing.T, r *registry.Registry, id string, macs ...string) *machine.Machine {
	t.Helper()
	m, created, err := r.Register(ctxT(t), registry.Registration{ID: id, MACs: macs})
	if err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
	if !created {
		t.Fatalf("register %s: not created", id)
	}
	return m
}

var (
	core   = config.Profile{Name: "core", Quantity: 3, Tags: map[string]string{"rule-core": "true"}}
	worker = config.Profile{Name: "worker", Quantity: 10, Tags: map[string]string{"rule-worker": "true", "zone": "b"}}
)

func TestRegisterConcurrent(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	c := cluster("10.1.0.1", 250, core, worker)
	rg := c.Static.Range
	const goroutines, each = 8, 25

	type result struct {
		m       *machine.Machine
		created bool
	}
	results := make([][]result, goroutines)
	errs := make(chan error, goroutines*each)
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < goroutines; g++ {
		// One registry per goroutine: eight replicas racing.
		r := newRegistry(t, cli, c, fmt.Sprintf("replica-%d", g))
		wg.Go(func() {
			for i := 0; i < each; i++ {
				id := fmt.Sprintf("node-%d-%02d", g, i)
				m, created, err := r.Register(ctxT(t), registry.Registration{ID: id, MACs: []string{mac(g, i)}, Arch: "x86_64"})
				if err != nil {
					errs <- fmt.Errorf("register %s: %w", id, err)
					continue
				}
				results[g] = append(results[g], result{m, created})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("%d concurrent registrations in %v", goroutines*each, time.Since(start))

	r := newRegistry(t, cli, c, "checker")
	ms, bad, err := r.List(ctxT(t))
	if err != nil || len(bad) != 0 {
		t.Fatalf("List: %v, corrupt %v", err, bad)
	}
	if len(ms) != goroutines*each {
		t.Fatalf("%d machines, want %d", len(ms), goroutines*each)
	}
	stored := map[string]*machine.Machine{}
	for _, m := range ms {
		stored[m.ID] = m
	}
	for _, rs := range results {
		for _, res := range rs {
			s := stored[res.m.ID]
			if !res.created || s == nil || s.MachineID != res.m.MachineID || s.InternalAddr != res.m.InternalAddr {
				t.Fatalf("returned record %+v does not match the stored one %+v", res.m, s)
			}
		}
	}

	addrs, ids, macs := map[string]string{}, map[string]bool{}, map[string]bool{}
	profiles := map[string]int{}
	slots := map[string]bool{}
	for _, m := range ms {
		a, err := netip.ParseAddr(m.InternalAddr)
		if err != nil || a.Compare(rg.Start) < 0 || a.Compare(rg.End) > 0 {
			t.Errorf("%s has InternalAddr %q outside %s-%s", m.ID, m.InternalAddr, rg.Start, rg.End)
		}
		if other, dup := addrs[m.InternalAddr]; dup {
			t.Errorf("%s and %s share %s", m.ID, other, m.InternalAddr)
		}
		addrs[m.InternalAddr] = m.ID
		if !hex32.MatchString(m.MachineID) || ids[m.MachineID] {
			t.Errorf("%s: machineID %q is not unique 32 hex digits", m.ID, m.MachineID)
		}
		ids[m.MachineID] = true
		if m.Hostname != m.MachineID[:16] {
			t.Errorf("%s: hostname %q, machineID %q", m.ID, m.Hostname, m.MachineID)
		}
		if len(m.MACs) != 1 || macs[m.MACs[0]] {
			t.Errorf("%s: MACs %v", m.ID, m.MACs)
		} else {
			macs[m.MACs[0]] = true
		}
		if m.State != machine.Configured || m.Generation != 0 || m.Arch != "x86_64" || !strings.HasPrefix(m.LastReplica, "replica-") {
			t.Errorf("%s: state %s gen %d arch %q replica %q", m.ID, m.State, m.Generation, m.Arch, m.LastReplica)
		}
		profiles[m.Profile]++
		var want map[string]string
		switch m.Profile {
		case "core":
			want = core.Tags
		case "worker":
			want = worker.Tags
		case "default":
			want = map[string]string{}
			if m.ProfileSlot != -1 {
				t.Errorf("%s: default profile with slot %d", m.ID, m.ProfileSlot)
			}
		default:
			t.Errorf("%s: profile %q", m.ID, m.Profile)
		}
		if m.Profile != "default" {
			slot := fmt.Sprintf("%s/%d", m.Profile, m.ProfileSlot)
			if slots[slot] {
				t.Errorf("slot %s held twice", slot)
			}
			slots[slot] = true
		}
		if fmt.Sprint(m.Metadata) != fmt.Sprint(want) {
			t.Errorf("%s (%s): metadata %v, want %v", m.ID, m.Profile, m.Metadata, want)
		}
	}
	if profiles["core"] != 3 || profiles["worker"] != 10 || profiles["default"] != 187 {
		t.Errorf("profiles %v, want core 3, worker 10, default 187", profiles)
	}

	// The indexes hold exactly one key per address, MAC and slot, each
	// pointing at the machine that holds it.
	ak, mk, pk := keys(t, cli, "addresses/"), keys(t, cli, "macs/"), keys(t, cli, "profiles/")
	if len(ak) != 200 || len(mk) != 200 || len(pk) != 13 {
		t.Fatalf("index keys: %d addresses, %d macs, %d profile slots; want 200, 200, 13", len(ak), len(mk), len(pk))
	}
	for _, m := range ms {
		if ak[m.InternalAddr] != m.ID || mk[m.MACs[0]] != m.ID {
			t.Errorf("%s: address key owner %q, MAC key owner %q", m.ID, ak[m.InternalAddr], mk[m.MACs[0]])
		}
		if m.Profile != "default" && pk[fmt.Sprintf("%s/%d", m.Profile, m.ProfileSlot)] != m.ID {
			t.Errorf("%s: slot key %s/%d not owned", m.ID, m.Profile, m.ProfileSlot)
		}
	}
}

func TestRegisterSameIDConcurrently(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	c := cluster("10.2.0.1", 20, core)
	// The same registration, as eight replicas answering one machine's
	// retried requests would pass it; the MAC in another notation.
	reg := registry.Registration{ID: "sn-same", Serial: "SN-SAME", MACs: []string{"52-54-00-AA-BB-CC"}}
	type result struct {
		m       *machine.Machine
		created bool
		err     error
	}
	results := make([]result, 8)
	var wg sync.WaitGroup
	for i := range results {
		r := newRegistry(t, cli, c, fmt.Sprintf("replica-%d", i))
		wg.Go(func() {
			m, created, err := r.Register(ctxT(t), reg)
			results[i] = result{m, created, err}
		})
	}
	wg.Wait()
	created := 0
	for i, res := range results {
		if res.err != nil {
			t.Fatalf("replica %d: %v", i, res.err)
		}
		if res.created {
			created++
		}
		if res.m.MachineID != results[0].m.MachineID || res.m.InternalAddr != results[0].m.InternalAddr {
			t.Fatalf("replica %d got machine %s at %s, replica 0 got %s at %s", i, res.m.MachineID, res.m.InternalAddr, results[0].m.MachineID, results[0].m.InternalAddr)
		}
	}
	if created != 1 {
		t.Fatalf("%d registrations created the machine, want 1", created)
	}
	if results[0].m.MACs[0] != "52:54:00:aa:bb:cc" {
		t.Fatalf("MAC stored as %q", results[0].m.MACs[0])
	}
	if reg.MACs[0] != "52-54-00-AA-BB-CC" {
		t.Errorf("Register rewrote the caller's MAC slice to %q", reg.MACs[0])
	}
	if a, m, p := keys(t, cli, "addresses/"), keys(t, cli, "macs/"), keys(t, cli, "profiles/"); len(a) != 1 || len(m) != 1 || len(p) != 1 {
		t.Fatalf("index keys: %v %v %v", a, m, p)
	}
	r := newRegistry(t, cli, c, "checker")
	if ms, _, _ := r.List(ctxT(t)); len(ms) != 1 {
		t.Fatalf("%d machines", len(ms))
	}
}

func TestRegisterExhaustion(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	c := cluster("10.3.0.1", 5)
	r := newRegistry(t, cli, c, "r0")
	ctx := ctxT(t)
	var ms []*machine.Machine
	for i := 0; i < 7; i++ {
		id := fmt.Sprintf("ex-%d", i)
		m, _, err := r.Register(ctx, registry.Registration{ID: id, MACs: []string{mac(3, i)}})
		if i < 5 {
			if err != nil {
				t.Fatalf("register %s: %v", id, err)
			}
			if want := fmt.Sprintf("10.3.0.%d", i+1); m.InternalAddr != want {
				t.Fatalf("%s got %s, want the lowest free %s", id, m.InternalAddr, want)
			}
			ms = append(ms, m)
			continue
		}
		if !errors.Is(err, registry.ErrExhausted) {
			t.Fatalf("register %s: err = %v, want ErrExhausted", id, err)
		}
		if !strings.Contains(err.Error(), "10.3.0.1-10.3.0.5") {
			t.Fatalf("error %q does not name the range", err)
		}
	}
	checkIndex := func(wantMachines int) {
		t.Helper()
		ak := keys(t, cli, "addresses/")
		for a := range ak {
			ip := netip.MustParseAddr(a)
			if ip.Compare(c.Static.Range.Start) < 0 || ip.Compare(c.Static.Range.End) > 0 {
				t.Fatalf("address %s outside the range is in etcd", a)
			}
		}
		all, bad, err := r.List(ctx)
		if err != nil || len(bad) != 0 || len(all) != wantMachines || len(ak) != wantMachines || len(keys(t, cli, "macs/")) != wantMachines {
			t.Fatalf("after exhaustion: %d machines (%v, %v), %d addresses, want %d", len(all), err, bad, len(ak), wantMachines)
		}
	}
	// A failed registration leaves nothing behind.
	checkIndex(5)
	if _, err := r.Get(ctx, "ex-5"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get of a refused machine: %v", err)
	}

	if err := r.Delete(ctx, ms[2].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Get(ctx, ms[2].ID); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
	if _, err := r.ByMAC(ctx, ms[2].MACs[0]); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("ByMAC after Delete: %v", err)
	}
	m := register(t, r, "ex-5", mac(3, 5))
	if m.InternalAddr != ms[2].InternalAddr {
		t.Fatalf("new machine got %s, want the freed %s", m.InternalAddr, ms[2].InternalAddr)
	}
	checkIndex(5)
	if _, _, err := r.Register(ctx, registry.Registration{ID: "ex-6", MACs: []string{mac(3, 6)}}); !errors.Is(err, registry.ErrExhausted) {
		t.Fatalf("register into a full range again: %v", err)
	}
	// The freed MAC can be registered again, by another machine, which
	// gets the lowest free address.
	if err := r.Delete(ctx, ms[0].ID); err != nil {
		t.Fatal(err)
	}
	if m := register(t, r, "ex-7", mac(3, 2)); m.InternalAddr != "10.3.0.1" {
		t.Fatalf("ex-7 got %s, want 10.3.0.1", m.InternalAddr)
	}
	checkIndex(5)
}

func TestDeleteFreesProfileSlot(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	two := config.Profile{Name: "core", Quantity: 2, Tags: map[string]string{"rule-core": "true"}}
	r := newRegistry(t, cli, cluster("10.4.0.1", 10, two), "r0")
	ctx := ctxT(t)
	a := register(t, r, "a", mac(4, 1))
	b := register(t, r, "b", mac(4, 2))
	c := register(t, r, "c", mac(4, 3))
	if a.Profile != "core" || b.Profile != "core" || c.Profile != "default" || a.ProfileSlot != 0 || b.ProfileSlot != 1 {
		t.Fatalf("profiles: a %s/%d, b %s/%d, c %s/%d", a.Profile, a.ProfileSlot, b.Profile, b.ProfileSlot, c.Profile, c.ProfileSlot)
	}
	if c.Metadata["rule-core"] != "" {
		t.Fatalf("a default machine carries core tags: %v", c.Metadata)
	}
	if err := r.Delete(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if pk := keys(t, cli, "profiles/"); len(pk) != 1 || pk["core/1"] != "b" {
		t.Fatalf("profile slots after delete: %v", pk)
	}
	d := register(t, r, "d", mac(4, 4))
	if d.Profile != "core" || d.ProfileSlot != 0 || d.Metadata["rule-core"] != "true" {
		t.Fatalf("d got %s/%d %v, want the freed core slot 0", d.Profile, d.ProfileSlot, d.Metadata)
	}
	if e := register(t, r, "e", mac(4, 5)); e.Profile != "default" {
		t.Fatalf("e got %s with core full", e.Profile)
	}
	// Deleting a default machine frees no slot.
	if err := r.Delete(ctx, c.ID); err != nil {
		t.Fatal(err)
	}
	if pk := keys(t, cli, "profiles/"); len(pk) != 2 {
		t.Fatalf("profile slots: %v", pk)
	}
	if err := r.Delete(ctx, c.ID); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
}

func TestRegisterRefusesBadInput(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	r := newRegistry(t, cli, cluster("10.5.0.1", 10), "r0")
	ctx := ctxT(t)
	for _, reg := range []registry.Registration{
		{ID: "../etc"},
		{ID: ""},
		{ID: "UPPER"},
		{ID: "ok", MACs: []string{"not-a-mac"}},
	} {
		if _, _, err := r.Register(ctx, reg); err == nil {
			t.Errorf("Register(%+v) succeeded", reg)
		}
	}
	if _, err := r.Get(ctx, "../etc"); err == nil || errors.Is(err, registry.ErrNotFound) {
		t.Errorf("Get of a bad id: %v", err)
	}
	// One MAC given twice, in two notations, is one MAC.
	m, _, err := r.Register(ctx, registry.Registration{ID: "twice", MACs: []string{"52:54:00:05:00:01", "52-54-00-05-00-01"}})
	if err != nil {
		t.Fatalf("Register with a repeated MAC: %v", err)
	}
	if len(m.MACs) != 1 {
		t.Fatalf("MACs %v", m.MACs)
	}
	if n := len(keys(t, cli, "machines/")); n != 1 {
		t.Fatalf("%d records after refused registrations", n)
	}
}

func TestCorruptRecords(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	r := newRegistry(t, cli, cluster("10.6.0.1", 10), "r0")
	ctx := ctxT(t)
	p := etcdtest.Prefix(t)
	good1 := register(t, r, "good-1", mac(6, 1))
	good2 := register(t, r, "good-2", mac(6, 2))

	// Garbage, with index keys pointing at it.
	if _, err := cli.Put(ctx, p+"machines/bad-one", "{not json"); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, p+"macs/52:54:00:06:00:09", `{"machine":"bad-one"}`); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, p+"addresses/10.6.0.9", `{"machine":"bad-one"}`); err != nil {
		t.Fatal(err)
	}
	// A well-formed record under the wrong key.
	data, _ := json.Marshal(good1)
	if _, err := cli.Put(ctx, p+"machines/liar", string(data)); err != nil {
		t.Fatal(err)
	}

	for id, want := range map[string]string{"bad-one": "invalid character", "liar": `record holds id "good-1"`} {
		_, err := r.Get(ctx, id)
		var ce *registry.CorruptError
		if !errors.As(err, &ce) {
			t.Fatalf("Get(%s): %v (%T), want *CorruptError", id, err, err)
		}
		if ce.Key != p+"machines/"+id || !strings.Contains(err.Error(), p+"machines/"+id) || !strings.Contains(err.Error(), want) {
			t.Fatalf("Get(%s): %q does not name the key and %q", id, err, want)
		}
	}
	var ce *registry.CorruptError
	if _, err := r.ByMAC(ctx, "52:54:00:06:00:09"); !errors.As(err, &ce) {
		t.Fatalf("ByMAC of a corrupt machine's MAC: %v", err)
	}
	if _, err := r.Update(ctx, "bad-one", func(*machine.Machine) error { return nil }); !errors.As(err, &ce) {
		t.Fatalf("Update of a corrupt machine: %v", err)
	}

	ms, bad, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].ID != "good-1" || ms[1].ID != "good-2" {
		t.Fatalf("List: %v", ms)
	}
	var badKeys []string
	for _, b := range bad {
		badKeys = append(badKeys, b.Key)
	}
	if fmt.Sprint(badKeys) != fmt.Sprint([]string{p + "machines/bad-one", p + "machines/liar"}) {
		t.Fatalf("List reported corrupt %v", badKeys)
	}

	// A sweep skips corrupt records rather than failing.
	if _, err := r.ExpireInstalls(ctx, time.Minute); err != nil {
		t.Fatalf("ExpireInstalls with corrupt records: %v", err)
	}

	for _, id := range []string{"bad-one", "liar"} {
		if err := r.Delete(ctx, id); err != nil {
			t.Fatalf("Delete(%s): %v", id, err)
		}
	}
	ms, bad, err = r.List(ctx)
	if err != nil || len(bad) != 0 || len(ms) != 2 {
		t.Fatalf("after Delete: %v, %v, %v", ms, bad, err)
	}
	// The corrupt machine's index keys are gone; the good machines' stay,
	// even though "liar" carried good-1's MAC and address.
	ak, mk := keys(t, cli, "addresses/"), keys(t, cli, "macs/")
	want := map[string]string{good1.InternalAddr: "good-1", good2.InternalAddr: "good-2"}
	if fmt.Sprint(ak) != fmt.Sprint(want) {
		t.Fatalf("addresses after Delete: %v, want %v", ak, want)
	}
	if len(mk) != 2 || mk[good1.MACs[0]] != "good-1" || mk[good2.MACs[0]] != "good-2" {
		t.Fatalf("macs after Delete: %v", mk)
	}
	if m, err := r.Get(ctx, "good-1"); err != nil || m.MachineID != good1.MachineID {
		t.Fatalf("good-1 after Delete of liar: %v", err)
	}
}

func TestUpdateIsCompareAndSwap(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	c := cluster("10.7.0.1", 10)
	base := newRegistry(t, cli, c, "r0")
	register(t, base, "counted", mac(7, 1))
	const goroutines, each = 8, 20
	var wg sync.WaitGroup
	errs := make(chan error, goroutines*each)
	for g := 0; g < goroutines; g++ {
		r := newRegistry(t, cli, c, fmt.Sprintf("replica-%d", g))
		wg.Go(func() {
			for i := 0; i < each; i++ {
				_, err := r.Update(ctxT(t), "counted", func(m *machine.Machine) error {
					var n int
					fmt.Sscan(m.Metadata["counter"], &n)
					m.Metadata["counter"] = fmt.Sprint(n + 1)
					return nil
				})
				if err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	m, err := base.Get(ctxT(t), "counted")
	if err != nil {
		t.Fatal(err)
	}
	if m.Metadata["counter"] != fmt.Sprint(goroutines*each) {
		t.Fatalf("counter %s, want %d: an update was lost", m.Metadata["counter"], goroutines*each)
	}
}

func TestUpdate(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	r := newRegistry(t, cli, cluster("10.8.0.1", 10), "r0")
	ctx := ctxT(t)
	register(t, r, "m1", mac(8, 1))
	m, err := r.Update(ctx, "m1", func(m *machine.Machine) error { return m.StartInstall("r0", time.Now()) })
	if err != nil || m.State != machine.Installing {
		t.Fatalf("StartInstall: %v, %v", m, err)
	}
	// ErrUnchanged writes nothing and is not an error.
	before, _ := cli.Get(ctx, etcdtest.Prefix(t)+"machines/m1")
	m, err = r.Update(ctx, "m1", func(m *machine.Machine) error { return m.StartInstall("r0", time.Now()) })
	if err != nil || m.State != machine.Installing {
		t.Fatalf("retried StartInstall: %v, %v", m, err)
	}
	after, _ := cli.Get(ctx, etcdtest.Prefix(t)+"machines/m1")
	if before.Kvs[0].ModRevision != after.Kvs[0].ModRevision {
		t.Fatal("an unchanged update wrote the record")
	}
	// A refused transition returns its error and writes nothing.
	_, err = r.Update(ctx, "m1", func(m *machine.Machine) error { return m.BootComplete("r0", time.Now()) })
	var te *machine.TransitionError
	if !errors.As(err, &te) {
		t.Fatalf("BootComplete while installing: %v", err)
	}
	if _, err := r.Update(ctx, "nobody", func(*machine.Machine) error { return nil }); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("Update of a missing machine: %v", err)
	}
}

func TestAddMAC(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	r := newRegistry(t, cli, cluster("10.9.0.1", 10), "r0")
	ctx := ctxT(t)
	a := register(t, r, "a", mac(9, 1))
	register(t, r, "b", mac(9, 2))

	m, err := r.AddMAC(ctx, "a", "52-54-00-00-09-AA")
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(m.MACs) != fmt.Sprint([]string{a.MACs[0], "52:54:00:00:09:aa"}) {
		t.Fatalf("MACs %v", m.MACs)
	}
	got, err := r.ByMAC(ctx, "52:54:00:00:09:AA")
	if err != nil || got.ID != "a" || len(got.MACs) != 2 {
		t.Fatalf("ByMAC of the new MAC: %+v, %v", got, err)
	}
	if got, err := r.ByMAC(ctx, "525400000902"); err != nil || got.ID != "b" {
		t.Fatalf("ByMAC of b: %+v, %v", got, err)
	}
	// Adding it again changes nothing.
	if m, err := r.AddMAC(ctx, "a", "52:54:00:00:09:aa"); err != nil || len(m.MACs) != 2 {
		t.Fatalf("AddMAC again: %v, %v", m, err)
	}
	// Another machine's MAC is refused, naming the owner.
	_, err = r.AddMAC(ctx, "a", mac(9, 2))
	var taken *registry.MACTakenError
	if !errors.As(err, &taken) || taken.Owner != "b" || taken.MAC != mac(9, 2) || !strings.Contains(err.Error(), "machine b") {
		t.Fatalf("AddMAC of b's MAC: %v", err)
	}
	// So is registering a new machine with it.
	_, _, err = r.Register(ctx, registry.Registration{ID: "c", MACs: []string{mac(9, 3), mac(9, 1)}})
	if !errors.As(err, &taken) || taken.Owner != "a" {
		t.Fatalf("Register with a's MAC: %v", err)
	}
	if _, err := r.Get(ctx, "c"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("a refused registration was stored: %v", err)
	}
	if mk := keys(t, cli, "macs/"); len(mk) != 3 || mk[mac(9, 3)] != "" {
		t.Fatalf("MAC index %v", mk)
	}
	if _, err := r.ByMAC(ctx, mac(9, 9)); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("ByMAC of an unknown MAC: %v", err)
	}
	if _, err := r.ByMAC(ctx, "garbage"); err == nil {
		t.Fatal("ByMAC of garbage succeeded")
	}
	if _, err := r.AddMAC(ctx, "a", "garbage"); err == nil {
		t.Fatal("AddMAC of garbage succeeded")
	}
	if _, err := r.AddMAC(ctx, "nobody", mac(9, 4)); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("AddMAC to a missing machine: %v", err)
	}
	// Delete frees every MAC of the machine.
	if err := r.Delete(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if mk := keys(t, cli, "macs/"); len(mk) != 1 || mk[mac(9, 2)] != "b" {
		t.Fatalf("MAC index after Delete: %v", mk)
	}
}

func TestSecret(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	c := cluster("10.10.0.1", 10)
	secrets := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range secrets {
		r := newRegistry(t, cli, c, fmt.Sprintf("replica-%d", i))
		wg.Go(func() {
			k, err := r.Secrets(ctxT(t))
			if err != nil {
				t.Error(err)
			}
			secrets[i] = k.Current
		})
	}
	wg.Wait()
	if len(secrets[0]) < 32 {
		t.Fatalf("secret of %d bytes", len(secrets[0]))
	}
	for i, s := range secrets {
		if string(s) != string(secrets[0]) {
			t.Fatalf("replica %d has another secret", i)
		}
	}
	// A registry started later reads the same one, from etcd.
	k, err := newRegistry(t, cli, c, "late").Secrets(ctxT(t))
	if err != nil || string(k.Current) != string(secrets[0]) || k.Previous != nil {
		t.Fatalf("late replica: %v", err)
	}
	// Another prefix is another cluster.
	other := registry.New(cli, registry.Options{Prefix: "/other/", Cluster: c, Replica: "x"})
	if k, err := other.Secrets(ctxT(t)); err != nil || string(k.Current) == string(secrets[0]) {
		t.Fatalf("another prefix shares the secret: %v", err)
	}
}

// clock is a settable Now.
type clock struct{ ns atomic.Int64 }

func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()).UTC() }
func (c *clock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }

func TestExpireInstalls(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	clk := &clock{}
	clk.Set(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	r := registry.New(cli, registry.Options{Prefix: etcdtest.Prefix(t), Cluster: cluster("10.11.0.1", 10), Replica: "sweeper", Now: clk.Now})
	ctx := ctxT(t)
	const timeout = 30 * time.Minute
	for _, id := range []string{"old", "young", "idle", "done"} {
		register(t, r, id) // no MAC: a machine identified by serial alone
	}
	start := func(id string) {
		t.Helper()
		if _, err := r.Update(ctx, id, func(m *machine.Machine) error { return m.StartInstall(r.Replica(), clk.Now()) }); err != nil {
			t.Fatal(err)
		}
	}
	start("old")
	start("done")
	if _, err := r.Update(ctx, "done", func(m *machine.Machine) error { return m.MarkInstalled(r.Replica(), clk.Now()) }); err != nil {
		t.Fatal(err)
	}
	clk.Add(20 * time.Minute)
	start("young")
	clk.Add(11 * time.Minute) // old: 31m, young: 11m

	expired, err := r.ExpireInstalls(ctx, timeout)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(expired) != "[old]" {
		t.Fatalf("expired %v, want [old]", expired)
	}
	old, _ := r.Get(ctx, "old")
	if old.State != machine.Failed || !strings.Contains(old.FailReason, "30m") || !old.Since.Equal(clk.Now()) {
		t.Fatalf("old: %s since %v, reason %q", old.State, old.Since, old.FailReason)
	}
	if last := old.History[len(old.History)-1]; last.State != machine.Failed || last.Replica != "sweeper" || last.Reason != old.FailReason {
		t.Fatalf("old: last event %+v", last)
	}
	for id, want := range map[string]machine.State{"young": machine.Installing, "idle": machine.Configured, "done": machine.Installed} {
		if m, err := r.Get(ctx, id); err != nil || m.State != want {
			t.Fatalf("%s: %v, %v; want %s untouched", id, m, err, want)
		}
	}
	// A second sweep finds nothing new; a later one takes young.
	if expired, err := r.ExpireInstalls(ctx, timeout); err != nil || len(expired) != 0 {
		t.Fatalf("second sweep: %v, %v", expired, err)
	}
	clk.Add(20 * time.Minute)
	if expired, err := r.ExpireInstalls(ctx, timeout); err != nil || fmt.Sprint(expired) != "[young]" {
		t.Fatalf("later sweep: %v, %v", expired, err)
	}
	// A late success still counts.
	if m, err := r.Update(ctx, "old", func(m *machine.Machine) error { return m.MarkInstalled("r0", clk.Now()) }); err != nil || m.State != machine.Installed || m.FailReason != "" {
		t.Fatalf("late success: %v, %v", m, err)
	}
}

func TestEtcdOutage(t *testing.T) {
	t.Parallel()
	srv := etcdtest.StartServer(t)
	r := registry.New(srv.Client, registry.Options{Prefix: etcdtest.Prefix(t), Cluster: cluster("10.12.0.1", 10), Replica: "r0", Timeout: time.Second})
	register(t, r, "before", mac(12, 1))
	srv.Stop()

	ctx := ctxT(t)
	checks := map[string]func() error{
		"Register": func() error {
			_, _, err := r.Register(ctx, registry.Registration{ID: "after", MACs: []string{mac(12, 2)}})
			return err
		},
		"Get":  func() error { _, err := r.Get(ctx, "before"); return err },
		"List": func() error { _, _, err := r.List(ctx); return err },
		"Update": func() error {
			_, err := r.Update(ctx, "before", func(*machine.Machine) error { return nil })
			return err
		},
		"Secrets": func() error { _, err := r.Secrets(ctx); return err },
	}
	for name, f := range checks {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			err := f()
			took := time.Since(start)
			t.Logf("%s with etcd down: %v after %v", name, err, took.Round(time.Millisecond))
			if err == nil {
				t.Fatalf("%s with etcd down succeeded", name)
			}
			if !strings.Contains(err.Error(), "etcd") {
				t.Errorf("%s: %q does not mention etcd", name, err)
			}
			if errors.Is(err, registry.ErrNotFound) {
				t.Errorf("%s: an outage reported as not found: %v", name, err)
			}
			if took > 3*time.Second {
				t.Errorf("%s took %v with a 1s request timeout", name, took)
			}
		})
	}
}

// No client can grow a record's MAC list (and its transactions) without
// bound: etcd refuses transactions of more than 128 operations.
func TestMACsPerMachineAreBounded(t *testing.T) {
	cli := etcdtest.Start(t)
	r := newRegistry(t, cli, cluster("10.0.3.10", 10), "r1")
	ctx := ctxT(t)
	var many []string
	for i := 0; i <= registry.MaxMACs; i++ {
		many = append(many, mac(9, i))
	}
	if _, _, err := r.Register(ctx, registry.Registration{ID: "too-many", MACs: many}); !errors.Is(err, registry.ErrTooManyMACs) {
		t.Fatalf("register with %d MACs: %v", len(many), err)
	}
	if _, _, err := r.Register(ctx, registry.Registration{ID: "m"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < registry.MaxMACs; i++ {
		if _, err := r.AddMAC(ctx, "m", mac(8, i)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := r.AddMAC(ctx, "m", mac(8, 200)); !errors.Is(err, registry.ErrTooManyMACs) {
		t.Fatalf("MAC %d: %v", registry.MaxMACs+1, err)
	}
	if err := r.Delete(ctx, "m"); err != nil {
		t.Fatalf("delete with %d MACs: %v", registry.MaxMACs, err)
	}
}

// A change that panics fails its request; it does not end the replica (the
// STM runs changes in a goroutine of its own).
func TestUpdatePanicIsAnError(t *testing.T) {
	r := newRegistry(t, etcdtest.Start(t), cluster("10.0.0.10", 4), "r")
	ctx := ctxT(t)
	if _, _, err := r.Register(ctx, registry.Registration{ID: "sn-panic"}); err != nil {
		t.Fatal(err)
	}
	_, err := r.Update(ctx, "sn-panic", func(m *machine.Machine) error {
		var nilMap map[string]int
		nilMap["x"] = 1
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "failed") {
		t.Fatalf("a panicking change: %v", err)
	}
}
