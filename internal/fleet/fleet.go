// Package fleet fills etcd with a fleet: machine records and DHCP leases
// in mayu's real key format, written by transactions directly (the
// encoders of pkg/registry and pkg/lease, not JSON of its own), so that
// benchmarks and bench/fleet.sh can measure mayu at 20,000 machines and
// 100,000 leases without registering each one through the real write
// path. internal/cmd/fleetgen is its command.
package fleet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/registry"
	"github.com/mayu-boot/mayu/pkg/state"
)

// Options say what to write.
type Options struct {
	Prefix   string         // key prefix, ending in "/"
	Cluster  config.Cluster // the static range and profiles the machines get
	Machines int            // machine records, from the start of the static range
	Leases   int            // leases, from the start of Pool's range
	Pool     config.Range
	// Workers is how many transactions are in flight at once (default 4).
	Workers int
}

// perTxn keeps each transaction under etcd's default --max-txn-ops (128).
const perTxn = 120

// MachineID is the id of the i-th machine of a filled fleet.
func MachineID(i int) string { return fmt.Sprintf("fleet-%06d", i) }

// MAC is the MAC of the i-th machine (and of the i-th lease).
func MAC(i int) string {
	return net.HardwareAddr{0x02, 0x00, byte(i >> 24), byte(i >> 16), byte(i >> 8), byte(i)}.String()
}

// Fill writes o.Machines machines (as registrations in order would: the
// lowest addresses, profile slots in config order) and o.Leases leases,
// then builds the allocator's hints, as the first registration would.
func Fill(ctx context.Context, cli *clientv3.Client, o Options) error {
	if o.Workers <= 0 {
		o.Workers = 4
	}
	if o.Machines > o.Cluster.Static.Range.Size() {
		return fmt.Errorf("%d machines do not fit the static range %s", o.Machines, o.Cluster.Static.Range)
	}
	if o.Leases > o.Pool.Size() {
		return fmt.Errorf("%d leases do not fit the pool range %s", o.Leases, o.Pool)
	}
	reg := registry.New(cli, registry.Options{Prefix: o.Prefix, Cluster: o.Cluster, Replica: "fleetgen"})
	leases := lease.NewStore(cli, state.Keys{Prefix: o.Prefix}, 30*time.Second)

	txns := make(chan []clientv3.Op, o.Workers)
	gctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var failed error
	for range o.Workers {
		wg.Go(func() {
			for ops := range txns {
				cctx, done := context.WithTimeout(gctx, 30*time.Second)
				_, err := cli.Txn(cctx).Then(ops...).Commit()
				done()
				if err != nil {
					mu.Lock()
					if failed == nil {
						failed = fmt.Errorf("fill etcd: %w", err)
					}
					mu.Unlock()
					cancel()
				}
			}
		})
	}
	var once sync.Once
	stop := func() { once.Do(func() { close(txns) }) }
	defer stop()
	send := func(ops []clientv3.Op) error {
		select {
		case txns <- ops:
			return nil
		case <-gctx.Done():
			return gctx.Err()
		}
	}
	produce := func() error {
		var ops []clientv3.Op
		addr := o.Cluster.Static.Range.Start
		used := make([]int, len(o.Cluster.Profiles))
		for i := 0; i < o.Machines; i++ {
			profile, slot := config.Profile{Name: "default"}, -1
			for j, p := range o.Cluster.Profiles {
				if used[j] < p.Quantity {
					profile, slot = p, used[j]
					used[j]++
					break
				}
			}
			_, mops, err := reg.FillOps(registry.Registration{ID: MachineID(i), Serial: MachineID(i), MACs: []string{MAC(i)}, Arch: "x86_64"}, addr, profile, slot)
			if err != nil {
				return err
			}
			if len(ops)+len(mops) > perTxn {
				if err := send(ops); err != nil {
					return err
				}
				ops = nil
			}
			ops = append(ops, mops...)
			addr = addr.Next()
		}
		ip := o.Pool.Start
		expiry := time.Now().Add(24 * time.Hour)
		for i := 0; i < o.Leases; i++ {
			op, err := leases.PutOp(lease.Lease{IP: ip, MAC: MAC(i), Expiry: expiry, Hostname: fmt.Sprintf("host-%d", i), Leader: "fleetgen"})
			if err != nil {
				return err
			}
			if len(ops) == perTxn {
				if err := send(ops); err != nil {
					return err
				}
				ops = nil
			}
			ops = append(ops, op)
			ip = ip.Next()
		}
		if len(ops) > 0 {
			return send(ops)
		}
		return nil
	}
	err := produce()
	stop()
	wg.Wait()
	if failed != nil {
		return failed
	}
	if err != nil {
		return err
	}
	return reg.RebuildAllocators(ctx)
}

// Cluster is a cluster configuration for a fleet of up to n machines in
// 10.64.0.0/10 (static) with the profiles given, and Pool a pool range
// for up to n leases in 10.128.0.0/10: both far larger than any fleet
// benchmarked.
func Cluster(n int, profiles ...config.Profile) config.Cluster {
	start := netip.MustParseAddr("10.64.0.1")
	end := start
	for range n - 1 {
		end = end.Next()
	}
	return config.Cluster{
		Static: config.Static{
			Subnet: netip.MustParsePrefix("10.64.0.0/10"),
			Range:  config.Range{Start: start, End: end},
		},
		Profiles: profiles,
	}
}

// Pool is a pool range of n addresses from 10.128.0.1.
func Pool(n int) config.Range {
	start := netip.MustParseAddr("10.128.0.1")
	end := start
	for range n - 1 {
		end = end.Next()
	}
	return config.Range{Start: start, End: end}
}
