package replica

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/mayu-boot/mayu/pkg/config"
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
