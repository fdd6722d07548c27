package registry_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
)

// countingClient is a client of the same etcd that counts the keys its
// reads return (ranges, and ranges inside transactions).
func countingClient(t *testing.T, cli *clientv3.Client) (*clientv3.Client, *atomic.Int64) {
	t.Helper()
	var n atomic.Int64
	count := func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		err := invoker(ctx, method, req, reply, cc, opts...)
		switch r := reply.(type) {
		case *pb.RangeResponse:
			n.Add(int64(len(r.Kvs)))
		case *pb.TxnResponse:
			for _, op := range r.Responses {
				if rr := op.GetResponseRange(); rr != nil {
					n.Add(int64(len(rr.Kvs)))
				}
			}
		}
		return err
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: cli.Endpoints(), DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(count)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, &n
}

// A registration reads a few keys, however many machines there are:
// before the allocator it read every address and profile-slot key (600
// here), so its cost grew with the fleet.
func TestRegisterReadsDoNotGrowWithTheFleet(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	c := cluster("10.5.0.1", 1000, core, worker)
	c.SelfRegistration = config.SelfRegistration{PerSecond: 1e9, Burst: 1 << 30}
	r := newRegistry(t, cli, c, "r0")
	for i := 0; i < 600; i++ {
		register(t, r, fmt.Sprintf("fleet-%d", i), mac(5+i>>8, i&0xff))
	}
	counted, reads := countingClient(t, cli)
	rc := registry.New(counted, registry.Options{Prefix: etcdtest.Prefix(t), Cluster: c, Replica: "r1"})
	reads.Store(0)
	m := register(t, rc, "fleet-new", mac(9, 1))
	if got := reads.Load(); got > 12 {
		t.Fatalf("one registration with 600 machines read %d keys, want a handful", got)
	}
	if m.InternalAddr != "10.5.2.89" { // the 601st address
		t.Fatalf("got %s, want the lowest free 10.5.2.89", m.InternalAddr)
	}
}

// Several replicas register and delete at once in a range too small for
// all: no address or slot is given twice, none outside the range, profile
// quantities are exact, and exhaustion is a clean error.
func TestRegisterConcurrentWithDeletesAndExhaustion(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	c := cluster("10.6.0.1", 40, core, worker)
	c.SelfRegistration = config.SelfRegistration{PerSecond: 1e9, Burst: 1 << 30}
	rg := c.Static.Range
	const replicas, each = 4, 15
	var wg sync.WaitGroup
	var exhausted, deleted atomic.Int64
	errs := make(chan error, replicas*each)
	for g := 0; g < replicas; g++ {
		r := newRegistry(t, cli, c, fmt.Sprintf("replica-%d", g))
		wg.Go(func() {
			for i := 0; i < each; i++ {
				id := fmt.Sprintf("n-%d-%02d", g, i)
				_, _, err := r.Register(ctxT(t), registry.Registration{ID: id, MACs: []string{mac(10+g, i)}})
				switch {
				case errors.Is(err, registry.ErrExhausted):
					exhausted.Add(1)
				case err != nil:
					errs <- fmt.Errorf("register %s: %w", id, err)
				case i%5 == 4:
					// Every fifth goes again at once: its address and slot
					// go back to the free set while others register.
					if err := r.Delete(ctxT(t), id); err != nil {
						errs <- fmt.Errorf("delete %s: %w", id, err)
					}
					deleted.Add(1)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	r := newRegistry(t, cli, c, "checker")
	ms, bad, err := r.List(ctxT(t))
	if err != nil || len(bad) != 0 {
		t.Fatalf("List: %v, %v", err, bad)
	}
	if n := int64(len(ms)) + deleted.Load() + exhausted.Load(); n != replicas*each {
		t.Fatalf("%d machines + %d deleted + %d refused, want %d", len(ms), deleted.Load(), exhausted.Load(), replicas*each)
	}
	// Fill what is left: every freed address must be given again, so the
	// range ends with exactly 40 machines, then refuses cleanly.
	for i := 0; ; i++ {
		_, _, err := r.Register(ctxT(t), registry.Registration{ID: fmt.Sprintf("fill-%d", i), MACs: []string{mac(20, i)}})
		if errors.Is(err, registry.ErrExhausted) {
			break
		}
		if err != nil || i > 40 {
			t.Fatalf("filling the range: %d, %v", i, err)
		}
	}
	if ms, _, err = r.List(ctxT(t)); err != nil || len(ms) != 40 {
		t.Fatalf("%d machines in a range of 40 (%v)", len(ms), err)
	}
	addrs, slots, profiles := map[string]string{}, map[string]string{}, map[string]int{}
	for _, m := range ms {
		a := netip.MustParseAddr(m.InternalAddr)
		if !rg.Contains(a) {
			t.Errorf("%s: %s outside the range", m.ID, a)
		}
		if o, dup := addrs[m.InternalAddr]; dup {
			t.Errorf("%s and %s share %s", m.ID, o, m.InternalAddr)
		}
		addrs[m.InternalAddr] = m.ID
		profiles[m.Profile]++
		if m.Profile != "default" {
			s := fmt.Sprintf("%s/%d", m.Profile, m.ProfileSlot)
			if o, dup := slots[s]; dup {
				t.Errorf("%s and %s share slot %s", m.ID, o, s)
			}
			slots[s] = m.ID
		}
	}
	if profiles["core"] != 3 || profiles["worker"] != 10 {
		t.Errorf("profiles %v, want core 3 and worker 10", profiles)
	}
	if ak := keys(t, cli, "addresses/"); len(ak) != len(ms) {
		t.Errorf("%d address keys for %d machines", len(ak), len(ms))
	}
}

// An etcd written before the allocator (no alloc/ keys) keeps its
// allocations: the first registration builds the cursor and free set from
// the index, gives the hole a delete left first, then goes on above the
// highest address held.
func TestAllocatorUpgradeKeepsAllocations(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	two := config.Profile{Name: "core", Quantity: 2}
	c := cluster("10.7.0.1", 10, two)
	r := newRegistry(t, cli, c, "r0")
	var ms []*machine.Machine
	for i := 0; i < 5; i++ {
		ms = append(ms, register(t, r, fmt.Sprintf("old-%d", i), mac(7, i)))
	}
	if err := r.Delete(ctxT(t), ms[1].ID); err != nil { // 10.7.0.2 and core slot 1
		t.Fatal(err)
	}
	// What an older release leaves: no allocator keys at all.
	if _, err := cli.Delete(ctxT(t), etcdtest.Prefix(t)+"alloc/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	up := newRegistry(t, cli, c, "upgraded")
	a := register(t, up, "new-a", mac(7, 10))
	b := register(t, up, "new-b", mac(7, 11))
	if a.InternalAddr != "10.7.0.2" || b.InternalAddr != "10.7.0.6" {
		t.Fatalf("after the upgrade: %s and %s, want the hole 10.7.0.2, then 10.7.0.6", a.InternalAddr, b.InternalAddr)
	}
	if a.Profile != "core" || a.ProfileSlot != 1 || b.Profile != "default" {
		t.Fatalf("profiles after the upgrade: %s/%d, %s/%d", a.Profile, a.ProfileSlot, b.Profile, b.ProfileSlot)
	}
	// A stale hint (an older replica took the cursor's address) is
	// stepped over, never given twice.
	if _, err := cli.Put(ctxT(t), etcdtest.Prefix(t)+"addresses/10.7.0.7", `{"machine":"legacy"}`); err != nil {
		t.Fatal(err)
	}
	if m := register(t, up, "new-c", mac(7, 12)); m.InternalAddr != "10.7.0.8" {
		t.Fatalf("past a held address: %s, want 10.7.0.8", m.InternalAddr)
	}
	// An address an older replica freed (no free key) is found by the
	// rescan once the hints say the range is full.
	if err := r.Delete(ctxT(t), ms[3].ID); err != nil { // 10.7.0.4
		t.Fatal(err)
	}
	if _, err := cli.Delete(ctxT(t), etcdtest.Prefix(t)+"alloc/addresses/free/", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"10.7.0.9", "10.7.0.10", "10.7.0.4"} {
		if m := register(t, up, "new-"+want, mac(8, len(want)+int(netip.MustParseAddr(want).As4()[3]))); m.InternalAddr != want {
			t.Fatalf("got %s, want %s", m.InternalAddr, want)
		}
	}
	if _, _, err := up.Register(ctxT(t), registry.Registration{ID: "one-too-many", MACs: []string{mac(9, 9)}}); !errors.Is(err, registry.ErrExhausted) {
		t.Fatalf("full range: %v", err)
	}
}

// A range whose start moves down: the cursor was built for the old start,
// so the hints are rebuilt, and the addresses below the old start are
// given first, lowest first; the machines keep theirs.
func TestAllocatorRangeStartChange(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	r := newRegistry(t, cli, cluster("10.9.0.5", 5), "r0")
	for i := 0; i < 3; i++ {
		register(t, r, fmt.Sprintf("m-%d", i), mac(9, i))
	}
	wider := newRegistry(t, cli, cluster("10.9.0.1", 9), "r1")
	for i, want := range []string{"10.9.0.1", "10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.8", "10.9.0.9"} {
		if m := register(t, wider, fmt.Sprintf("w-%d", i), mac(9, 10+i)); m.InternalAddr != want {
			t.Fatalf("w-%d got %s, want %s", i, m.InternalAddr, want)
		}
	}
	if _, _, err := wider.Register(ctxT(t), registry.Registration{ID: "full", MACs: []string{mac(9, 30)}}); !errors.Is(err, registry.ErrExhausted) {
		t.Fatalf("full: %v", err)
	}
}

// A profile slot freed where no hint was left (here: its quantity was
// lowered, the machine in the slot above it deleted, the quantity raised
// again) is found by the next registration: the hints say full, the index
// holds fewer keys than the quantity, the hints are rebuilt.
func TestProfileSlotFreedWithoutHintIsFound(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	core := func(q int) config.Profile { return config.Profile{Name: "core", Quantity: q} }
	r := newRegistry(t, cli, cluster("10.9.0.1", 20, core(3)), "r0")
	for i := 0; i < 3; i++ {
		if m := register(t, r, fmt.Sprintf("m-%d", i), mac(9, i)); m.Profile != "core" || m.ProfileSlot != i {
			t.Fatalf("m-%d: %s slot %d", i, m.Profile, m.ProfileSlot)
		}
	}
	lowered := newRegistry(t, cli, cluster("10.9.0.1", 20, core(2)), "r1")
	if err := lowered.Delete(ctxT(t), "m-2"); err != nil {
		t.Fatal(err)
	}
	raised := newRegistry(t, cli, cluster("10.9.0.1", 20, core(3)), "r2")
	if m := register(t, raised, "new", mac(9, 10)); m.Profile != "core" || m.ProfileSlot != 2 {
		t.Fatalf("new machine got %s slot %d, want core slot 2", m.Profile, m.ProfileSlot)
	}
	// Full for real: the next one is default, without a rebuild each time.
	if m := register(t, raised, "next", mac(9, 11)); m.Profile != "default" {
		t.Fatalf("next machine got %s slot %d, want default", m.Profile, m.ProfileSlot)
	}
}
