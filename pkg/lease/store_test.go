package lease

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/state"
)

const prefix = "/mayu/"

var keys = state.Keys{Prefix: prefix}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	for end := time.Now().Add(d); !ok(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// storeOn returns a lease store on a fresh embedded etcd and a fence that
// holds.
func storeOn(t testing.TB) (*Store, election.Fence) {
	t.Helper()
	return storeWith(t, etcdtest.Start(t))
}

// storeWith is a store on cli, and the fence of a term it writes in.
func storeWith(t testing.TB, cli *clientv3.Client) (*Store, election.Fence) {
	t.Helper()
	resp, err := cli.Put(context.Background(), prefix+"election/t", "t")
	if err != nil {
		t.Fatal(err)
	}
	return NewStore(cli, keys, 10*time.Second),
		election.Fence{Key: prefix + "election/t", Rev: resp.Header.Revision}
}

func leaseN(i int) Lease {
	return Lease{IP: netip.AddrFrom4([4]byte{10, 98, byte(1 + i/250), byte(1 + i%250)}), MAC: net.HardwareAddr{0x52, 0x54, 0x00, byte(i >> 16), byte(i >> 8), byte(i)}.String(),
		Expiry: time.Now().Add(time.Hour), Leader: "t"}
}

// putAll writes n leases from n goroutines at once and returns their errors.
func putAll(st *Store, f election.Fence, leases []Lease) []error {
	errs := make([]error, len(leases))
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i, l := range leases {
		wg.Go(func() {
			<-start
			errs[i] = st.Put(context.Background(), f, l)
		})
	}
	close(start)
	wg.Wait()
	return errs
}

// Many ACKs at once: every lease is durable when its put returns, and they
// took fewer transactions than leases (each transaction is one revision).
func TestStoreGroupsConcurrentLeases(t *testing.T) {
	st, f := storeOn(t)
	ctx := context.Background()
	before, err := st.cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	var leases []Lease
	for i := 0; i < n; i++ {
		leases = append(leases, leaseN(i))
	}
	for i, err := range putAll(st, f, leases) {
		if err != nil {
			t.Fatalf("lease %d: %v", i, err)
		}
	}
	resp, err := st.cli.Get(ctx, keys.Leases(), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != n {
		t.Fatalf("%d leases in etcd, want %d", len(resp.Kvs), n)
	}
	txns := resp.Header.Revision - before.Header.Revision
	t.Logf("%d leases in %d transactions", n, txns)
	if txns >= n {
		t.Errorf("%d leases took %d transactions: none were grouped", n, txns)
	}
	// mayu_dhcp_lease_transaction_leases saw every transaction and lease.
	reg := prometheus.NewPedanticRegistry()
	st.Register(reg)
	if got := histogramOf(t, reg, "mayu_dhcp_lease_transaction_leases"); got.GetSampleCount() != uint64(txns) || got.GetSampleSum() != n {
		t.Errorf("lease groups: %d transactions of %v leases in all, want %d of %d", got.GetSampleCount(), got.GetSampleSum(), txns, n)
	}
	// A group's puts return just before its transaction's bookkeeping
	// ends.
	idle(t, st)
}

// A deposed leader's leases are all refused, grouped or not, and none is
// written.
func TestStoreGroupedLeasesAreFenced(t *testing.T) {
	st, f := storeOn(t)
	ctx := context.Background()
	if _, err := st.cli.Delete(ctx, f.Key); err != nil { // the term ends
		t.Fatal(err)
	}
	var leases []Lease
	for i := 0; i < 100; i++ {
		leases = append(leases, leaseN(i))
	}
	for i, err := range putAll(st, f, leases) {
		if !errors.Is(err, ErrDeposed) {
			t.Fatalf("lease %d: %v, want ErrDeposed", i, err)
		}
	}
	resp, err := st.cli.Get(ctx, keys.Leases(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Fatalf("a deposed leader wrote %d leases", resp.Count)
	}
}

// The same address twice in one group (a retransmitted REQUEST): etcd
// refuses a key twice in one transaction, so the group keeps the later one,
// and both puts succeed.
func TestStoreGroupSameKeyTwice(t *testing.T) {
	st, f := storeOn(t)
	st.queueWait = time.Hour // the group goes when the test says
	st.gather = -1
	st.mu.Lock()
	st.inflight = maxInflight // every put waits for a group
	st.mu.Unlock()
	l := leaseN(7)
	later := l
	later.Expiry = l.Expiry.Add(time.Minute)
	errs := make(chan error, 3)
	go func() { errs <- st.Put(context.Background(), f, l) }()
	waitFor(t, 5*time.Second, "first put queued", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.queue) == 1
	})
	go func() { errs <- st.Put(context.Background(), f, later) }()
	go func() { errs <- st.Put(context.Background(), f, leaseN(8)) }()
	waitFor(t, 5*time.Second, "all queued in one group", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.queue) == 1 && len(st.queue[0].ops) == 2
	})
	st.done() // a transaction in flight ends: the group goes
	waitPuts(t, errs, 3, "the group never went")
	leases, _, err := st.Load(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 2 {
		t.Fatalf("%d leases, want 2", len(leases))
	}
	for _, got := range leases {
		if got.IP == l.IP && !got.Expiry.Equal(later.Expiry) {
			t.Errorf("lease of %s expires %s, want the later %s", got.IP, got.Expiry, later.Expiry)
		}
	}
}

// Transactions stuck in flight (on an etcd member that died, until the etcd
// timeout) do not hold up the leases behind them for longer than
// maxQueueWait.
func TestStoreGroupDoesNotWaitForStuckTransactions(t *testing.T) {
	st, f := storeOn(t)
	st.mu.Lock()
	st.inflight = maxInflight // stuck
	st.mu.Unlock()
	start := time.Now()
	for i, err := range putAll(st, f, []Lease{leaseN(1), leaseN(2), leaseN(3)}) {
		if err != nil {
			t.Fatalf("lease %d: %v", i, err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the leases waited %s behind stuck transactions", d)
	}
}

// BenchmarkLeaseWrite is the durable part of an ACK: one fenced etcd
// transaction writing the lease, to an embedded etcd with fsync on.
// "serial" is one at a time (the latency of a lone ACK); "workers-64" has
// 64 in flight, as the server's 64 workers do under load, so etcd batches
// them into fewer fsyncs: ns/op there is the inverse of the throughput.
func BenchmarkLeaseWrite(b *testing.B) {
	for _, par := range []int{1, 64} {
		name := "serial"
		if par > 1 {
			name = fmt.Sprintf("workers-%d", par)
		}
		b.Run(name, func(b *testing.B) {
			st, f := storeOn(b)
			ctx := context.Background()
			var n atomic.Int64
			write := func() {
				i := n.Add(1)
				ip := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
				l := Lease{IP: ip, MAC: net.HardwareAddr{0x52, 0x54, 0x00, byte(i >> 16), byte(i >> 8), byte(i)}.String(), Expiry: time.Now().Add(time.Hour), Leader: "bench"}
				if err := st.Put(ctx, f, l); err != nil {
					b.Error(err)
				}
			}
			b.ReportAllocs()
			if par == 1 {
				for b.Loop() {
					write()
				}
				return
			}
			b.SetParallelism((par + 1) / 2) // GOMAXPROCS is 2 here: 2 × 32
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					write()
				}
			})
		})
	}
}

// histogramOf is the histogram name of reg.
func histogramOf(t *testing.T, reg *prometheus.Registry, name string) *dto.Histogram {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetHistogram()
		}
	}
	t.Fatalf("no %s", name)
	return nil
}

// Behind a transaction in flight, a group gathers for the gather time
// before it goes, even once that transaction has ended, and then goes as
// one transaction; a full group goes at once; a lone lease with nothing
// in flight is written at once.
func TestStoreGroupGathersBehindATransactionInFlight(t *testing.T) {
	st, f := storeOn(t)
	ctx := context.Background()
	st.queueWait = time.Hour
	st.gather = time.Hour

	// A lone lease that waited for a group would wait an hour.
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := st.Put(lctx, f, leaseN(0))
	cancel()
	if err != nil {
		t.Fatalf("a lone lease: %v", err)
	}
	st.mu.Lock()
	st.gather = 300 * time.Millisecond
	st.mu.Unlock()

	before, err := st.cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	idle(t, st)
	st.mu.Lock()
	st.inflight = 1 // a transaction in flight: one is all there may be
	st.mu.Unlock()
	errs := make(chan error, 3)
	start := time.Now()
	for i := 1; i <= 3; i++ {
		go func() { errs <- st.Put(ctx, f, leaseN(i)) }()
	}
	waitFor(t, 5*time.Second, "three leases in one group", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.queue) == 1 && len(st.queue[0].ops) == 3
	})
	st.done() // the transaction in flight ends before the group has gathered
	st.mu.Lock()
	queued := len(st.queue)
	st.mu.Unlock()
	if time.Since(start) < st.gather && queued != 1 {
		t.Fatal("the group went before it had gathered")
	}
	waitPuts(t, errs, 3, "the gathered group never went")
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("the group went after %s, before its gather time", d)
	}
	after, err := st.cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if txns := after.Header.Revision - before.Header.Revision; txns != 1 {
		t.Errorf("the group took %d transactions, want 1", txns)
	}

	// A full group does not gather: it goes when the transaction in
	// flight ends, or at once if none is.
	idle(t, st)
	st.mu.Lock()
	st.gather = time.Hour
	st.inflight = 1
	st.mu.Unlock()
	putN := func(from, n int) chan []error {
		full := make([]Lease, n)
		for i := range full {
			full[i] = leaseN(from + i)
		}
		errs := make(chan []error, 1)
		go func() { errs <- putAll(st, f, full) }()
		return errs
	}
	wait := func(errs chan []error) {
		t.Helper()
		select {
		case got := <-errs:
			for i, err := range got {
				if err != nil {
					t.Fatalf("lease %d: %v", i, err)
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a full group never went")
		}
	}
	fullErrs := putN(100, maxBatch)
	waitFor(t, 5*time.Second, "a full group", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.queue) == 1 && len(st.queue[0].ops) == maxBatch
	})
	st.done()
	wait(fullErrs)

	idle(t, st)
	st.mu.Lock()
	st.inflight = 1
	st.mu.Unlock()
	lone := make(chan error, 1)
	go func() { lone <- st.Put(ctx, f, leaseN(200)) }()
	waitFor(t, 5*time.Second, "a young group", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return len(st.queue) == 1
	})
	st.done() // nothing in flight now; the group is young and gathers
	fullErrs = putN(201, maxBatch-1)
	wait(fullErrs) // it filled up: it went at once
	if err := <-lone; err != nil {
		t.Fatal(err)
	}
}

// idle waits until no lease transaction is in flight or queued: a
// transaction's bookkeeping (done) may end just after its leases returned.
func idle(t *testing.T, st *Store) {
	t.Helper()
	waitFor(t, 5*time.Second, "no lease transaction in flight", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.inflight == 0 && len(st.queue) == 0
	})
}

// waitPuts waits for n puts' errors on errs, failing on the first error or
// when they do not all come within 10 s (a group that never went).
func waitPuts(t *testing.T, errs <-chan error, n int, what string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for range n {
		select {
		case err := <-errs:
			if err != nil {
				t.Fatal(err)
			}
		case <-timeout:
			t.Fatal(what)
		}
	}
}
