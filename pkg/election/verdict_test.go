package election

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"

	"github.com/mayu-boot/mayu/internal/etcdtest"
)

// lateTxns is a client whose transactions, while late is set, are applied
// by etcd but fail on the client, as a call that a member took and
// answered after its deadline does.
func lateTxns(t *testing.T, endpoint string, late *atomic.Bool) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, DialTimeout: 5 * time.Second,
		DialOptions: []grpc.DialOption{grpc.WithUnaryInterceptor(func(ctx context.Context, method string, req, reply any,
			cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			if method != "/etcdserverpb.KV/Txn" || !late.Load() {
				return invoker(ctx, method, req, reply, cc, opts...)
			}
			if err := invoker(context.WithoutCancel(ctx), method, req, reply, cc, opts...); err != nil {
				return err
			}
			return context.DeadlineExceeded
		})}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// A verdict whose write etcd applied while the call failed (answered after
// its deadline, or a first try twice gave up on) is not known published,
// but withdraw deletes it all the same. Before, withdraw did nothing
// without a verdict known published, and the one that landed late counted
// towards a majority for the whole term.
func TestWithdrawAVerdictAppliedLate(t *testing.T) {
	t.Parallel()
	srv := etcdtest.StartServer(t)
	prefix := etcdtest.Prefix(t)
	var late atomic.Bool
	cli := lateTxns(t, srv.ClientURL, &late)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e := New(cli, prefix, "b", 5*time.Second, slog.New(slog.DiscardHandler), nil)
	resp, err := srv.Client.Put(ctx, prefix+"election/a", "a")
	if err != nil {
		t.Fatal(err)
	}
	l := leaderKey{name: "a", key: prefix + "election/a", rev: resp.Header.Revision}
	var v verdictLease
	defer v.close(ctx, e)
	verdicts := func() int64 {
		t.Helper()
		resp, err := srv.Client.Get(ctx, e.keys.Suspects(l.rev), clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}

	if !v.ready(ctx, e) {
		t.Fatal("no verdict lease")
	}
	late.Store(true)
	if _, ok := v.publish(ctx, e, l, "probe://a"); ok {
		t.Fatal("a verdict whose call failed was reported published")
	}
	late.Store(false)
	if n := verdicts(); n != 1 {
		t.Fatalf("%d verdicts in etcd, want the one applied late", n)
	}
	if v.published(l.rev) {
		t.Fatal("a verdict whose call failed counts as known published")
	}
	v.withdraw(ctx, e)
	if n := verdicts(); n != 0 {
		t.Fatalf("%d verdicts left after withdraw, want none: the one applied late stays for the whole term", n)
	}
}

// Only the first of a run of verdicts that act ends the etcd loop's
// reads: the probes repeat a verdict at every probe while it holds, and
// reads that gave way to each would never learn that the term changed.
// A verdict whose action failed makes the next one end them again; a
// step after an ended one is not ended.
func TestOnlyAFirstVerdictEndsTheReads(t *testing.T) {
	w := &watched{kick: make(chan struct{}, 1)}
	type step struct {
		before []finding // posted before the step's reads begin
		during *finding  // posted while they run
		rearm  bool      // the action on the verdict failed
		full   bool      // the step after one that was ended
		want   bool      // the step's reads end early
		what   string
	}
	act := func(term int64, v verdict) *finding { return &finding{term: term, v: v} }
	for _, s := range []step{
		{during: act(7, answering), what: "an answer"},
		{during: act(7, suspect), want: true, what: "a first suspicion"},
		{during: act(7, suspect), what: "the same suspicion again"},
		{during: act(7, suspect), rearm: true, what: "and again, its publication failing"},
		{during: act(7, suspect), want: true, what: "the suspicion after a failed publication"},
		{during: act(7, deposeAlone), want: true, what: "a refusal after it"},
		{during: act(8, deposeAlone), want: true, what: "a refusal on the next term"},
		{during: act(8, answering), what: "an answer again"},
		{before: []finding{*act(8, suspect)}, want: true, what: "a suspicion posted between steps"},
		{before: []finding{*act(8, deposeAlone)}, full: true, what: "a step after an ended one"},
		{before: []finding{*act(9, suspect), *act(9, answering)}, what: "a suspicion overtaken by an answer"},
	} {
		for _, f := range s.before {
			w.post(f)
		}
		rctx, stop := w.reading(context.Background(), !s.full)
		if s.during != nil {
			w.post(*s.during)
		}
		wait := 100 * time.Millisecond
		if s.want {
			wait = 10 * time.Second // ends at once; a loaded machine may take a while
		}
		select {
		case <-rctx.Done():
			if !s.want {
				t.Errorf("%s: the reads ended", s.what)
			}
		case <-time.After(wait):
			if s.want {
				t.Errorf("%s: the reads did not end", s.what)
			}
		}
		stop()
		w.take()
		if s.rearm {
			w.rearm()
		}
	}
}
