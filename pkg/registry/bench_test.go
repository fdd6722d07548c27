package registry_test

// Benchmarks of the registry's hot paths against a real embedded etcd
// (fsync on), run by `make bench` (bench/README.md).

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/registry"
)

// BenchmarkRegister is a first contact: the registration transaction of a
// new machine (record, MAC index, static address, profile slot), with the
// reads that prepare it. Its cost does not grow with the machines already
// registered (the allocator's hints, alloc.go): internal/fleet's
// BenchmarkRegisterFleet compares it at 0 and 20,000 machines.
func BenchmarkRegister(b *testing.B) {
	cli := etcdtest.Start(b)
	c := cluster("10.1.0.1", 60000, core, worker)
	// The transaction, not the first-contact rate limit, is measured.
	c.SelfRegistration = config.SelfRegistration{PerSecond: 1e9, Burst: 1 << 30}
	r := registry.New(cli, registry.Options{Prefix: etcdtest.Prefix(b), Cluster: c, Replica: "bench"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id := fmt.Sprintf("bench-%d", i)
		if _, created, err := r.Register(ctx, registry.Registration{ID: id, MACs: []string{mac(i>>8, i&0xff)}}); err != nil || !created {
			b.Fatalf("register %s: created=%v, %v", id, created, err)
		}
		i++
	}
}

// BenchmarkByMAC is what the iPXE script request and the installed-MAC
// check start with: the machine behind a MAC (two reads).
func BenchmarkByMAC(b *testing.B) {
	cli := etcdtest.Start(b)
	c := cluster("10.1.0.1", 1000, core, worker)
	r := registry.New(cli, registry.Options{Prefix: etcdtest.Prefix(b), Cluster: c, Replica: "bench"})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	const machines = 100
	for i := 0; i < machines; i++ {
		if _, _, err := r.Register(ctx, registry.Registration{ID: fmt.Sprintf("bench-%d", i), MACs: []string{mac(1, i)}}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := r.ByMAC(ctx, mac(1, i%machines)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}
