package registry_test

// Random serials under registration: open cost the attacker, not the
// fleet: registration on first contact is rate limited, and machines that
// registered but never installed give their address back.

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
)

func TestSelfRegistrationIsRateLimited(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	clk := &clock{}
	clk.Set(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	c := cluster("10.12.0.1", 50, core)
	c.SelfRegistration = config.SelfRegistration{PerSecond: 1, Burst: 5}
	reg := prometheus.NewRegistry()
	r := registry.New(cli, registry.Options{Prefix: etcdtest.Prefix(t), Cluster: c, Replica: "r", Now: clk.Now, Registerer: reg})
	ctx := ctxT(t)
	for i := 0; i < 5; i++ {
		register(t, r, "rnd-"+string(rune('a'+i)), mac(12, i))
	}
	// The same machine again is no new machine: not charged, not refused.
	if _, created, err := r.Register(ctx, registry.Registration{ID: "rnd-a", MACs: []string{mac(12, 0)}}); err != nil || created {
		t.Fatalf("known machine: created=%v, %v", created, err)
	}
	_, _, err := r.Register(ctx, registry.Registration{ID: "rnd-f", MACs: []string{mac(12, 5)}})
	if !errors.Is(err, registry.ErrRateLimited) {
		t.Fatalf("sixth new machine within the burst of 5: %v", err)
	}
	if _, err := r.Get(ctx, "rnd-f"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("a refused registration left a record: %v", err)
	}
	if ks := keys(t, cli, "macs/"); ks[mac(12, 5)] != "" || len(keys(t, cli, "addresses/")) != 5 {
		t.Fatalf("a refused registration took keys: %v", ks)
	}
	if got := gathered(t, reg, "mayu_registrations_refused_total"); got != 1 {
		t.Fatalf("mayu_registrations_refused_total = %v", got)
	}
	// An operator's add is never limited.
	if _, created, err := r.Register(ctx, registry.Registration{ID: "added", Preregistered: true}); err != nil || !created {
		t.Fatalf("mayuctl add while the bucket is empty: %v", err)
	}
	// The bucket refills: one a second.
	clk.Add(time.Second)
	register(t, r, "rnd-f", mac(12, 5))
	if _, _, err := r.Register(ctx, registry.Registration{ID: "rnd-g"}); !errors.Is(err, registry.ErrRateLimited) {
		t.Fatalf("second machine within the same second: %v", err)
	}
}

// gathered sums the samples of a counter family in reg.
func gathered(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

func TestSelfRegisteredMachinesThatNeverInstallExpire(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	clk := &clock{}
	clk.Set(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	// Six addresses and a profile of two: the machines below take all.
	c := cluster("10.13.0.1", 6, config.Profile{Name: "core", Quantity: 2})
	newReg := func(name string, reg prometheus.Registerer) *registry.Registry {
		return registry.New(cli, registry.Options{Prefix: etcdtest.Prefix(t), Cluster: c, Replica: name, Now: clk.Now, Registerer: reg})
	}
	metrics := prometheus.NewRegistry()
	r := newReg("r1", metrics)
	ctx := ctxT(t)
	step := func(id string, f func(*machine.Machine) error) {
		t.Helper()
		if _, err := r.Update(ctx, id, f); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	stale1 := register(t, r, "stale-1", mac(13, 1)) // takes core slot 0
	register(t, r, "stale-2", mac(13, 2), mac(13, 3))
	if _, _, err := r.Register(ctx, registry.Registration{ID: "added", MACs: []string{mac(13, 4)}, Preregistered: true}); err != nil {
		t.Fatal(err)
	}
	register(t, r, "installing", mac(13, 5))
	step("installing", func(m *machine.Machine) error { return m.StartInstall("r1", clk.Now()) })
	register(t, r, "reinstalled", mac(13, 6))
	step("reinstalled", func(m *machine.Machine) error { return m.StartInstall("r1", clk.Now()) })
	step("reinstalled", func(m *machine.Machine) error { return m.MarkInstalled("r1", clk.Now()) })
	step("reinstalled", func(m *machine.Machine) error { return m.Reinstall("r1", clk.Now()) })
	const after = time.Hour
	clk.Add(after / 2)
	register(t, r, "young", mac(13, 7))
	if _, _, err := r.Register(ctx, registry.Registration{ID: "newcomer", MACs: []string{mac(13, 8)}}); !errors.Is(err, registry.ErrExhausted) {
		t.Fatalf("a seventh machine in a range of six: %v", err)
	}

	if ids, err := r.ExpireRegistrations(ctx, after); err != nil || len(ids) != 0 {
		t.Fatalf("sweep before the time: %v, %v", ids, err)
	}
	clk.Add(after/2 + time.Second)
	// Two replicas sweep at once: each machine is deleted once.
	var mu sync.Mutex
	var expired []string
	var wg sync.WaitGroup
	metrics2 := prometheus.NewRegistry()
	for _, rr := range []*registry.Registry{r, newReg("r2", metrics2)} {
		wg.Go(func() {
			ids, err := rr.ExpireRegistrations(ctx, after)
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			expired = append(expired, ids...)
			mu.Unlock()
		})
	}
	wg.Wait()
	sort.Strings(expired)
	if len(expired) != 2 || expired[0] != "stale-1" || expired[1] != "stale-2" {
		t.Fatalf("expired %v, want [stale-1 stale-2]", expired)
	}
	for _, id := range []string{"added", "installing", "reinstalled", "young"} {
		if _, err := r.Get(ctx, id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
	// Everything they held is free: record, MACs, addresses, profile slot.
	for _, id := range expired {
		if _, err := r.Get(ctx, id); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("%s still there: %v", id, err)
		}
	}
	for k, owner := range keys(t, cli, "") {
		if owner == "stale-1" || owner == "stale-2" {
			t.Errorf("key %s still points at %s", k, owner)
		}
	}
	// Counted once each, by whichever replica deleted it.
	if got := gathered(t, metrics, "mayu_registrations_expired_total") + gathered(t, metrics2, "mayu_registrations_expired_total"); got != 2 {
		t.Errorf("mayu_registrations_expired_total = %v on both replicas, want 2", got)
	}
	// The range has room again; the freed profile slot is handed out.
	m, created, err := r.Register(ctx, registry.Registration{ID: "newcomer", MACs: []string{mac(13, 1)}})
	if err != nil || !created {
		t.Fatalf("newcomer after the sweep: %v", err)
	}
	if m.InternalAddr != stale1.InternalAddr || m.Profile != "core" || m.ProfileSlot != stale1.ProfileSlot {
		t.Fatalf("newcomer got %s %s/%d, stale-1 had %s %s/%d", m.InternalAddr, m.Profile, m.ProfileSlot,
			stale1.InternalAddr, stale1.Profile, stale1.ProfileSlot)
	}
}

// Known follows the MACs of every registered machine, whatever its state.
func TestKnownFollowsRegisteredMACs(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	r := newRegistry(t, cli, cluster("10.14.0.1", 10), "r")
	register(t, r, "before", mac(14, 1))
	k := registry.NewKnown()
	ctx := ctxT(t)
	go r.FollowKnown(ctx, k, slog.New(slog.NewTextHandler(io.Discard, nil)))
	wait := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	wait("loaded", func() bool { return k.Has(mac(14, 1)) })
	register(t, r, "after", mac(14, 2))
	wait("registered", func() bool { return k.Has(mac(14, 2)) })
	if _, err := r.AddMAC(ctx, "after", mac(14, 3)); err != nil {
		t.Fatal(err)
	}
	wait("MAC added", func() bool { return k.Has(mac(14, 3)) })
	if err := r.Delete(ctx, "after"); err != nil {
		t.Fatal(err)
	}
	wait("deleted", func() bool { return !k.Has(mac(14, 2)) && !k.Has(mac(14, 3)) })
	if k.Has(mac(14, 9)) || !k.Has(mac(14, 1)) {
		t.Fatal("unknown MAC known, or known MAC lost")
	}
}

// Random serials under registration: open cannot take the static range:
// at most max_unfinished machines registered on first contact and not
// installed exist at once, even when they all ask at the same instant; a
// failed one counts until an operator acts, a never-started one expires.
func TestRandomSerialsCannotTakeTheRange(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	clk := &clock{}
	clk.Set(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	c := cluster("10.15.0.1", 50)
	c.SelfRegistration = config.SelfRegistration{PerSecond: 1000, Burst: 1000, MaxUnfinished: 5}
	metrics := prometheus.NewRegistry()
	r := registry.New(cli, registry.Options{Prefix: etcdtest.Prefix(t), Cluster: c, Replica: "r", Now: clk.Now, Registerer: metrics})
	ctx := ctxT(t)
	k := registry.NewKnown()
	r.UseKnown(k) // as pkg/server does: registrations count from now on
	go r.FollowKnown(ctx, k, slog.New(slog.NewTextHandler(io.Discard, nil)))

	// 40 at once on one replica: 5 made, 35 told to wait.
	var wg sync.WaitGroup
	var made, refused atomic.Int32
	for i := range 40 {
		wg.Go(func() {
			_, created, err := r.Register(ctx, registry.Registration{ID: fmt.Sprintf("rnd-%02d", i), MACs: []string{mac(15, i)}})
			switch {
			case err == nil && created:
				made.Add(1)
			case errors.Is(err, registry.ErrTooManyUnfinished):
				refused.Add(1)
			default:
				t.Errorf("rnd-%02d: created=%v, %v", i, created, err)
			}
		})
	}
	wg.Wait()
	if made.Load() != 5 || refused.Load() != 35 {
		t.Fatalf("%d made, %d refused, want 5 and 35", made.Load(), refused.Load())
	}
	if got := gathered(t, metrics, "mayu_registrations_refused_total"); got != 35 {
		t.Errorf("mayu_registrations_refused_total = %v", got)
	}
	// An operator's add is not capped, nor counted.
	if _, _, err := r.Register(ctx, registry.Registration{ID: "added", Preregistered: true}); err != nil {
		t.Fatal(err)
	}
	ms, _, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, m := range ms {
		if !m.Preregistered {
			ids = append(ids, m.ID)
		}
	}
	sort.Strings(ids)
	// One fails (fetching its first stage and reporting a failure), one
	// installs; the other three never start.
	for _, f := range []func(*machine.Machine) error{
		func(m *machine.Machine) error { return m.StartInstall("r", clk.Now()) },
		func(m *machine.Machine) error { return m.MarkFailed("made up", "r", clk.Now()) },
	} {
		if _, err := r.Update(ctx, ids[0], f); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []func(*machine.Machine) error{
		func(m *machine.Machine) error { return m.StartInstall("r", clk.Now()) },
		func(m *machine.Machine) error { return m.MarkInstalled("r", clk.Now()) },
	} {
		if _, err := r.Update(ctx, ids[1], f); err != nil {
			t.Fatal(err)
		}
	}
	for deadline := time.Now().Add(10 * time.Second); k.Unfinished() != 4; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d unfinished machines seen, want 4", k.Unfinished())
		}
	}
	clk.Add(2 * time.Hour)
	expired, err := r.ExpireRegistrations(ctx, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(expired)
	if !slices.Equal(expired, ids[2:]) {
		t.Fatalf("expired %v, want the three that never started %v", expired, ids[2:])
	}
	// The failed one waits for an operator and still counts: 1 of 5.
	for i := range 4 {
		register(t, r, fmt.Sprintf("late-%d", i), mac(16, i))
	}
	if _, _, err := r.Register(ctx, registry.Registration{ID: "late-4", MACs: []string{mac(16, 4)}}); !errors.Is(err, registry.ErrTooManyUnfinished) {
		t.Fatalf("a sixth unfinished machine: %v", err)
	}
	for _, id := range []string{"added", ids[0], ids[1]} {
		if _, err := r.Get(ctx, id); err != nil {
			t.Errorf("%s: %v", id, err)
		}
	}
}
