package election_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/state"
)

const prefix = "/mayu/"

// testLog logs through t until the test ends.
type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func logger(t testing.TB) *slog.Logger {
	if testing.Short() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	w := &testLog{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, nil))
}

// term is one call of lead: its fence, and closed when its context ended.
type term struct {
	name  string
	fence election.Fence
	ended chan struct{}
	at    time.Time
}

// replica runs one election and records its terms.
type replica struct {
	name  string
	el    *election.Election
	terms chan *term
	stop  func()
	done  chan struct{}
}

// active counts the lead calls running across replicas of one test.
type active struct {
	now, max atomic.Int32
}

func (a *active) enter() {
	n := a.now.Add(1)
	for {
		m := a.max.Load()
		if n <= m || a.max.CompareAndSwap(m, n) {
			return
		}
	}
}

func start(t *testing.T, cli *clientv3.Client, name string, ttl time.Duration, act *active, setup ...func(*election.Election)) *replica {
	t.Helper()
	return startWith(t, cli, name, ttl, act, nil, setup...)
}

// startWith is start with the election's metrics on reg.
func startWith(t *testing.T, cli *clientv3.Client, name string, ttl time.Duration, act *active, reg prometheus.Registerer, setup ...func(*election.Election)) *replica {
	t.Helper()
	return startElection(t, election.New(cli, prefix, name, ttl, logger(t).With("replica", name), reg), name, act, setup...)
}

// startLogged is start with the election's log to log.
func startLogged(t *testing.T, cli *clientv3.Client, name string, ttl time.Duration, act *active, log *slog.Logger) *replica {
	t.Helper()
	return startElection(t, election.New(cli, prefix, name, ttl, log.With("replica", name), nil), name, act)
}

func startElection(t *testing.T, el *election.Election, name string, act *active, setup ...func(*election.Election)) *replica {
	t.Helper()
	r := &replica{name: name, el: el,
		terms: make(chan *term, 16), done: make(chan struct{})}
	for _, f := range setup {
		f(r.el)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(r.done)
		r.el.Run(ctx, func(ctx context.Context, f election.Fence) {
			if act != nil {
				act.enter()
				defer act.now.Add(-1)
			}
			tm := &term{name: name, fence: f, ended: make(chan struct{}), at: time.Now()}
			defer close(tm.ended)
			r.terms <- tm
			<-ctx.Done()
		})
	}()
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-r.done:
			case <-time.After(10 * time.Second):
				t.Errorf("%s: Run did not return after its context ended", name)
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// nextTerm waits for r's next lead call.
func (r *replica) nextTerm(t *testing.T, within time.Duration) *term {
	t.Helper()
	select {
	case tm := <-r.terms:
		return tm
	case <-time.After(within):
		t.Fatalf("%s did not lead within %s", r.name, within)
		return nil
	}
}

func (r *replica) noTerm(t *testing.T, during time.Duration) {
	t.Helper()
	select {
	case tm := <-r.terms:
		t.Fatalf("%s leads (term %d) but should not", r.name, tm.fence.Rev)
	case <-time.After(during):
	}
}

func ended(tm *term, within time.Duration) bool {
	select {
	case <-tm.ended:
		return true
	default:
	}
	select {
	case <-tm.ended:
		return true
	case <-time.After(within):
		return false
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func leader(t *testing.T, cli *clientv3.Client) string {
	t.Helper()
	name, err := election.Leader(ctxT(t), cli, state.Keys{Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	return name
}

// fencedPut writes key under f, as the DHCP leader writes leases.
func fencedPut(t *testing.T, cli *clientv3.Client, f election.Fence, key string) bool {
	t.Helper()
	resp, err := cli.Txn(ctxT(t)).If(f.Cmp()).Then(clientv3.OpPut(key, "x")).Commit()
	if err != nil {
		t.Fatal(err)
	}
	return resp.Succeeded
}

func TestOneReplicaLeads(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	if name := leader(t, cli); name != "" {
		t.Fatalf("leader before any campaign: %q", name)
	}
	r := start(t, cli, "r1", 2*time.Second, nil)
	tm := r.nextTerm(t, 10*time.Second)
	f, ok := r.el.Fence()
	if !ok || f.Key == "" || f.Rev <= 0 || f != tm.fence {
		t.Fatalf("Fence() = %+v, %v; lead got %+v", f, ok, tm.fence)
	}
	if !strings.HasPrefix(f.Key, prefix+"election/") {
		t.Fatalf("leader key %q is not under %selection/", f.Key, prefix)
	}
	resp, err := cli.Get(ctxT(t), f.Key)
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].CreateRevision != f.Rev || string(resp.Kvs[0].Value) != "r1" {
		t.Fatalf("leader key in etcd: %v %v", resp, err)
	}
	if name := leader(t, cli); name != "r1" {
		t.Fatalf("Leader() = %q, want r1", name)
	}
	if !fencedPut(t, cli, f, "/mayu/fenced") {
		t.Fatal("a fenced write of the leader was refused")
	}

	// A graceful stop resigns: the lead context ends, the fence no longer
	// holds, nobody leads.
	r.stop()
	if !ended(tm, 0) {
		t.Fatal("Run returned while lead still ran")
	}
	if f, ok := r.el.Fence(); ok {
		t.Fatalf("Fence() after stop = %+v", f)
	}
	if fencedPut(t, cli, f, "/mayu/fenced") {
		t.Fatal("a fenced write of a resigned leader was accepted")
	}
	if name := leader(t, cli); name != "" {
		t.Fatalf("Leader() after resigning = %q", name)
	}
}

func TestTwoReplicasOneLeadsAndResignHandsOver(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	const ttl = 5 * time.Second
	var act active
	a := start(t, cli, "a", ttl, &act)
	first := a.nextTerm(t, 10*time.Second) // a campaigns first, so a wins
	b := start(t, cli, "b", ttl, &act)

	b.noTerm(t, 500*time.Millisecond)
	if _, ok := b.el.Fence(); ok {
		t.Fatal("the follower has a fence")
	}
	if name := leader(t, cli); name != "a" {
		t.Fatalf("Leader() = %q, want a", name)
	}
	if fencedPut(t, cli, election.Fence{Key: prefix + "election/not-a-leader", Rev: first.fence.Rev + 1}, "/mayu/x") {
		t.Fatal("a write fenced by a key that does not exist was accepted")
	}

	// a stops: it resigns, so b leads at once rather than after the TTL.
	stopped := time.Now()
	a.stop()
	second := b.nextTerm(t, ttl)
	took := second.at.Sub(stopped)
	t.Logf("takeover after a graceful stop: %s (TTL %s)", took.Round(time.Millisecond), ttl)
	if took > 2*time.Second {
		t.Fatalf("takeover took %s; resigning should make it much faster than the TTL %s", took, ttl)
	}
	if !ended(first, 0) {
		t.Fatal("the old leader's lead context did not end")
	}
	if second.fence.Rev <= first.fence.Rev || second.fence.Key == first.fence.Key {
		t.Fatalf("new term %+v, old %+v", second.fence, first.fence)
	}
	if name := leader(t, cli); name != "b" {
		t.Fatalf("Leader() = %q, want b", name)
	}
	if fencedPut(t, cli, first.fence, "/mayu/x") || !fencedPut(t, cli, second.fence, "/mayu/x") {
		t.Fatal("fences: the old term must be refused, the new one accepted")
	}
	if m := act.max.Load(); m != 1 {
		t.Fatalf("%d replicas led at once", m)
	}
}

func TestManyReplicasExactlyOneLeads(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	var act active
	var rs []*replica
	for _, name := range []string{"r0", "r1", "r2", "r3"} {
		rs = append(rs, start(t, cli, name, 5*time.Second, &act))
	}
	// Wait for a leader, then check for a while that it stays alone.
	deadline := time.Now().Add(10 * time.Second)
	var lead *replica
	for lead == nil && time.Now().Before(deadline) {
		for _, r := range rs {
			if _, ok := r.el.Fence(); ok {
				lead = r
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if lead == nil {
		t.Fatal("nobody leads")
	}
	time.Sleep(500 * time.Millisecond)
	n := 0
	for _, r := range rs {
		if _, ok := r.el.Fence(); ok {
			n++
		}
	}
	if n != 1 || act.max.Load() != 1 || act.now.Load() != 1 {
		t.Fatalf("%d replicas with a fence; lead ran %d at most at once", n, act.max.Load())
	}
	if name := leader(t, cli); name != lead.name {
		t.Fatalf("Leader() = %q, the fence is %s's", name, lead.name)
	}
	// Stopping them one by one hands leadership on each time.
	for i := 0; i < len(rs)-1; i++ {
		lead.stop()
		lead = nil
		deadline := time.Now().Add(5 * time.Second)
		for lead == nil && time.Now().Before(deadline) {
			for _, r := range rs {
				if _, ok := r.el.Fence(); ok {
					lead = r
				}
			}
			time.Sleep(10 * time.Millisecond)
		}
		if lead == nil {
			t.Fatalf("no leader after %d stops", i+1)
		}
	}
	if act.max.Load() != 1 {
		t.Fatalf("%d replicas led at once", act.max.Load())
	}
}

func TestEtcdOutageEndsLeadership(t *testing.T) {
	t.Parallel()
	srv := etcdtest.StartServer(t)
	const ttl = 2 * time.Second
	r := start(t, srv.Client, "r1", ttl, nil)
	tm := r.nextTerm(t, 10*time.Second)

	stopped := time.Now()
	srv.Stop()
	t.Logf("etcd stopped in %s", time.Since(stopped).Round(time.Millisecond))
	if !ended(tm, 15*time.Second) {
		t.Fatalf("lead still runs 15s after etcd stopped (TTL %s)", ttl)
	}
	took := time.Since(stopped)
	t.Logf("leadership ended %s after etcd stopped (TTL %s)", took.Round(time.Millisecond), ttl)
	if _, ok := r.el.Fence(); ok {
		t.Fatal("Fence() still holds with etcd gone")
	}
	// No new term without etcd; and a stop still returns.
	r.noTerm(t, 500*time.Millisecond)
	r.stop()
}

func TestGateHoldsBackTheCampaign(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	// A gate the test opens and closes.
	var mu sync.Mutex
	open, changed := false, make(chan struct{})
	gate := func() (bool, <-chan struct{}) {
		mu.Lock()
		defer mu.Unlock()
		return open, changed
	}
	set := func(v bool) {
		mu.Lock()
		defer mu.Unlock()
		open = v
		close(changed)
		changed = make(chan struct{})
	}
	keys := func() int64 {
		resp, err := cli.Get(ctxT(t), prefix+"election/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}

	r := start(t, cli, "gated", 2*time.Second, nil, func(e *election.Election) { e.SetGate(gate) })
	r.noTerm(t, 500*time.Millisecond)
	if n := keys(); n != 0 {
		t.Fatalf("a replica held at the gate campaigns: %d keys", n)
	}
	set(true)
	tm := r.nextTerm(t, 10*time.Second)
	// A leader keeps leading when its gate closes.
	set(false)
	if ended(tm, 500*time.Millisecond) {
		t.Fatal("closing the gate ended a term")
	}

	// A follower whose gate closes withdraws from the campaign.
	var mu2 sync.Mutex
	open2, changed2 := true, make(chan struct{})
	gate2 := func() (bool, <-chan struct{}) {
		mu2.Lock()
		defer mu2.Unlock()
		return open2, changed2
	}
	f := start(t, cli, "follower", 2*time.Second, nil, func(e *election.Election) { e.SetGate(gate2) })
	deadline := time.Now().Add(5 * time.Second)
	for keys() != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the follower does not campaign")
		}
		time.Sleep(10 * time.Millisecond)
	}
	mu2.Lock()
	open2 = false
	close(changed2)
	changed2 = make(chan struct{})
	mu2.Unlock()
	deadline = time.Now().Add(5 * time.Second)
	for keys() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the follower did not withdraw when its gate closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The leader stops; the gated follower does not take over.
	r.stop()
	f.noTerm(t, time.Second)
	if name := leader(t, cli); name != "" {
		t.Fatalf("Leader() = %q with every replica stopped or gated", name)
	}
}

// A leader key deleted behind the leader's back (etcdctl del, a restore)
// ends the term although the session lives on: the replica must stop
// leading at once and campaign again, or with no other replica DHCP would
// stay silent for good while this one believes it leads.
func TestDeletedLeaderKeyEndsTheTerm(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	r := start(t, cli, "r1", 5*time.Second, nil)
	first := r.nextTerm(t, 10*time.Second)
	if _, err := cli.Delete(ctxT(t), first.fence.Key); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	if !ended(first, 2*time.Second) {
		t.Fatal("the term goes on after its leader key was deleted")
	}
	t.Logf("term ended %s after its key was deleted", time.Since(deleted).Round(time.Millisecond))
	if fencedPut(t, cli, first.fence, "/mayu/x") {
		t.Fatal("the deleted term's fence still holds")
	}
	second := r.nextTerm(t, 10*time.Second)
	if second.fence.Rev <= first.fence.Rev {
		t.Fatalf("new term %+v, old %+v", second.fence, first.fence)
	}
	if f, ok := r.el.Fence(); !ok || f != second.fence {
		t.Fatalf("Fence() = %+v %v, want the new term %+v", f, ok, second.fence)
	}
	if name := leader(t, cli); name != "r1" {
		t.Fatalf("Leader() = %q", name)
	}
}
