package etcd_test

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/config"
)

// A member that goes silent (frozen: its connections stay up, as when its
// host's link is cut) is taken out of the client's endpoints within about
// a second, so that calls stop hanging on it; once it answers again it is
// put back.
func TestSilentMemberLeftOut(t *testing.T) {
	c := etcdtest.StartCluster(t, etcdtest.ClusterOptions{})
	conn, err := open(t, node(config.Etcd{Endpoints: c.Endpoints}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cli := conn.Client
	// calls makes n short writes, as a leader's lease writes are, and
	// counts those that did not finish in time.
	calls := func(n int) (late int) {
		for i := range n {
			// A call sent to the silent member hangs: any bound tells
			// it from a slow one.
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			if _, err := cli.Put(ctx, "/mayu/members-test", time.Now().String()); err != nil {
				late++
				t.Logf("call %d: %v", i, err)
			}
			cancel()
		}
		return late
	}
	if late := calls(9); late != 0 {
		t.Fatalf("%d of 9 calls late with every member up", late)
	}
	// A member that does not lead raft: the test is about the client,
	// not about an etcd election.
	silent := -1
	for i, ep := range c.Endpoints {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := cli.Status(ctx, ep)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		if st.Leader != st.Header.MemberId {
			silent = i
		}
	}
	c.Freeze(silent)
	defer c.Thaw(silent)
	time.Sleep(1500 * time.Millisecond)
	if late := calls(12); late != 0 {
		t.Errorf("%d of 12 calls late 1.5 s after a member went silent: it is still in the client's round robin", late)
	}
	c.Thaw(silent)
	deadline := time.Now().Add(5 * time.Second)
	for len(cli.Endpoints()) != 3 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if got := cli.Endpoints(); len(got) != 3 {
		t.Errorf("endpoints %v after the member answered again, want all three", got)
	}
}

// The streams already open on a member that goes silent move to one that
// answers: a watch (with and without WithRequireLeader, as the followers
// and the campaign open theirs) sees the next change, and a session's
// lease keepalives go on, well before gRPC's keepalive would notice (10
// s) and before the session's TTL runs out. Taking the member out of the
// endpoints alone leaves them hanging on it (gRPC's GracefulClose waits
// for them to end).
func TestStreamsLeaveSilentMember(t *testing.T) {
	c := etcdtest.StartCluster(t, etcdtest.ClusterOptions{})
	conn, err := open(t, node(config.Etcd{Endpoints: c.Endpoints}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cli := conn.Client
	silent := c.NonLeader()
	others := c.ClientWithout(silent)

	// Every stream opened on the member about to go silent: only its
	// endpoint is in the client while they open.
	cli.SetEndpoints(c.Endpoints[silent])
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	watches := map[string]clientv3.WatchChan{
		"watch":                  cli.Watch(ctx, "/mayu/streams-test"),
		"watch (require leader)": cli.Watch(clientv3.WithRequireLeader(ctx), "/mayu/streams-test"),
	}
	grant, err := cli.Grant(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	alive, err := cli.KeepAlive(ctx, grant.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "/mayu/streams-test", "before"); err != nil {
		t.Fatal(err)
	}
	for name, ch := range watches {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: no event with every member up", name)
		}
	}
	select {
	case <-alive:
	case <-time.After(5 * time.Second):
		t.Fatal("no keepalive answer with every member up")
	}
	cli.SetEndpoints(c.Endpoints...)

	c.Freeze(silent)
	defer c.Thaw(silent)
	frozen := time.Now()
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
	defer wcancel()
	if _, err := others.Put(wctx, "/mayu/streams-test", "after"); err != nil {
		t.Fatal(err)
	}
	const bound = 2500 * time.Millisecond // gRPC's keepalive would take 10 s
	for name, ch := range watches {
		select {
		case resp := <-ch:
			if err := resp.Err(); err != nil {
				t.Errorf("%s: %v", name, err)
			} else if d := time.Since(frozen); d > bound {
				t.Errorf("%s: the change came %s after the member went silent, want under %s", name, d.Round(time.Millisecond), bound)
			} else {
				t.Logf("%s: the change came %s after the member went silent", name, d.Round(time.Millisecond))
			}
		case <-time.After(bound - time.Since(frozen)):
			t.Errorf("%s: no change %s after a member went silent: the watch still hangs on it", name, bound)
		}
	}
	// The lease's keepalives go on past its TTL: its session would end
	// when the client stops hearing them.
	heard := time.Time{}
	for until := time.After(4 * time.Second); ; {
		select {
		case resp, ok := <-alive:
			if !ok {
				t.Fatalf("the lease's keepalives stopped %s after a member went silent (TTL 3 s; answers heard since: %v)",
					time.Since(frozen).Round(time.Millisecond), !heard.IsZero())
			}
			if resp != nil {
				heard = time.Now()
			}
			continue
		case <-until:
		}
		break
	}
	if heard.IsZero() {
		t.Fatal("no keepalive answer in the 4 s after a member went silent")
	}
}
