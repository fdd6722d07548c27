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
