package lease

import (
	"context"
	"log/slog"
	"net/netip"
	"sort"
	"testing"
	"time"
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
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); st.Follow(fctx, slog.New(slog.DiscardHandler)) }()
	defer func() { stop(); <-done }()
	waitFor(t, 10*time.Second, "the copy loaded", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.warm != nil && st.warm.loaded
	})

	check := func(what string, want ...Lease) {
		t.Helper()
		start := time.Now()
		got, bad, err := st.Load(ctx)
		took := time.Since(start)
		if err != nil || len(bad) != 0 {
			t.Fatalf("%s: %v, %v", what, err, bad)
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
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); st.Follow(fctx, slog.New(slog.DiscardHandler)) }()
	defer func() { stop(); <-done }()
	waitFor(t, 10*time.Second, "the copy loaded", func() bool {
		st.mu.Lock()
		defer st.mu.Unlock()
		return st.warm != nil && st.warm.loaded && len(st.warm.leases) == 2
	})
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
