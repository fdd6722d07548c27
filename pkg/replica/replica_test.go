package replica

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/election"
)

// A replica stopped while etcd is unreachable stops at once: its
// announcement must not wait for etcd (a SIGTERM during an outage would
// otherwise never complete).
func TestAnnounceStopsWithEtcdDown(t *testing.T) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{"127.0.0.1:1"}, DialTimeout: time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	cfg := &config.Config{Node: config.Node{Name: "r1", Etcd: config.Etcd{Prefix: "/mayu/"}}}
	r := New(cli, cfg, Info{}, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); r.Run(ctx) }()
	time.Sleep(500 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the replica still runs 5 s after it was told to stop, etcd being down")
	}
}

// Two replicas given different files by hand (the same configuration):
// the leader publishes its digests, the other disagrees exactly as it
// would on a configuration mismatch (no campaign, a mismatch naming the
// file and both digests, the metrics at 0), and agrees again once its
// file is the leader's.
func TestFilesThatDifferAreAMismatch(t *testing.T) {
	cli := etcdtest.Start(t)
	prefix := etcdtest.Prefix(t)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := func(name string) *config.Config {
		return &config.Config{Node: config.Node{Name: name, Etcd: config.Etcd{Prefix: prefix}}}
	}
	a, b := strings.Repeat("a", 64), strings.Repeat("b", 64)
	kernel := strings.Repeat("c", 64)
	leaderFiles := map[string]string{"cluster.install.image": a, "cluster.install.kernel": kernel}
	if ConfigHash("h", leaderFiles) == ConfigHash("h", map[string]string{"cluster.install.image": b, "cluster.install.kernel": kernel}) {
		t.Fatal("the hash does not cover the files")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r1 := New(cli, cfg("r1"), Info{Files: leaderFiles}, log, nil)
	go r1.Run(ctx)
	el := election.New(cli, prefix, "r1", 2*time.Second, log, nil)
	go el.Run(ctx, func(ctx context.Context, f election.Fence) {
		if err := r1.Publish(ctx, f); err != nil {
			t.Errorf("publish: %v", err)
		}
		<-ctx.Done()
	})

	reg := prometheus.NewRegistry()
	r2 := New(cli, cfg("r2"), Info{Files: map[string]string{"cluster.install.image": b, "cluster.install.kernel": kernel}}, log, reg)
	go r2.Run(ctx)
	mismatch := waitFor(t, func() string { return r2.Mismatch() })
	for _, want := range []string{"cluster.install.image: own bbbbbbbbbbbb, leader's aaaaaaaaaaaa", "leader r1"} {
		if !strings.Contains(mismatch, want) {
			t.Errorf("mismatch %q does not say %q", mismatch, want)
		}
	}
	if strings.Contains(mismatch, "cluster.install.kernel") {
		t.Errorf("mismatch %q names a file that agrees", mismatch)
	}
	if ok, _ := r2.Eligible(); ok {
		t.Error("a replica serving another image may campaign")
	}
	if d := r2.FilesDiffer(); len(d) != 1 {
		t.Errorf("FilesDiffer %q", d)
	}
	if got := testutil.ToFloat64(r2.metrics.fileMatchesLeader.WithLabelValues("cluster.install.image")); got != 0 {
		t.Errorf("mayu_config_file_matches_leader{file=image} = %v", got)
	}
	if got := testutil.ToFloat64(r2.metrics.fileMatchesLeader.WithLabelValues("cluster.install.kernel")); got != 1 {
		t.Errorf("mayu_config_file_matches_leader{file=kernel} = %v", got)
	}
	if got := testutil.ToFloat64(r2.metrics.configMatchesLeader.WithLabelValues()); got != 0 {
		t.Errorf("mayu_config_matches_leader = %v", got)
	}
	if m := r1.Mismatch(); m != "" {
		t.Errorf("the leader disagrees with itself: %s", m)
	}

	// The file fixed (a restart with the leader's image): it agrees.
	r3 := New(cli, cfg("r3"), Info{Files: leaderFiles}, log, nil)
	go r3.Run(ctx)
	deadline := time.Now().Add(5 * time.Second)
	for {
		ok, _ := r3.Eligible()
		if ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a replica with the leader's files is not eligible: %q", r3.Mismatch())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFor returns f's first non-empty answer within 10 s.
func waitFor(t *testing.T, f func() string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if s := f(); s != "" {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
