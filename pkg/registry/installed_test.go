package registry_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
)

// follow starts following the installed MACs, as a replica does, and
// waits for the first load.
func follow(t *testing.T, r *registry.Registry) *registry.Installed {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	t.Cleanup(func() { cancel(); <-done })
	s := registry.NewInstalled()
	go func() {
		defer close(done)
		r.FollowInstalled(ctx, s, slog.New(slog.DiscardHandler))
	}()
	select {
	case <-s.Ready():
	case <-time.After(10 * time.Second):
		t.Fatal("installed MACs not loaded")
	}
	return s
}

func install(t *testing.T, r *registry.Registry, id string) {
	t.Helper()
	for _, step := range []func(*machine.Machine) error{
		func(m *machine.Machine) error { return m.StartInstall("t", time.Now()) },
		func(m *machine.Machine) error { return m.MarkInstalled("t", time.Now()) },
	} {
		if _, err := r.Update(ctxT(t), id, step); err != nil {
			t.Fatal(err)
		}
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Stored data never turns against a machine: garbage in the record of an
// installed machine keeps DHCP silent to its MACs (before, the watch
// dropped them and the next network boot installed the machine again);
// deleting the record un-silences them.
func TestCorruptRecordKeepsMACsSilenced(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	r := newRegistry(t, cli, cluster("10.13.0.1", 10), "r0")
	ctx := ctxT(t)
	p := etcdtest.Prefix(t)
	register(t, r, "inst", mac(13, 1), mac(13, 2))
	install(t, r, "inst")
	register(t, r, "conf", mac(13, 3)) // configured: answered
	s := follow(t, r)
	if !s.Has(mac(13, 1)) || !s.Has(mac(13, 2)) || s.Has(mac(13, 3)) {
		t.Fatal("installed MACs not followed")
	}

	// Garbage into the installed machine's record, as a bad etcdctl put
	// or a bug would leave it.
	for i, garbage := range []string{"{not json", `{"id":"inst","state":"exploded"}`, `{"id":"other"}`} {
		if _, err := cli.Put(ctx, p+"machines/inst", garbage); err != nil {
			t.Fatal(err)
		}
		// A later change that the follower must have seen after the garbage.
		marker := fmt.Sprintf("marker-%d", i)
		register(t, r, marker, mac(13, 0x10+i))
		install(t, r, marker)
		eventually(t, "marker followed", func() bool { return s.Has(mac(13, 0x10+i)) })
		if !s.Has(mac(13, 1)) || !s.Has(mac(13, 2)) {
			t.Fatalf("garbage %q in the record un-silenced the installed machine's MACs", garbage)
		}
	}

	// A replica that starts now knows the machine only from the MAC index.
	fresh := follow(t, r)
	if !fresh.Has(mac(13, 1)) || !fresh.Has(mac(13, 2)) {
		t.Fatal("a replica loading a corrupt record answers its MACs")
	}
	if fresh.Has(mac(13, 3)) {
		t.Fatal("a configured machine is silenced")
	}

	// A configured machine whose record turns to garbage is silenced too:
	// its state is unknown.
	if _, err := cli.Put(ctx, p+"machines/conf", "\x00garbage"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "corrupt configured record silenced", func() bool { return s.Has(mac(13, 3)) && fresh.Has(mac(13, 3)) })

	// Deleting the record (etcdctl del, or mayuctl delete) un-silences.
	if _, err := cli.Delete(ctx, p+"machines/inst"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "deleted record un-silenced", func() bool {
		return !s.Has(mac(13, 1)) && !s.Has(mac(13, 2)) && !fresh.Has(mac(13, 1)) && !fresh.Has(mac(13, 2))
	})
	if err := r.Delete(ctx, "conf"); err != nil {
		t.Fatal(err)
	}
	eventually(t, "mayuctl delete un-silenced", func() bool { return !s.Has(mac(13, 3)) && !fresh.Has(mac(13, 3)) })
	if again := follow(t, r); again.Has(mac(13, 1)) || again.Has(mac(13, 3)) {
		t.Fatal("a deleted machine's MACs are silenced after a reload")
	}
}

// What a machine sent is stored escaped and bounded, whoever passed it on.
func TestRegisterStoresNodeTextEscaped(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	r := newRegistry(t, cli, cluster("10.14.0.1", 10), "r0")
	m, _, err := r.Register(ctxT(t), registry.Registration{ID: "esc", Serial: "sn\x1b[31m\u009b", Arch: "x86_64\x1b]0;t\x07" + string(make([]byte, 100))})
	if err != nil {
		t.Fatal(err)
	}
	got, err := r.Get(ctxT(t), "esc")
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range []*machine.Machine{m, got} {
		if rec.Serial != `sn\x1b[31m\u009b` || len(rec.Arch) > registry.MaxArch+3 || !strings.HasPrefix(rec.Arch, `x86_64\x1b]0;t\x07\x00`) {
			t.Fatalf("stored serial %q, arch %q", rec.Serial, rec.Arch)
		}
	}
}

// The installed MACs stay right when etcd compacts away the revision the
// watch was to resume from (changes made and compacted between the load
// and the watch): the set is loaded afresh, and mayu_watch_resyncs_total
// says so. Before, nothing counted it; a set that resumed the watch after
// such a gap would keep the reinstalled machine silenced and answer the
// newly installed one.
func TestInstalledResyncsAfterCompaction(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	reg := prometheus.NewRegistry()
	r := registry.New(cli, registry.Options{Prefix: etcdtest.Prefix(t), Cluster: cluster("10.8.0.1", 10), Replica: "r0", Registerer: reg})
	for i, id := range []string{"a", "b", "c"} {
		register(t, r, id, mac(8, i))
	}
	install(t, r, "a")
	install(t, r, "b")
	first := true
	registry.AfterInstalledLoad(r, func() {
		if !first {
			return
		}
		first = false
		install(t, r, "c")
		if _, err := r.Update(ctxT(t), "a", func(m *machine.Machine) error { return m.Reinstall("t", time.Now()) }); err != nil {
			t.Error(err)
		}
		resp, err := cli.Get(ctxT(t), "x")
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := cli.Compact(ctxT(t), resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
			t.Error(err)
		}
	})
	s := follow(t, r)
	resynced := func() bool {
		return testutil.ToFloat64(registryCounter(t, reg, "mayu_watch_resyncs_total", "compacted", "installed")) == 1
	}
	eventually(t, "a resync counted", resynced)
	eventually(t, "the set after the resync", func() bool { return !s.Has(mac(8, 0)) && s.Has(mac(8, 1)) && s.Has(mac(8, 2)) })
	// And the watch that follows works: b reinstalled is answered again.
	if _, err := r.Update(ctxT(t), "b", func(m *machine.Machine) error { return m.Reinstall("t", time.Now()) }); err != nil {
		t.Fatal(err)
	}
	eventually(t, "b answered again", func() bool { return !s.Has(mac(8, 1)) })
}

// registryCounter is the counter name{labels} gathered from reg, the
// label values in the order of the label names.
func registryCounter(t *testing.T, reg *prometheus.Registry, name string, labels ...string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	v := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			got := []string{}
			for _, l := range m.GetLabel() {
				got = append(got, l.GetValue())
			}
			if strings.Join(got, ",") == strings.Join(labels, ",") {
				v = m.GetCounter().GetValue()
			}
		}
	}
	c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
	c.Add(v)
	return c
}
