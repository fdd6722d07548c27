package dhcp

import (
	"context"
	"encoding/json"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/state"
)

// A new leader deletes from etcd, under its fence, the expired leases no
// full-mode pool holds: those of a pool switched to proxy mode and of a
// pool removed. Before, they were skipped at load and kept for ever
// (`mayuctl leases` listed them). One not expired yet stays, as do the
// full pool's, expired or not; a deposed leader deletes nothing.
func TestNewLeaderRemovesStaleLeases(t *testing.T) {
	cli := etcdtest.Start(t)
	keys := state.Keys{Prefix: prefix}
	now := time.Now()
	put := func(ip string, expiry time.Time) {
		t.Helper()
		v, err := json.Marshal(lease.Lease{IP: addr(ip), MAC: "52:54:00:00:00:01", Expiry: expiry, Leader: "old"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(context.Background(), keys.Lease(addr(ip)), string(v)); err != nil {
			t.Fatal(err)
		}
	}
	put("10.20.0.5", now.Add(-2*time.Hour)) // proxy pool, expired: goes
	put("10.20.0.6", now.Add(time.Hour))    // proxy pool, not expired: stays
	put("10.30.0.5", now.Add(-2*time.Hour)) // no pool, expired: goes
	put("10.30.0.6", now.Add(-time.Minute)) // no pool, expired within the grace: stays
	put("10.99.0.100", now.Add(-time.Hour)) // full pool, expired: stays (the same client gets it back)
	put("10.99.0.101", now.Add(time.Hour))  // full pool: stays
	remaining := func() []string {
		t.Helper()
		resp, err := cli.Get(context.Background(), keys.Leases(), clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		var ips []string
		for _, kv := range resp.Kvs {
			ips = append(ips, string(kv.Key[len(keys.Leases()):]))
		}
		slices.Sort(ips)
		return ips
	}
	full := config.Pool{Subnet: netip.MustParsePrefix("10.99.0.0/24"),
		Range: config.Range{Start: addr("10.99.0.100"), End: addr("10.99.0.199")}, LeaseTime: time.Hour}
	proxy := config.Pool{Subnet: netip.MustParsePrefix("10.20.0.0/22"), Mode: config.PoolProxy}
	start := func(store LeaseStore) *Server {
		return New(Options{Pools: []config.Pool{full, proxy}, Replica: "r", Leases: store,
			Installed: testfakes.NewInstalled(), Log: testLogger(t)})
	}

	// A leader whose term is over before it starts (its fence names an
	// election key that is gone) tries, and its fence refuses.
	tried := &countingRemoves{LeaseStore: lease.NewStore(cli, keys, 3*time.Second)}
	deposed := start(tried)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		deposed.Lead(ctx, election.Fence{Key: prefix + "election/gone", Rev: 1})
	}()
	waitFor(t, 5*time.Second, "the deposed leader tries a delete", func() bool { return tried.n.Load() > 0 })
	cancel()
	<-done
	if got := remaining(); len(got) != 6 {
		t.Fatalf("a deposed leader deleted leases: %v left", got)
	}

	srv := start(lease.NewStore(cli, keys, 3*time.Second))
	campaign(t, cli, srv, "r")
	want := []string{"10.20.0.6", "10.30.0.6", "10.99.0.100", "10.99.0.101"}
	waitFor(t, 10*time.Second, "stale leases deleted", func() bool { return slices.Equal(remaining(), want) })
	// Counted once each delete has returned, a moment after etcd shows it.
	waitFor(t, 5*time.Second, "stale_leases_removed_total 2", func() bool {
		return testutil.ToFloat64(srv.metrics.staleRemoved) == 2
	})
	if active, _ := srv.term.Load().pools[0].stats(time.Now()); active != 1 {
		t.Errorf("%d active leases loaded into the full pool, want 1", active)
	}
}

// countingRemoves counts the deletes tried through a LeaseStore.
type countingRemoves struct {
	LeaseStore
	n atomic.Int64
}

func (c *countingRemoves) Remove(ctx context.Context, f election.Fence, ip netip.Addr) error {
	c.n.Add(1)
	return c.LeaseStore.Remove(ctx, f, ip)
}
