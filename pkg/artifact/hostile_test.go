package artifact

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/state"
)

// A body of unknown length (chunked, or endless) is checked against the
// disk as it streams: it stops with ErrNoSpace before the disk is down to
// its reserve, rather than filling the disk etcd may share.
func TestChunkedBodyStopsAtTheDisksReserve(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 1<<20)
		for i := 0; i < 64; i++ { // 64 MiB, chunked (no Content-Length)
			if _, err := w.Write(buf); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	c := openCache(t, t.TempDir(), 0)
	// The disk has 8 MiB more than the reserve, less what was written.
	c.free = func() (int64, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return minFree + 8<<20 - c.used, nil
	}
	p, err := c.Begin("download")
	if err != nil {
		t.Fatal(err)
	}
	err = Download(context.Background(), srv.Client(), srv.URL, nil, p, 1, c.Fits, nil)
	if !errors.Is(err, ErrNoSpace) {
		t.Fatalf("Download: %v, want ErrNoSpace", err)
	}
	if p.Size() > freeCheckEvery {
		t.Errorf("wrote %d bytes before stopping", p.Size())
	}
}

// An upstream that answers 404 (a typo in the URL) is asked once: the
// record turns failed, saying so, and the claim is released; asking again
// and again would change nothing.
func TestPermanentUpstreamRefusal(t *testing.T) {
	cli := etcdtest.Start(t)
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		http.NotFound(w, r)
	}))
	defer srv.Close()
	rs := startReplicas(t, cli, 1)
	if _, err := rs[0].m.Add(context.Background(), AddRequest{Name: "typo", URL: srv.URL + "/nope.bin", SHA256: strings.Repeat("ab", 32)}, "alice"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		rec, _ := rs[0].m.Lookup("typo")
		if rec.Status == Failed {
			if !strings.Contains(rec.Error, "404") {
				t.Errorf("failed with %q, want the 404 named", rec.Error)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still %s after 15 s, upstream asked %d times", rec.Status, hits.Load())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// The claim is deleted by a transaction after the record's.
	claim := state.Keys{Prefix: etcdtest.Prefix(t)}.ArtifactClaim("typo")
	eventually(t, 10*time.Second, "the claim is released", func() bool {
		resp, err := cli.Get(context.Background(), claim)
		return err == nil && len(resp.Kvs) == 0
	})
	if n := hits.Load(); n != 1 {
		t.Errorf("upstream asked %d times", n)
	}
}
