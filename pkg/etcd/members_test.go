package etcd_test

import (
	"context"
	"testing"
	"time"

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
			ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
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
