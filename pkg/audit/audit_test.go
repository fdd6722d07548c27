package audit

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/state"
)

func newStore(t *testing.T, maxEntries int, maxAge time.Duration) (*Store, *clientv3.Client) {
	t.Helper()
	cli := etcdtest.Start(t)
	return New(cli, Options{Prefix: etcdtest.Prefix(t), Replica: "r1", MaxEntries: maxEntries, MaxAge: maxAge}), cli
}

func count(t *testing.T, s *Store) int64 {
	t.Helper()
	resp, err := s.cli.Get(context.Background(), s.keys.Audit(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// An entry is written before the change with status 0, then finished with
// its result; List shows the newest first and filters by machine.
func TestBeginFinishList(t *testing.T) {
	s, _ := newStore(t, 1000, time.Hour)
	ctx := context.Background()
	for i := range 5 {
		e, err := s.Begin(ctx, api.AuditEntry{Who: "alice", Via: api.ViaToken, Role: api.RoleAdmin, Method: "POST",
			Route: "/api/v1/machines/{id}/reinstall", Machine: fmt.Sprintf("m%d", i%2), Remote: "10.0.0.5:1234"})
		if err != nil {
			t.Fatal(err)
		}
		if e.ID == "" || e.Replica != "r1" || e.Status != 0 {
			t.Fatalf("begun: %+v", e)
		}
		if !(state.Keys{Prefix: s.o.Prefix}).Match(s.keys.AuditEntry(e.ID)) {
			t.Fatalf("key of %s is not in the schema", e.ID)
		}
		if i < 4 {
			e.Status = 200
			if err := s.Finish(ctx, e); err != nil {
				t.Fatal(err)
			}
		}
	}
	all, err := s.List(ctx, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 5 {
		t.Fatalf("%d entries", len(all))
	}
	if all[0].Status != 0 || all[1].Status != 200 || !all[0].Time.After(all[4].Time) {
		t.Errorf("not newest first, or statuses wrong: %+v", all)
	}
	m1, err := s.List(ctx, "m1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(m1) != 2 || m1[0].Machine != "m1" || m1[1].Machine != "m1" {
		t.Errorf("machine m1: %+v", m1)
	}
	two, err := s.List(ctx, "", 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(two) != 2 || two[0].ID != all[0].ID {
		t.Errorf("limit 2: %+v", two)
	}
}

// Paging: a filter matching only old entries still finds them behind
// many newer ones.
func TestListPages(t *testing.T) {
	s, _ := newStore(t, 10000, time.Hour)
	ctx := context.Background()
	if _, err := s.Begin(ctx, api.AuditEntry{Machine: "old", Method: "DELETE"}); err != nil {
		t.Fatal(err)
	}
	for range 120 {
		if _, err := s.Begin(ctx, api.AuditEntry{Machine: "new", Method: "POST"}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.List(ctx, "old", 10)
	if err != nil || len(got) != 1 || got[0].Method != "DELETE" {
		t.Fatalf("%v %+v", err, got)
	}
}

// Fields are clipped so an entry stays under its 4 KiB bound, even when
// every byte needs escaping.
func TestEntryBound(t *testing.T) {
	s, cli := newStore(t, 1000, time.Hour)
	huge := strings.Repeat("\x01", 10000)
	e, err := s.Begin(context.Background(), api.AuditEntry{Who: huge, Via: huge, Role: huge, Remote: huge, Replica: huge,
		Method: huge, Route: huge, Path: huge, Machine: huge, Summary: huge})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(context.Background(), s.keys.AuditEntry(e.ID))
	if err != nil {
		t.Fatal(err)
	}
	// Control characters are the worst case of JSON escaping (\u0001).
	if n := len(resp.Kvs[0].Value); n > 2048 {
		t.Fatalf("entry is %d bytes", n)
	}
	// The documented bound holds for what an admin sends in practice:
	// printable text.
	wide := strings.Repeat("é", 5000)
	e, err = s.Begin(context.Background(), api.AuditEntry{Who: wide, Via: wide, Role: wide, Remote: wide, Replica: wide,
		Method: wide, Route: wide, Path: wide, Machine: wide, Summary: strings.Repeat(`"`, 5000)})
	if err != nil {
		t.Fatal(err)
	}
	resp, _ = cli.Get(context.Background(), s.keys.AuditEntry(e.ID))
	if n := len(resp.Kvs[0].Value); n > 2048 {
		t.Fatalf("entry is %d bytes", n)
	}
}

func TestClipJSON(t *testing.T) {
	for _, s := range []string{"", "short", strings.Repeat("a", 100), strings.Repeat("\x01", 30), strings.Repeat("é", 40),
		strings.Repeat("<", 20), "\xff\xfe" + strings.Repeat("x", 60), strings.Repeat("\"", 50)} {
		got := clipJSON(s, 64)
		if jsonLen(got) > 64 {
			t.Errorf("clipJSON(%q) = %q: %d bytes of JSON", s, got, jsonLen(got))
		}
		if jsonLen(s) <= 64 && got != s {
			t.Errorf("clipJSON(%q) = %q, want it whole", s, got)
		}
		if got != s && !strings.HasSuffix(got, "...") {
			t.Errorf("clipJSON(%q) = %q, cut without ...", s, got)
		}
	}
}

// Retention by count: the oldest go, the newest max stay.
func TestPruneByCount(t *testing.T) {
	s, _ := newStore(t, 10, 0)
	ctx := context.Background()
	var ids []string
	for range 25 {
		e, err := s.Begin(ctx, api.AuditEntry{Method: "POST"})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	n, err := s.Prune(ctx)
	if err != nil || n != 15 {
		t.Fatalf("pruned %d, %v", n, err)
	}
	left, err := s.List(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 10 || left[9].ID != ids[15] || left[0].ID != ids[24] {
		t.Fatalf("left %d entries, oldest %s (want %s)", len(left), left[len(left)-1].ID, ids[15])
	}
	if n, err := s.Prune(ctx); err != nil || n != 0 {
		t.Fatalf("second prune: %d, %v", n, err)
	}
}

// Every pruneEvery entries a replica prunes without waiting for its
// minute.
func TestPruneAfterWrites(t *testing.T) {
	s, _ := newStore(t, 10, 0)
	ctx := context.Background()
	for range pruneEvery {
		if _, err := s.Begin(ctx, api.AuditEntry{Method: "POST"}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for count(t, s) > 10 {
		if time.Now().After(deadline) {
			t.Fatalf("%d entries after %d writes with max_entries 10", count(t, s), pruneEvery)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Retention by age: entries older than MaxAge go, in one range delete.
func TestPruneByAge(t *testing.T) {
	s, _ := newStore(t, 1000, 24*time.Hour)
	ctx := context.Background()
	start := time.Now()
	for i := range 6 {
		// Two days ago, ... up to now: one entry every 10 hours.
		s.now = func() time.Time { return start.Add(-50*time.Hour + time.Duration(i)*10*time.Hour) }
		if _, err := s.Begin(ctx, api.AuditEntry{Method: "POST", Summary: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	s.now = func() time.Time { return start }
	n, err := s.Prune(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// -50h, -40h, -30h are older than 24h; -20h, -10h, 0h stay.
	left, _ := s.List(ctx, "", 0)
	if n != 3 || len(left) != 3 || left[2].Summary != "3" {
		t.Fatalf("pruned %d, left %+v", n, left)
	}
}

// With etcd gone, Begin fails (and the admin API then refuses the change)
// and the failure is counted.
func TestBeginFailsWithoutEtcd(t *testing.T) {
	srv := etcdtest.StartServer(t)
	s := New(srv.Client, Options{Prefix: etcdtest.Prefix(t), Timeout: 500 * time.Millisecond, MaxEntries: 100})
	srv.Stop()
	if _, err := s.Begin(context.Background(), api.AuditEntry{Method: "POST"}); err == nil {
		t.Fatal("Begin succeeded without etcd")
	}
	if got := testutilCount(s.metrics.writeFailures.WithLabelValues("begin")); got != 1 {
		t.Errorf("write failures counted: %v", got)
	}
}

func testutilCount(c interface{ Write(*dto.Metric) error }) float64 {
	var m dto.Metric
	c.Write(&m)
	return m.GetCounter().GetValue()
}
