package fleet_test

// Benchmarks at fleet scale, run by bench/fleet.sh (make bench, not make
// test): FLEET_MACHINES (default 20000) machines in a real etcd (fsync on).

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/internal/fleet"
	"github.com/mayu-boot/mayu/pkg/admin"
	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/registry"
	"github.com/mayu-boot/mayu/pkg/state"
)

var profiles = []config.Profile{{Name: "core", Quantity: 3}, {Name: "worker", Quantity: 10}}

// The generator writes what the registry and the lease store read back,
// and a registration afterwards goes on where the fleet ends.
func TestFill(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := fleet.Cluster(1000, profiles...)
	o := fleet.Options{Prefix: etcdtest.Prefix(t), Cluster: c, Machines: 150, Leases: 300, Pool: fleet.Pool(1000)}
	if err := fleet.Fill(ctx, cli, o); err != nil {
		t.Fatal(err)
	}
	r := registry.New(cli, registry.Options{Prefix: o.Prefix, Cluster: c, Replica: "t"})
	ms, bad, err := r.List(ctx)
	if err != nil || len(bad) != 0 || len(ms) != 150 {
		t.Fatalf("%d machines, corrupt %v, %v", len(ms), bad, err)
	}
	if m, err := r.ByMAC(ctx, fleet.MAC(7)); err != nil || m.ID != fleet.MachineID(7) || m.InternalAddr != "10.64.0.8" || m.Profile != "worker" {
		t.Fatalf("machine 7: %+v, %v", m, err)
	}
	ls, badLeases, err := lease.NewStore(cli, state.Keys{Prefix: o.Prefix}, 0).Load(ctx)
	if err != nil || len(badLeases) != 0 || len(ls) != 300 {
		t.Fatalf("%d leases, corrupt %v, %v", len(ls), badLeases, err)
	}
	m, _, err := r.Register(ctx, registry.Registration{ID: "after", MACs: []string{"52:54:00:ff:00:01"}})
	if err != nil || m.InternalAddr != "10.64.0.151" || m.Profile != "default" {
		t.Fatalf("registration after the fill: %+v, %v", m, err)
	}
}

// fleetSize is FLEET_MACHINES, default 20000.
func fleetSize(b *testing.B) int {
	if v := os.Getenv("FLEET_MACHINES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatalf("FLEET_MACHINES=%q", v)
		}
		return n
	}
	return 20000
}

// filled is an etcd holding n machines, and a registry on it.
func filled(b *testing.B, n int) (*clientv3.Client, *registry.Registry, config.Cluster) {
	b.Helper()
	cli := etcdtest.Start(b)
	c := fleet.Cluster(n+1_000_000, profiles...)
	c.SelfRegistration = config.SelfRegistration{PerSecond: 1e9, Burst: 1 << 30} // the transaction, not the limit
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	start := time.Now()
	if err := fleet.Fill(ctx, cli, fleet.Options{Prefix: etcdtest.Prefix(b), Cluster: c, Machines: n}); err != nil {
		b.Fatal(err)
	}
	if n > 0 {
		b.Logf("filled %d machines in %v", n, time.Since(start).Round(time.Millisecond))
	}
	return cli, registry.New(cli, registry.Options{Prefix: etcdtest.Prefix(b), Cluster: c, Replica: "bench"}), c
}

// BenchmarkRegisterFleet is a first contact (the registration
// transaction with the reads that prepare it) with no machine registered
// and with FLEET_MACHINES, each on an etcd of its own: the two alternate,
// so that a busy machine slows both alike. Reported: ms of each, and
// their ratio (target at most 1.2); and etcd-put-ratio, the same ratio of
// a plain write of one key, which is etcd's own share of the difference.
func BenchmarkRegisterFleet(b *testing.B) {
	emptyCli, empty, _ := filled(b, 0)
	fullCli, full, _ := filled(b, fleetSize(b))
	time.Sleep(time.Second) // let etcd settle after the fill
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	var took, put [2]time.Duration
	i := 0
	for b.Loop() {
		// A plain write of one key on each etcd, for what etcd itself
		// costs more with a larger database.
		for j, cli := range []*clientv3.Client{emptyCli, fullCli} {
			start := time.Now()
			if _, err := cli.Put(ctx, etcdtest.Prefix(b)+"bench/put", "x"); err != nil {
				b.Fatal(err)
			}
			put[j] += time.Since(start)
		}
		for j, r := range []*registry.Registry{empty, full} {
			id := fmt.Sprintf("bench-%d", i)
			start := time.Now()
			if _, created, err := r.Register(ctx, registry.Registration{ID: id, MACs: []string{fleet.MAC(1<<24 + i)}}); err != nil || !created {
				b.Fatalf("register %s: created=%v, %v", id, created, err)
			}
			took[j] += time.Since(start)
		}
		i++
	}
	b.ReportMetric(float64(took[0].Microseconds())/1000/float64(b.N), "ms-empty")
	b.ReportMetric(float64(took[1].Microseconds())/1000/float64(b.N), "ms-fleet")
	b.ReportMetric(float64(took[1])/float64(took[0]), "ratio")
	b.ReportMetric(float64(put[1])/float64(put[0]), "etcd-put-ratio")
}

// BenchmarkListFleet pages through FLEET_MACHINES machines through the
// admin API with the client mayuctl list uses (api.Client.List: page
// after page of the default size), and with pages of 5000.
func BenchmarkListFleet(b *testing.B) {
	n := fleetSize(b)
	cli, r, c := filled(b, n)
	const token = "bench-token"
	srv := httptest.NewServer(admin.New(admin.Options{Machines: r, Token: token, Config: &config.Config{Cluster: c},
		Leases: lease.NewStore(cli, state.Keys{Prefix: etcdtest.Prefix(b)}, 0)}))
	defer srv.Close()
	client := &api.Client{BaseURL: srv.URL, Token: token}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b.Run("client.List", func(b *testing.B) {
		for b.Loop() {
			l, err := client.List(ctx)
			if err != nil || len(l.Machines) != n {
				b.Fatalf("%d machines, %v", len(l.Machines), err)
			}
		}
	})
	b.Run("pages=5000", func(b *testing.B) {
		for b.Loop() {
			got, cont := 0, ""
			for {
				p, err := client.ListPage(ctx, registry.MaxPageSize, cont)
				if err != nil {
					b.Fatal(err)
				}
				got += len(p.Machines)
				if cont = p.Continue; cont == "" {
					break
				}
			}
			if got != n {
				b.Fatalf("%d machines, want %d", got, n)
			}
		}
	})
}
