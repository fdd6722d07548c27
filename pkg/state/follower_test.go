package state_test

import (
	"context"
	"fmt"
	"maps"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/state"
)

// A watch whose revision etcd compacted away (here: changes and a
// compaction between the load and the watch, as when a replica's watch
// falls behind the embedded etcd's auto-compaction) cannot resume: the
// follower loads afresh at a current revision, says so, and ends with
// exactly what etcd holds. Every watch of mayu is such a Follower (the
// installed MACs, the known machines, the secret, the election, the
// replicas, the artifact catalogue), so this holds for each.
func TestFollowerResyncsAfterCompaction(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	dir := etcdtest.Prefix(t) + "follow/"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 5; i++ {
		if _, err := cli.Put(ctx, fmt.Sprintf("%s%d", dir, i), "v0"); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	seen := map[string]string{}
	loads, resyncs, compactedResyncs := 0, 0, 0
	done := make(chan struct{})
	fctx, stop := context.WithCancel(ctx)
	go func() {
		defer close(done)
		state.Follower{
			Key: dir, Prefix: true, Pause: 10 * time.Millisecond,
			Load: func(kvs []*mvccpb.KeyValue) {
				mu.Lock()
				loads++
				first := loads == 1
				seen = map[string]string{}
				for _, kv := range kvs {
					seen[string(kv.Key)] = string(kv.Value)
				}
				mu.Unlock()
				if !first {
					return
				}
				// Changes the watch would have to deliver, then compacted
				// away before the watch starts.
				var rev int64
				for i := 0; i < 5; i++ {
					cli.Delete(ctx, fmt.Sprintf("%s%d", dir, i))
					r, err := cli.Put(ctx, fmt.Sprintf("%s%d", dir, 10+i), "v1")
					if err != nil {
						t.Error(err)
						return
					}
					rev = r.Header.Revision
				}
				if _, err := cli.Compact(ctx, rev, clientv3.WithCompactPhysical()); err != nil {
					t.Error(err)
				}
			},
			Change: func(ev *clientv3.Event) {
				mu.Lock()
				defer mu.Unlock()
				if ev.Type == clientv3.EventTypeDelete {
					delete(seen, string(ev.Kv.Key))
				} else {
					seen[string(ev.Kv.Key)] = string(ev.Kv.Value)
				}
			},
			Resynced: func(compacted bool) {
				mu.Lock()
				defer mu.Unlock()
				resyncs++
				if compacted {
					compactedResyncs++
				}
			},
		}.Run(fctx, cli)
	}()
	defer func() { stop(); <-done }()

	// And changes after the resync arrive through the new watch.
	deadline := time.Now().Add(20 * time.Second)
	for {
		mu.Lock()
		n := resyncs
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no resync after the compaction")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, err := cli.Put(ctx, dir+"after", "v2"); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{dir + "after": "v2"}
	for i := 0; i < 5; i++ {
		want[fmt.Sprintf("%s%d", dir, 10+i)] = "v1"
	}
	for {
		mu.Lock()
		ok := maps.Equal(seen, want)
		got := maps.Clone(seen)
		mu.Unlock()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("follower holds %v, etcd %v", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	if compactedResyncs != 1 || resyncs != 1 {
		t.Fatalf("%d resyncs, %d after a compaction; want 1 and 1", resyncs, compactedResyncs)
	}
}

// A Follower with Progress hears how far its watch is when asked
// (RequestProgress with its key), also beside a watch on the client's
// shared stream that opened just after the last write: etcd holds back a
// stream's progress until every watch on it has reached its start
// revision, so such a Follower watches on a stream of its own. Before, it
// had one only when it named one (Stream), and one that did not stalled
// until the next write.
func TestFollowerProgressBesideAFreshWatch(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	prefix := etcdtest.Prefix(t)
	dir := prefix + "follow/"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cli.Put(ctx, dir+"a", "v"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var rev int64 // as far as the follower has heard
	heard := func() int64 {
		mu.Lock()
		defer mu.Unlock()
		return rev
	}
	fctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		state.Follower{Key: dir, Prefix: true,
			Load:   func([]*mvccpb.KeyValue) {},
			Change: func(*clientv3.Event) {},
			Progress: func(r int64) {
				mu.Lock()
				defer mu.Unlock()
				rev = max(rev, r)
			},
		}.Run(fctx, cli)
	}()
	defer func() { stop(); <-done }()
	for deadline := time.Now().Add(10 * time.Second); heard() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the follower did not load")
		}
	}

	// A write the follower's watch does not see, then a watch on the
	// shared stream (as every Follower without Progress has) that starts
	// after it: open once etcd says it was created.
	resp, err := cli.Put(ctx, prefix+"elsewhere", "x")
	if err != nil {
		t.Fatal(err)
	}
	want := resp.Header.Revision
	wctx, wstop := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer wstop()
	select {
	case wr := <-cli.Watch(wctx, prefix+"fresh", clientv3.WithRev(want+1), clientv3.WithCreatedNotify()):
		if !wr.Created {
			t.Fatalf("the fresh watch: %+v", wr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the fresh watch did not open")
	}

	start := time.Now()
	for heard() < want {
		// Held back, it never hears it (until the next write): a bound
		// far above a slow machine's round trips.
		if time.Since(start) > 5*time.Second {
			t.Fatalf("the follower heard revision %d after %s of progress requests, want %d: held back by the fresh watch", heard(), time.Since(start).Round(time.Millisecond), want)
		}
		state.RequestProgress(ctx, cli, dir)
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("revision %d heard %s after the first progress request", want, time.Since(start).Round(time.Millisecond))
}

// A Follower with Progress watches on a stream named after its key, in
// gRPC metadata, which must be printable ASCII; node.etcd.prefix may hold
// any character (it did: a prefix with "ü" left the watch silent).
func TestFollowerOwnStreamAnyKey(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	dir := etcdtest.Prefix(t) + "mayu-ü/leases/"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	changed := make(chan string, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		state.Follower{Key: dir, Prefix: true,
			Load: func([]*mvccpb.KeyValue) {},
			// Never blocks: the test reads one change, and more may
			// come (it puts again until one does).
			Change: func(ev *clientv3.Event) {
				select {
				case changed <- string(ev.Kv.Key):
				default:
				}
			},
			Progress: func(int64) {},
			Broken:   func(err error) { t.Errorf("watch broken: %v", err) },
		}.Run(ctx, cli)
	}()
	defer func() { cancel(); <-done }()
	deadline := time.After(10 * time.Second)
	for {
		if _, err := cli.Put(ctx, dir+"a", "v"); err != nil {
			t.Fatal(err)
		}
		select {
		case k := <-changed:
			if k != dir+"a" {
				t.Fatalf("change of %q", k)
			}
			return
		case <-time.After(200 * time.Millisecond): // the watch may open after the put
		case <-deadline:
			t.Fatal("no change heard in 10 s")
		}
	}
}
