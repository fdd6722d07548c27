package lease

import (
	"context"
	"log/slog"
	"net/netip"
	"sort"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/etcd"
)

// A store that follows the leases answers Load from its copy, caught up
// to etcd's revision at the time of the call: a lease written just before
// is in it, a deleted one is not, and an idle watch (nothing changed for
// a while) is caught up by asking etcd how far it is, not by reading
// every lease or waiting out catchUpTimeout.
func TestLoadFromFollowedCopy(t *testing.T) {
	t.Parallel()
	st, f := storeOn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, err := range putAll(st, f, []Lease{leaseN(1), leaseN(2), leaseN(3)}) {
		if err != nil {
			t.Fatal(err)
		}
	}
	follow(t, ctx, st, 0)
	reads := fullReads(st)

	check := func(what string, want ...Lease) {
		t.Helper()
		start := time.Now()
		got, bad, err := st.Load(ctx)
		took := time.Since(start)
		if err != nil || len(bad) != 0 {
			t.Fatalf("%s: %v, %v", what, err, bad)
		}
		if reads.Load() != 0 {
			t.Fatalf("%s: Load read every lease from etcd, not the copy", what)
		}
		if took >= catchUpTimeout {
			t.Fatalf("%s: Load took %v: the copy did not catch up, etcd was read instead", what, took)
		}
		read, _, err := st.read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, ls := range [][]Lease{got, read, want} {
			sort.Slice(ls, func(i, j int) bool { return ls[i].IP.Less(ls[j].IP) })
		}
		if len(got) != len(want) || len(read) != len(want) {
			t.Fatalf("%s: copy %v, etcd %v, want %v", what, got, read, want)
		}
		for i := range want {
			if got[i].IP != want[i].IP || got[i].MAC != want[i].MAC || !got[i].Expiry.Equal(read[i].Expiry) || read[i].MAC != want[i].MAC {
				t.Fatalf("%s: copy %v, etcd %v, want %v", what, got, read, want)
			}
		}
	}
	// Idle for longer than any event would take to arrive.
	time.Sleep(300 * time.Millisecond)
	check("idle", leaseN(1), leaseN(2), leaseN(3))
	// Written and removed just before: no sleep.
	l4 := leaseN(4)
	if err := st.Put(ctx, f, l4); err != nil {
		t.Fatal(err)
	}
	if err := st.Remove(ctx, f, leaseN(2).IP); err != nil {
		t.Fatal(err)
	}
	moved := leaseN(3)
	moved.MAC = "52:54:00:99:99:99"
	if err := st.Put(ctx, f, moved); err != nil {
		t.Fatal(err)
	}
	check("just changed", leaseN(1), moved, l4)
	// A corrupt key is reported, as a full read reports it.
	if _, err := st.cli.Put(ctx, st.keys.Lease(netip.MustParseAddr("10.9.9.9")), "{"); err != nil {
		t.Fatal(err)
	}
	if _, bad, err := st.Load(ctx); err != nil || len(bad) != 1 {
		t.Fatalf("corrupt lease: %v, %v", bad, err)
	}
}

// A followed copy that lacks a lease etcd holds (an older etcd server can
// announce progress ahead of events still queued) is not trusted: Load
// reads etcd, so the lease's address is not given again.
func TestLoadDistrustsACopyMissingALease(t *testing.T) {
	t.Parallel()
	st, f := storeOn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, err := range putAll(st, f, []Lease{leaseN(1), leaseN(2)}) {
		if err != nil {
			t.Fatal(err)
		}
	}
	follow(t, ctx, st, 2)
	st.mu.Lock()
	w := st.warm
	st.mu.Unlock()
	w.mu.Lock()
	for k := range w.leases {
		delete(w.leases, k) // an event the copy never saw
		break
	}
	w.mu.Unlock()
	got, _, err := st.Load(ctx)
	if err != nil || len(got) != 2 {
		t.Fatalf("Load gave %v, %v: want both leases, read from etcd", got, err)
	}
}

// A new leader's catch-up does not wait on an etcd member that went
// silent (its host's link cut: a frozen member stands in for it) while
// the followed copy's watch was open on it: the watch moves to a member
// that answers (the replica's etcd client closes its connections to the
// silent one, pkg/etcd), and Load returns the copy, with a lease written
// after the member went silent, well before catchUpTimeout. Before, the
// watch stayed on the silent member and Load waited out catchUpTimeout.
func TestCatchUpPastASilentMember(t *testing.T) {
	c := etcdtest.StartCluster(t, etcdtest.ClusterOptions{})
	node := config.Node{Name: "t", Etcd: config.Etcd{Endpoints: c.Endpoints, Prefix: prefix,
		DialTimeout: 3 * time.Second, RequestTimeout: 3 * time.Second}}
	conn, err := etcd.Open(context.Background(), node, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cli := conn.Client
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	silent := c.NonLeader() // etcd itself goes on at once
	st, f := storeWith(t, cli)
	for _, err := range putAll(st, f, []Lease{leaseN(1), leaseN(2)}) {
		if err != nil {
			t.Fatal(err)
		}
	}

	// The watch opens on the member about to go silent: the only one in
	// the client then.
	cli.SetEndpoints(c.Endpoints[silent])
	follow(t, ctx, st, 0)
	if got, _, err := st.Load(ctx); err != nil || len(got) != 2 {
		t.Fatalf("Load with every member up: %v, %v", got, err)
	}
	cli.SetEndpoints(c.Endpoints...)

	c.Freeze(silent)
	defer c.Thaw(silent)
	frozen := time.Now()
	others := c.ClientWithout(silent)
	op, err := st.PutOp(leaseN(3))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := others.Txn(ctx).If(f.Cmp()).Then(op).Commit(); err != nil {
		t.Fatal(err)
	}
	reads := fullReads(st)
	got, _, err := st.Load(ctx)
	took := time.Since(frozen)
	if err != nil || len(got) != 3 {
		t.Fatalf("Load after a member went silent: %v, %v; want 3 leases", got, err)
	}
	// Not by time (a slow machine's commit counts in it): a copy that
	// did not catch up within catchUpTimeout makes Load read every lease.
	if n := reads.Load(); n != 0 {
		t.Errorf("Load read every lease (after %s): the copy did not catch up past the silent member within catchUpTimeout (%s)", took.Round(time.Millisecond), catchUpTimeout)
	}
	t.Logf("Load returned %s after a member went silent", took.Round(time.Millisecond))
}

// Another watch opened on the same client just after the last write (a
// new leader's watch on its own election key is one) does not hold back
// the catch-up: etcd answers a progress request on a stream only once
// every watch on it has reached its start revision, so the followed
// leases' watch has a stream of its own. Before, Load waited out
// catchUpTimeout whenever nothing was written after such a watch opened.
func TestCatchUpBesideAFreshWatch(t *testing.T) {
	t.Parallel()
	st, f := storeOn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.Put(ctx, f, leaseN(1)); err != nil {
		t.Fatal(err)
	}
	follow(t, ctx, st, 0)
	// A write elsewhere (the copy has not seen its revision), then a
	// watch that starts after it, as keyGone's does.
	if _, err := st.cli.Put(ctx, prefix+"elsewhere", "x"); err != nil {
		t.Fatal(err)
	}
	// On the client's shared stream, as every watch but the followed
	// copy's is (state.Follower.Progress); open once etcd says it was
	// created.
	resp, err := st.cli.Get(ctx, prefix+"election/t", clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	wctx, wstop := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wstop()
	select {
	case wr := <-st.cli.Watch(wctx, prefix+"election/t", clientv3.WithRev(resp.Header.Revision+1), clientv3.WithCreatedNotify()):
		if !wr.Created {
			t.Fatalf("the fresh watch: %+v", wr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the fresh watch did not open within 10s")
	}
	reads := fullReads(st)
	start := time.Now()
	got, _, err := st.Load(ctx)
	took := time.Since(start)
	if err != nil || len(got) != 1 {
		t.Fatalf("Load: %v, %v", got, err)
	}
	if n := reads.Load(); n != 0 {
		t.Errorf("Load read every lease (after %s): the copy's catch-up was held back by another watch (catchUpTimeout %s)", took.Round(time.Millisecond), catchUpTimeout)
	}
}

// follow runs st.Follow until the test ends and waits until its copy has
// loaded (with at least leases leases).
func follow(t *testing.T, ctx context.Context, st *Store, leases int) {
	t.Helper()
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); st.Follow(fctx, slog.New(slog.DiscardHandler)) }()
	t.Cleanup(func() { stop(); <-done })
	waitFor(t, 10*time.Second, "the copy loaded", func() bool { return copied(st) >= leases })
}

// copied is how many leases the followed copy holds once loaded, -1 if
// there is none.
func copied(st *Store) int {
	st.mu.Lock()
	w := st.warm
	st.mu.Unlock()
	if w == nil {
		return -1
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.loaded {
		return -1
	}
	return len(w.leases)
}

// fullReads counts the full reads of the leases (Load not answered from
// the copy) that st makes.
func fullReads(st *Store) *atomic.Int32 {
	var n atomic.Int32
	st.fullRead = func() { n.Add(1) }
	return &n
}

// While this replica leads, the followed copy goes (the leader's table is
// the truth, and a second copy of every lease costs its heap and CPU);
// once it no longer leads, the copy comes back with what was written
// meanwhile, and a later term loads from it.
func TestFollowPausesWhileLeading(t *testing.T) {
	t.Parallel()
	st, f := storeOn(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := st.Put(ctx, f, leaseN(1)); err != nil {
		t.Fatal(err)
	}
	follow(t, ctx, st, 1)
	st.Leading(true)
	waitFor(t, 5*time.Second, "the copy dropped while leading", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.warm == nil
	})
	if err := st.Put(ctx, f, leaseN(2)); err != nil { // written while leading
		t.Fatal(err)
	}
	reads := fullReads(st)
	st.Leading(false)
	// Right after, the copy is not loaded yet (etcd is read), or just was.
	if got, _, err := st.Load(ctx); err != nil || len(got) != 2 {
		t.Fatalf("Load at once: %v, %v", got, err)
	}
	waitFor(t, 10*time.Second, "the copy back, with the lease written meanwhile", func() bool { return copied(st) == 2 })
	before := reads.Load()
	got, _, err := st.Load(ctx)
	if err != nil || len(got) != 2 {
		t.Fatalf("Load: %v, %v", got, err)
	}
	if reads.Load() != before {
		t.Errorf("Load read etcd: not from the copy")
	}
}

// A new leader does not wait for its copy's watch when no lease was
// written since the copy's revision: a watch that etcd's client set up
// again (its member cut off with the old leader's host) resumes from a
// revision in the past, and etcd sends it its events, or the progress
// asked for, only at its next resync, up to 0.1 s later. Here the watch
// hears nothing at all. A lease written or deleted meanwhile is never
// missed: the copy is then not taken without its watch (here: read from
// etcd after catchUpTimeout).
func TestCatchUpWithoutTheWatchWhenNothingWasWritten(t *testing.T) {
	t.Parallel()
	srv := etcdtest.StartServer(t)
	var deaf atomic.Bool
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.ClientURL}, DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{etcdtest.DeafWatches(&deaf)}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, f := storeWith(t, cli)
	for _, err := range putAll(st, f, []Lease{leaseN(1), leaseN(2)}) {
		if err != nil {
			t.Fatal(err)
		}
	}
	written, err := cli.Get(ctx, "x") // the revision of the last put, or later
	if err != nil {
		t.Fatal(err)
	}
	follow(t, ctx, st, 2)
	waitFor(t, 10*time.Second, "the copy at the last put's revision", func() bool {
		st.mu.Lock()
		w := st.warm
		st.mu.Unlock()
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.rev >= written.Header.Revision
	})
	reads := fullReads(st)
	deaf.Store(true)
	t.Cleanup(func() { deaf.Store(false) })
	// etcd moves on, the leases do not (the new leader's election key).
	if _, err := cli.Put(ctx, prefix+"election/u", "u"); err != nil {
		t.Fatal(err)
	}
	got, _, err := st.Load(ctx)
	if err != nil || len(got) != 2 {
		t.Fatalf("Load with nothing written: %v, %v; want the 2 leases", got, err)
	}
	if n := reads.Load(); n != 0 {
		t.Errorf("Load read every lease with nothing written: it waited for the deaf watch (catchUpTimeout)")
	}

	for _, c := range []struct {
		what  string
		write func() error
		want  int
	}{
		{"a lease deleted", func() error { return st.Remove(ctx, f, leaseN(1).IP) }, 1},
		{"a lease written", func() error { return st.Put(ctx, f, leaseN(3)) }, 2},
	} {
		if err := c.write(); err != nil {
			t.Fatal(err)
		}
		got, _, err := st.Load(ctx)
		if err != nil || len(got) != c.want {
			t.Fatalf("Load after %s while the watch heard nothing: %v, %v; want %d leases", c.what, got, err, c.want)
		}
	}
	if n := reads.Load(); n != 2 {
		t.Errorf("%d full reads of the leases after a delete and a write the copy had not seen, want 2", n)
	}
}
