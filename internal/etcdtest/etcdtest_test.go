package etcdtest

import (
	"context"
	"testing"
	"time"
)

func TestStartIsolated(t *testing.T) {
	t.Parallel()
	a, b := Start(t), Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	key := Prefix(t) + "k"
	if _, err := a.Put(ctx, key, "v"); err != nil {
		t.Fatal(err)
	}
	resp, err := b.Get(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Fatal("two etcds share a key")
	}
	resp, err = a.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "v" {
		t.Fatalf("get back: %v %v", resp, err)
	}
}

func TestStop(t *testing.T) {
	t.Parallel()
	s := StartServer(t)
	s.Stop()
	s.Stop() // idempotent; Cleanup stops it a third time
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, err := s.Client.Get(ctx, "k"); err == nil {
		t.Fatal("a stopped etcd answered")
	}
}
