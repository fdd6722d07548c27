package election_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/state"
)

// world is what the followers' probes of each replica see (real etcd,
// real elections; only the network between the replicas is made up).
type world struct {
	mu       sync.Mutex
	out      map[string]election.Outcome // by replica name; absent: answered
	answered map[[2]string]int           // answers seen, by {prober, probed}
	paused   map[[2]string]int           // probes still to time out, by {prober, probed}
	voters   atomic.Int32
	probes   atomic.Int64 // probes made, by any replica
}

func newWorld(voters int) *world {
	w := &world{out: map[string]election.Outcome{}, answered: map[[2]string]int{}, paused: map[[2]string]int{}}
	w.voters.Store(int32(voters))
	return w
}

// proberFor is the probe of replica name: w.probe, counting the answers
// name sees.
func (w *world) proberFor(name string) func(ctx context.Context, url string, term int64) election.Outcome {
	return func(ctx context.Context, url string, term int64) election.Outcome {
		key := [2]string{name, strings.TrimPrefix(url, "probe://")}
		w.mu.Lock()
		paused := w.paused[key] > 0
		if paused {
			w.paused[key]--
		}
		w.mu.Unlock()
		if paused {
			w.probes.Add(1)
			<-ctx.Done()
			return election.TimedOut
		}
		o := w.probe(ctx, url, term)
		if o == election.Answered {
			w.mu.Lock()
			w.answered[key]++
			w.mu.Unlock()
		}
		return o
	}
}

// pause makes the next probe of leader by each follower time out, as a
// leader paused for about one probe would, and waits until each has
// seen the leader answer again. (Sleeping for "about one probe" made a
// loaded machine's followers see several, and depose a paused leader.)
func (w *world) pause(t *testing.T, leader string, followers ...string) {
	t.Helper()
	before := map[string]int{}
	w.mu.Lock()
	for _, f := range followers {
		w.paused[[2]string{f, leader}] = 1
		before[f] = w.answered[[2]string{f, leader}]
	}
	w.mu.Unlock()
	for _, f := range followers {
		w.waitAnswers(t, f, leader, before[f]+2)
	}
}

// waitSeen waits until follower has seen leader answer, and has judged
// that answer: a follower deposes only a leader it saw answer. A
// replica's probes run one after the other and each is judged before the
// next starts, so the answer of one probe has been judged once a second
// one has started; waiting for two answers covers it. (A sleep was used
// before: on a loaded machine the follower had not always probed yet.)
func (w *world) waitSeen(t *testing.T, follower, leader string) {
	t.Helper()
	w.waitAnswers(t, follower, leader, 2)
}

// waitAnswers waits until follower has seen leader answer n times in all.
func (w *world) waitAnswers(t *testing.T, follower, leader string, n int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		w.mu.Lock()
		got := w.answered[[2]string{follower, leader}]
		w.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s saw %s answer %d times within 10s, want %d", follower, leader, got, n)
		}
	}
}

func (w *world) set(name string, o election.Outcome) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.out[name] = o
}

func (w *world) probe(ctx context.Context, url string, term int64) election.Outcome {
	w.probes.Add(1)
	w.mu.Lock()
	o, ok := w.out[strings.TrimPrefix(url, "probe://")]
	w.mu.Unlock()
	if !ok {
		return election.Answered
	}
	if o == election.TimedOut {
		<-ctx.Done() // as a real probe does: it waits out its timeout
	}
	return o
}

// deposing is a replica that campaigns and watches the leader through w.
type deposing struct {
	*replica
	reg *prometheus.Registry
}

func startDeposing(t *testing.T, cli *clientv3.Client, name string, w *world) deposing {
	t.Helper()
	reg := prometheus.NewRegistry()
	r := startWith(t, cli, name, 5*time.Second, nil, reg, func(e *election.Election) {
		e.SetDeposition(election.Deposition{Interval: 50 * time.Millisecond, Timeout: 100 * time.Millisecond, SuspectAfter: 3,
			ProbeURL: func(ctx context.Context, name string) (string, error) { return "probe://" + name, nil },
			Voters:   func(ctx context.Context) (int, error) { return int(w.voters.Load()), nil },
			Probe:    w.proberFor(name),
		})
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.el.Watch(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return deposing{replica: r, reg: reg}
}

func (d deposing) depositions(reason string) float64 {
	return testutil.ToFloat64(depositionsOf(d.reg, reason))
}

// sumDepositions waits up to a second for the depositions counted by rs
// to reach want (the counter moves just after the term ends), and
// returns what they are.
func sumDepositions(reason string, want float64, rs ...deposing) float64 {
	var got float64
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		got = 0
		for _, r := range rs {
			got += r.depositions(reason)
		}
		if got >= want || time.Now().After(deadline) {
			return got
		}
	}
}

// depositionsOf reads mayu_election_depositions_total{reason} from reg.
func depositionsOf(reg *prometheus.Registry, reason string) prometheus.Collector {
	return collectorFunc(func(ch chan<- prometheus.Metric) {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() != "mayu_election_depositions_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == reason {
					ch <- prometheus.MustNewConstMetric(prometheus.NewDesc("x", "x", nil, nil), prometheus.CounterValue, m.GetCounter().GetValue())
				}
			}
		}
	})
}

type collectorFunc func(chan<- prometheus.Metric)

func (f collectorFunc) Describe(chan<- *prometheus.Desc)    {}
func (f collectorFunc) Collect(ch chan<- prometheus.Metric) { f(ch) }

// leaderOf waits for one of rs to lead and returns it with its term.
func leaderOf(t *testing.T, within time.Duration, rs ...deposing) (deposing, *term) {
	t.Helper()
	deadline := time.After(within)
	for {
		for _, r := range rs {
			select {
			case tm := <-r.terms:
				return r, tm
			default:
			}
		}
		select {
		case <-deadline:
			t.Fatalf("nobody led within %s", within)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// A leader whose probes are refused (its process is gone; here its
// session lives on, as a kill -9's does until the TTL) is deposed by one
// follower in well under the TTL, and only once; the next replica leads;
// the old term's fence holds no more.
func TestDeposedWhenRefused(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	w := newWorld(3)
	a := startDeposing(t, cli, "a", w)
	first := a.nextTerm(t, 10*time.Second)
	b := startDeposing(t, cli, "b", w)
	c := startDeposing(t, cli, "c", w)
	w.waitSeen(t, "b", "a")
	w.waitSeen(t, "c", "a")
	w.set("a", election.Refused)
	t0 := time.Now()
	if !ended(first, 2*time.Second) {
		t.Fatal("a refused leader was not deposed within 2s (TTL 5s)")
	}
	next, tm := leaderOf(t, 2*time.Second, b, c)
	t.Logf("a deposed after %s; %s leads (term %d)", time.Since(t0).Round(time.Millisecond), next.name, tm.fence.Rev)
	if fencedPut(t, cli, first.fence, "/mayu/x") {
		t.Fatal("the deposed term's fence still holds")
	}
	if got := sumDepositions("refused", 1, b, c); got != 1 {
		t.Errorf("depositions{refused} = %v across the followers, want 1", got)
	}
	if got := b.depositions("timeout") + c.depositions("timeout"); got != 0 {
		t.Errorf("depositions{timeout} = %v, want 0", got)
	}
	// a campaigns again, behind the others: the new leader stays.
	a.noTerm(t, 1500*time.Millisecond)
	if name := leader(t, cli); name != next.name {
		t.Fatalf("leader %q after the deposition, want %q", name, next.name)
	}
}

// A leader that times out for one follower only (that follower is cut off
// from it) is not deposed: one verdict of three voters is no majority.
// When the second follower sees it too, it is deposed; the verdicts go
// with the term.
func TestDeposedByAMajorityOnTimeout(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	w := newWorld(3)
	a := startDeposing(t, cli, "a", w)
	first := a.nextTerm(t, 10*time.Second)
	b := startDeposing(t, cli, "b", w)
	w.waitSeen(t, "b", "a")
	w.set("a", election.TimedOut)
	// b's verdict first (a slow etcd may take a while to write it), then
	// a leader with that one verdict against it must stay.
	keys := state.Keys{Prefix: prefix}
	var resp *clientv3.GetResponse
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var err error
		if resp, err = cli.Get(ctxT(t), keys.Suspects(first.fence.Rev), clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) > 0 || time.Now().After(deadline) {
			break
		}
	}
	if len(resp.Kvs) != 1 || !strings.HasSuffix(string(resp.Kvs[0].Key), "/b") {
		t.Fatalf("verdicts %v, want b's", resp.Kvs)
	}
	if ended(first, 1500*time.Millisecond) {
		t.Fatal("one follower of three voters deposed the leader")
	}
	c := startDeposing(t, cli, "c", w)
	// c never saw a answer (a already timed out for everyone): c alone
	// would never depose it; its verdict needs one seen answer. Let c see
	// one, then lose it.
	w.set("a", election.Answered)
	w.waitSeen(t, "c", "a")
	w.set("a", election.TimedOut)
	t0 := time.Now()
	if !ended(first, 3*time.Second) {
		t.Fatal("a leader two of three replicas see time out was not deposed")
	}
	t.Logf("deposed %s after both followers timed out", time.Since(t0).Round(time.Millisecond))
	leaderOf(t, 2*time.Second, b, c)
	if got := sumDepositions("timeout", 1, b, c); got != 1 {
		t.Errorf("depositions{timeout} = %v, want 1", got)
	}
	resp, err := cli.Get(ctxT(t), keys.Suspects(first.fence.Rev), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 0 {
		t.Errorf("%d verdicts on the ended term left behind", resp.Count)
	}
}

// A leader whose probes find no TCP handshake (its host cut off) is
// deposed by a majority as a timed-out one is, and the deposition says
// why: reason "unreachable", not "timeout".
func TestDeposedByAMajorityWhenUnreachable(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	w := newWorld(3)
	a := startDeposing(t, cli, "a", w)
	first := a.nextTerm(t, 10*time.Second)
	b := startDeposing(t, cli, "b", w)
	c := startDeposing(t, cli, "c", w)
	w.waitSeen(t, "b", "a")
	w.waitSeen(t, "c", "a")
	w.set("a", election.Unreachable)
	if !ended(first, 3*time.Second) {
		t.Fatal("a leader two of three replicas find unreachable was not deposed")
	}
	if got := sumDepositions("unreachable", 1, b, c); got != 1 {
		t.Errorf("depositions{unreachable} = %v, want 1", got)
	}
	if got := b.depositions("timeout") + c.depositions("timeout"); got != 0 {
		t.Errorf("depositions{timeout} = %v, want 0", got)
	}
}

// A pause shorter than suspect_after probes (a GC, a slow disk) deposes
// no one, even where the followers would make a majority.
func TestNoDepositionForAPause(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	w := newWorld(3)
	a := startDeposing(t, cli, "a", w)
	first := a.nextTerm(t, 10*time.Second)
	startDeposing(t, cli, "b", w)
	startDeposing(t, cli, "c", w)
	w.waitSeen(t, "b", "a")
	w.waitSeen(t, "c", "a")
	for range 3 {
		w.pause(t, "a", "b", "c") // one timed-out probe each, then answers
	}
	if ended(first, 100*time.Millisecond) {
		t.Fatal("a paused leader was deposed by two followers of three voters")
	}
}

// The verdict a follower published is withdrawn once the leader answers
// again. A leader no follower ever saw answer (a probe address that
// cannot work) is never deposed.
func TestNoDepositionForAPauseOrAnUnreachableProbe(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	w := newWorld(2)
	a := startDeposing(t, cli, "a", w)
	first := a.nextTerm(t, 10*time.Second)
	b := startDeposing(t, cli, "b", w)
	w.waitSeen(t, "b", "a")
	for range 3 {
		w.pause(t, "a", "b")
	}
	if ended(first, 100*time.Millisecond) {
		t.Fatal("a paused leader was deposed")
	}
	// Timed out long enough for b's verdict, but b is one of two voters:
	// no majority; when a answers, the verdict goes.
	keys := state.Keys{Prefix: prefix}
	count := func() int64 {
		resp, err := cli.Get(ctxT(t), keys.Suspects(first.fence.Rev), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	// until waits up to 3s for the verdicts to number want.
	until := func(want int64) int64 {
		n := count()
		for deadline := time.Now().Add(3 * time.Second); n != want && time.Now().Before(deadline); n = count() {
			time.Sleep(10 * time.Millisecond)
		}
		return n
	}
	w.set("a", election.TimedOut)
	if n := until(1); n != 1 {
		t.Fatalf("%d verdicts, want b's", n)
	}
	w.set("a", election.Answered)
	if n := until(0); n != 0 {
		t.Fatalf("%d verdicts after the leader answered again, want none", n)
	}
	if ended(first, 10*time.Millisecond) || b.depositions("timeout") != 0 {
		t.Fatal("a leader without a majority against it was deposed")
	}

	// A new term whose leader, b, a never sees answer: b refuses a's
	// probes before it can lead (set once b's term began, a probe of a
	// could reach b first and see it answer).
	w.set("b", election.Refused)
	w.set("a", election.Refused)
	if !ended(first, 2*time.Second) {
		t.Fatal("not deposed when refused")
	}
	second := b.nextTerm(t, 2*time.Second)
	a.noTerm(t, 1500*time.Millisecond)
	if ended(second, 10*time.Millisecond) {
		t.Fatal("a leader never seen answering was deposed")
	}
}

// freezer is a TCP proxy to etcd that can stop passing bytes, as a link
// to an etcd member that was cut off does: the connection stays up, calls
// hang until their deadline.
type freezer struct {
	ln     net.Listener
	frozen atomic.Bool
}

func newFreezer(t *testing.T, target string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			go f.pipe(c, u)
			go f.pipe(u, c)
		}
	}()
	return f
}

func (f *freezer) pipe(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		for f.frozen.Load() {
			time.Sleep(5 * time.Millisecond)
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// A follower whose etcd stops answering for a while (its member cut off,
// an etcd election) while the leader dies goes on probing the leader it
// knew, and deposes it once etcd answers again: forgetting what it had
// seen would leave the dead leader to its TTL.
func TestDepositionSurvivesAnEtcdHiccup(t *testing.T) {
	t.Parallel()
	srv := etcdtest.StartServer(t)
	w := newWorld(2)
	a := startDeposing(t, srv.Client, "a", w)
	first := a.nextTerm(t, 10*time.Second)
	fr := newFreezer(t, strings.TrimPrefix(srv.ClientURL, "http://"))
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{fr.ln.Addr().String()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	b := startDeposing(t, cli, "b", w)
	w.waitSeen(t, "b", "a")
	fr.frozen.Store(true)
	w.set("a", election.Refused)
	// b's etcd calls time out, its probes are refused. Its deposition is
	// sent into the frozen link and may be applied when it thaws, after
	// the call gave up: the marker it writes lets b count it all the same
	// (TestDepositionAppliedLateIsCounted), so the outcome does not hang on
	// whether the thaw comes before the call's deadline.
	time.Sleep(1300 * time.Millisecond)
	if ended(first, 10*time.Millisecond) {
		t.Fatal("deposed while the follower's etcd did not answer")
	}
	fr.frozen.Store(false)
	if !ended(first, 3*time.Second) {
		t.Fatal("the follower forgot the dead leader it saw while etcd did not answer: not deposed")
	}
	b.nextTerm(t, 3*time.Second)
	if got := sumDepositions("refused", 1, b); got != 1 {
		t.Errorf("b's depositions{refused} = %v, want 1", got)
	}
}

// The probes of the leader run on their own: a follower whose etcd calls
// hang (its member cut off with the leader's host, etcd electing a leader
// of its own) goes on probing every interval, rather than once per etcd
// call that hung. Before, one loop made both, and each deposition that
// hung (a second) held back the next probe: a leader cut off with an etcd
// member outlived its probes by every call that hung.
func TestProbesGoOnWhileEtcdHangs(t *testing.T) {
	t.Parallel()
	srv := etcdtest.StartServer(t)
	w := newWorld(2)
	a := startDeposing(t, srv.Client, "a", w)
	first := a.nextTerm(t, 10*time.Second)
	fr := newFreezer(t, strings.TrimPrefix(srv.ClientURL, "http://"))
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{fr.ln.Addr().String()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	startDeposing(t, cli, "b", w) // the only follower: every probe is b's
	w.waitSeen(t, "b", "a")
	fr.frozen.Store(true)
	w.set("a", election.Refused) // b's verdict: depose now, in an etcd call that hangs
	time.Sleep(200 * time.Millisecond)
	before := w.probes.Load()
	const during = 1500 * time.Millisecond
	time.Sleep(during)
	got := w.probes.Load() - before
	fr.frozen.Store(false)
	// Every 50 ms: about 30; one loop managed 2 or 3 (each deposition
	// that hung took a second).
	if want := int64(during / (50 * time.Millisecond) / 3); got < want {
		t.Errorf("%d probes of the leader in %v while etcd hung, want at least %d (one every 50ms)", got, during, want)
	}
	if !ended(first, 3*time.Second) {
		t.Fatal("not deposed once etcd answered again")
	}
}

// A follower whose verdict stands deposes the leader as soon as it reads
// a majority of verdicts, not after its next probe times out: here the
// second verdict (c's, written as c would) lands just after b's, and a
// probe takes 3 s to time out. The second of two followers publishing at
// once reads both in its own transaction, so it deposes at once too.
func TestMajorityOfVerdictsDeposesAtOnce(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	w := newWorld(3)
	const timeout = 3 * time.Second // a probe's timeout: what the count waited for
	start := func(name string) deposing {
		reg := prometheus.NewRegistry()
		r := startWith(t, cli, name, 10*time.Second, nil, reg, func(e *election.Election) {
			e.SetDeposition(election.Deposition{Interval: 50 * time.Millisecond, Timeout: timeout, SuspectAfter: 1,
				ProbeURL: func(ctx context.Context, name string) (string, error) { return "probe://" + name, nil },
				Voters:   func(ctx context.Context) (int, error) { return int(w.voters.Load()), nil },
				Probe:    w.proberFor(name),
			})
		})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); r.el.Watch(ctx) }()
		t.Cleanup(func() { cancel(); <-done })
		return deposing{replica: r, reg: reg}
	}
	a := start("a")
	first := a.nextTerm(t, 10*time.Second)
	b := start("b")
	w.waitSeen(t, "b", "a")
	w.set("a", election.TimedOut)
	keys := state.Keys{Prefix: prefix}
	for deadline := time.Now().Add(2 * timeout); ; time.Sleep(10 * time.Millisecond) {
		resp, err := cli.Get(ctxT(t), keys.Suspects(first.fence.Rev), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err == nil && resp.Count == 1 {
			break // b's verdict: one of three voters
		}
		if time.Now().After(deadline) {
			t.Fatal("no verdict from b")
		}
	}
	if _, err := cli.Put(ctxT(t), keys.Suspect(first.fence.Rev, "c"), `{"replica":"c"}`); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if !ended(first, time.Second) {
		t.Fatalf("not deposed within 1s of the second verdict (b's next probe times out %v after its first)", timeout)
	}
	t.Logf("deposed %v after the second verdict", time.Since(t0).Round(time.Millisecond))
	if got := sumDepositions("timeout", 1, b); got != 1 {
		t.Errorf("depositions{timeout} = %v, want 1", got)
	}
}

// A deposition that etcd applied while its call failed (a member that took
// it and answered after the deadline) is logged and counted all the same,
// once: by the second try, which finds the term over and the marker naming
// this follower, or, when every try failed, by the next step's read of the
// marker. Before, a first attempt applied late left the term over with no
// DEPOSED line and no count.
func TestDepositionAppliedLateIsCounted(t *testing.T) {
	for _, c := range []struct {
		name  string
		tries int64 // deposition calls that fail after etcd applied them (-1: all)
	}{{"first try", 1}, {"every try", -1}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := etcdtest.StartServer(t)
			w := newWorld(2)
			a := startDeposing(t, srv.Client, "a", w)
			first := a.nextTerm(t, 10*time.Second)
			var late atomic.Int64 // deposition calls still to fail
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.ClientURL}, DialTimeout: 5 * time.Second,
				DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any,
					cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
					if !isDeposition(req) || late.Load() == 0 {
						return invoker(ctx, method, req, reply, cc, opts...)
					}
					late.Add(-1)
					if err := invoker(context.WithoutCancel(ctx), method, req, reply, cc, opts...); err != nil {
						return err
					}
					return context.DeadlineExceeded // applied, answered too late
				})}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cli.Close() })
			b := startDeposing(t, cli, "b", w)
			w.waitSeen(t, "b", "a")
			late.Store(c.tries)
			w.set("a", election.Refused)
			if !ended(first, 3*time.Second) {
				t.Fatal("not deposed")
			}
			b.nextTerm(t, 3*time.Second)
			if got := sumDepositions("refused", 1, b); got != 1 {
				t.Errorf("b's depositions{refused} = %v, want 1", got)
			}
			time.Sleep(300 * time.Millisecond) // later steps count it no more
			if got := b.depositions("refused"); got != 1 {
				t.Errorf("b's depositions{refused} = %v after a while, want 1", got)
			}
		})
	}
}

// isDeposition reports whether req is a follower's deposition: a
// transaction that deletes an election key.
func isDeposition(req any) bool {
	txn, ok := req.(*etcdserverpb.TxnRequest)
	if !ok {
		return false
	}
	for _, op := range txn.Success {
		if d := op.GetRequestDeleteRange(); d != nil && strings.HasPrefix(string(d.Key), prefix+"election/") {
			return true
		}
	}
	return false
}

// A verdict of a follower that etcd applies after the follower withdrew
// it (a write a member took and answered late, or the hedged copy of one)
// would count towards a majority for the whole term: a transient
// suspicion of another follower would then depose a healthy leader. The
// follower finds its own verdict at its next read of the term, and
// withdraws it again.
func TestAVerdictLandingLateIsWithdrawnAgain(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	w := newWorld(3)
	a := startDeposing(t, cli, "a", w)
	first := a.nextTerm(t, 10*time.Second)
	startDeposing(t, cli, "b", w)
	w.waitSeen(t, "b", "a")
	keys := state.Keys{Prefix: prefix}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	late := keys.Suspect(first.fence.Rev, "b")
	if _, err := cli.Put(ctx, late, `{"replica":"b"}`); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := cli.Get(ctx, late, clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		if resp.Count == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("b's verdict, landed while b sees a answer, is still there after 2s")
		}
	}
	if ended(first, 200*time.Millisecond) {
		t.Fatal("a healthy leader was deposed")
	}
}

// A verdict does not wait behind the etcd loop's reads. A read sent to a
// member cut off with the leader's host hangs until its bound, or until
// etcd's client leaves that member out, which takes about as long as the
// probes take to find the leader's host cut off: the verdict, due just
// then, waited for it. In 2 of 20 link cuts the second follower's verdict
// was published 2 ms after its client left the member out, where it would
// have been ~0.1 s earlier, and DHCP came back one probe step too late.
// Now the first verdict that acts ends the reads of the step.
func TestVerdictDoesNotWaitBehindAHungRead(t *testing.T) {
	t.Parallel()
	srv := etcdtest.StartServer(t)
	w := newWorld(2)
	a := startDeposing(t, srv.Client, "a", w)
	first := a.nextTerm(t, 10*time.Second)
	var (
		hang      atomic.Bool // b's reads hang until their context ends
		mu        sync.Mutex
		cancelled int       // hung reads that ended before their bound
		sentAt    time.Time // b's first deposition
	)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.ClientURL}, DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any,
			cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			switch {
			case isDeposition(req):
				hang.Store(false)
				mu.Lock()
				if sentAt.IsZero() {
					sentAt = time.Now()
				}
				mu.Unlock()
			case hang.Load() && isRead(req):
				<-ctx.Done() // as on a member cut off
				if errors.Is(ctx.Err(), context.Canceled) {
					mu.Lock()
					cancelled++
					mu.Unlock()
				}
				return ctx.Err()
			}
			return invoker(ctx, method, req, reply, cc, opts...)
		})}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	startDeposing(t, cli, "b", w)
	w.waitSeen(t, "b", "a")
	hang.Store(true)
	time.Sleep(300 * time.Millisecond) // b's reads hang, one after the other
	w.set("a", election.Refused)
	if !ended(first, 3*time.Second) {
		t.Fatal("not deposed")
	}
	mu.Lock()
	defer mu.Unlock()
	if sentAt.IsZero() {
		t.Fatal("the term ended, but not by b's deposition")
	}
	// Each hung read ends at its bound, unless a verdict ends it first.
	if cancelled == 0 {
		t.Error("b's deposition waited for its hung read to reach its bound")
	}
}

// isRead reports whether req is a transaction that only reads (a
// follower's read of the term and its verdicts).
func isRead(req any) bool {
	txn, ok := req.(*etcdserverpb.TxnRequest)
	if !ok || len(txn.Compare) > 0 || len(txn.Success) == 0 {
		return false
	}
	for _, op := range txn.Success {
		if op.GetRequestRange() == nil {
			return false
		}
	}
	return true
}

// A follower that deposed the leader, or read that the term is over, and
// is next in line leads at once, also when its campaign's watch has not
// said so. A watch that etcd's client set up again (its member cut off
// with the old leader's host) resumes from a revision in the past, and
// etcd sends such a watch its events only at its next resync, up to
// 0.1 s later: the new leader took that long to learn it had won. Here
// b's watches hear nothing at all while its unary calls go through.
func TestNextInLineLeadsWithoutItsWatch(t *testing.T) {
	for _, c := range []struct {
		name         string
		othersDepose bool // c deposes, b reads that the term is over
	}{{"b deposes", false}, {"c deposes", true}} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			srv := etcdtest.StartServer(t)
			w := newWorld(3)
			a := startDeposing(t, srv.Client, "a", w)
			first := a.nextTerm(t, 10*time.Second)
			var deaf atomic.Bool // b's watches hear nothing
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{srv.ClientURL}, DialTimeout: 5 * time.Second,
				DialOptions: []grpc.DialOption{etcdtest.DeafWatches(&deaf)}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cli.Close() })
			var b deposing
			if c.othersDepose {
				// b sees a answer throughout: only c deposes it.
				reg := prometheus.NewRegistry()
				r := startWith(t, cli, "b", 5*time.Second, nil, reg, func(e *election.Election) {
					e.SetDeposition(election.Deposition{Interval: 50 * time.Millisecond, Timeout: 100 * time.Millisecond, SuspectAfter: 3,
						ProbeURL: func(ctx context.Context, name string) (string, error) { return "probe://" + name, nil },
						Voters:   func(ctx context.Context) (int, error) { return int(w.voters.Load()), nil },
						Probe:    func(ctx context.Context, url string, term int64) election.Outcome { return election.Answered },
					})
				})
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { defer close(done); r.el.Watch(ctx) }()
				t.Cleanup(func() { cancel(); <-done })
				b = deposing{replica: r, reg: reg}
				// b campaigns before c: next in line.
				for deadline := time.Now().Add(10 * time.Second); !campaigns(t, srv.Client, "b"); time.Sleep(10 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatal("b did not campaign within 10s")
					}
				}
				startDeposing(t, srv.Client, "c", w)
				w.waitSeen(t, "c", "a")
			} else {
				b = startDeposing(t, cli, "b", w)
				w.waitSeen(t, "b", "a")
			}
			deaf.Store(true)
			t.Cleanup(func() { deaf.Store(false) })
			w.set("a", election.Refused)
			if !ended(first, 3*time.Second) {
				t.Fatal("not deposed")
			}
			tm := b.nextTerm(t, 3*time.Second) // its watch would say so never
			if !fencedPut(t, srv.Client, tm.fence, "/mayu/x") {
				t.Fatal("b's term's fence does not hold")
			}
			if name := leader(t, srv.Client); name != "b" {
				t.Fatalf("leader %q in etcd, want b", name)
			}
		})
	}
}

// campaigns reports whether replica name has an election key.
func campaigns(t *testing.T, cli *clientv3.Client, name string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix+"election/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range resp.Kvs {
		if string(kv.Value) == name {
			return true
		}
	}
	return false
}
