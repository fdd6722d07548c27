package artifact

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// upstream is an HTTP server of one file whose behaviour a test sets:
// it can cut the connection after some bytes, ignore Range, change the
// file.
type upstream struct {
	t  *testing.T
	mu sync.Mutex
	// content and etag: the file now.
	content []byte
	etag    string
	// cuts: how many more answers are cut after cutAfter bytes.
	cuts     int
	cutAfter int
	// ignoreRange: answer every request with the whole file (200).
	ignoreRange bool
	// onCut runs (under mu) after an answer was cut.
	onCut    func()
	requests []*http.Request
}

func newUpstream(t *testing.T, content []byte) (*upstream, *httptest.Server) {
	u := &upstream{t: t, content: content, etag: `"v1"`}
	srv := httptest.NewServer(u)
	t.Cleanup(srv.Close)
	return u, srv
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	u.requests = append(u.requests, r.Clone(context.Background()))
	if r.URL.Path == "/missing" {
		u.mu.Unlock()
		http.NotFound(w, r)
		return
	}
	content, etag, ignoreRange := u.content, u.etag, u.ignoreRange
	cut := u.cuts > 0
	if cut {
		u.cuts--
	}
	u.mu.Unlock()

	if cut {
		// Announce the whole file (or the rest of it), send part, and
		// drop the connection: what a broken link looks like.
		start := 0
		if rng := r.Header.Get("Range"); rng != "" && r.Header.Get("If-Range") == etag {
			fmt.Sscanf(rng, "bytes=%d-", &start)
		}
		conn, bw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			u.t.Error(err)
			return
		}
		defer conn.Close()
		status := "200 OK"
		extra := ""
		if start > 0 {
			status = "206 Partial Content"
			extra = fmt.Sprintf("Content-Range: bytes %d-%d/%d\r\n", start, len(content)-1, len(content))
		}
		fmt.Fprintf(bw, "HTTP/1.1 %s\r\nContent-Length: %d\r\nETag: %s\r\n%s\r\n", status, len(content)-start, etag, extra)
		bw.Write(content[start:min(start+u.cutAfter, len(content))])
		bw.Flush()
		u.mu.Lock()
		if u.onCut != nil {
			u.onCut()
		}
		u.mu.Unlock()
		return
	}
	if ignoreRange {
		w.Header().Set("ETag", etag)
		w.Header().Set("Content-Length", fmt.Sprint(len(content)))
		w.Write(content)
		return
	}
	w.Header().Set("ETag", etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(content))
}

func (u *upstream) reqs() []*http.Request {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.requests)
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, seed))
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// fetchInto downloads url into a fresh partial of a new cache and
// returns it.
func fetchInto(t *testing.T, c *Cache, url string, attempts int) (*Partial, error) {
	t.Helper()
	p, err := c.Begin("download")
	if err != nil {
		t.Fatal(err)
	}
	return p, Download(context.Background(), http.DefaultClient, url, nil, p, attempts, c.Fits, nil)
}

func commitEquals(t *testing.T, p *Partial, want []byte) {
	t.Helper()
	if p.Size() != int64(len(want)) {
		t.Fatalf("holding %d bytes, want %d", p.Size(), len(want))
	}
	if err := p.Commit(sha256Hex(want)); err != nil {
		t.Fatal(err)
	}
	f, err := p.c.Open(sha256Hex(want))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, _ := io.ReadAll(f)
	if !bytes.Equal(got, want) {
		t.Fatal("the cached bytes differ")
	}
}

func TestDownloadResumesAfterCut(t *testing.T) {
	content := randomBytes(3<<20+17, 1)
	u, srv := newUpstream(t, content)
	u.cuts, u.cutAfter = 2, 1<<20
	c := openCache(t, t.TempDir(), 0)
	p, err := c.Begin("image")
	if err != nil {
		t.Fatal(err)
	}
	var calls [][2]int64
	hdr := http.Header{"Authorization": {"Mayu-Peer test"}}
	err = Download(context.Background(), srv.Client(), srv.URL+"/image", hdr, p, 3, c.Fits, func(b, total int64) {
		calls = append(calls, [2]int64{b, total})
	})
	if err != nil {
		t.Fatal(err)
	}
	reqs := u.reqs()
	if len(reqs) != 3 {
		t.Fatalf("%d requests, want 3", len(reqs))
	}
	for i, want := range []string{"", "bytes=1048576-", "bytes=2097152-"} {
		r := reqs[i]
		if r.Header.Get("Range") != want {
			t.Errorf("request %d: Range %q, want %q", i, r.Header.Get("Range"), want)
		}
		if want != "" && r.Header.Get("If-Range") != `"v1"` {
			t.Errorf("request %d: If-Range %q", i, r.Header.Get("If-Range"))
		}
		if r.Header.Get("Authorization") != "Mayu-Peer test" {
			t.Errorf("request %d without the header", i)
		}
		if r.Header.Get("Accept-Encoding") != "identity" {
			t.Errorf("request %d: Accept-Encoding %q", i, r.Header.Get("Accept-Encoding"))
		}
	}
	if len(calls) == 0 || calls[len(calls)-1] != [2]int64{int64(len(content)), int64(len(content))} {
		t.Errorf("progress %v, want the end last", calls)
	}
	commitEquals(t, p, content)
}

func TestDownloadServerIgnoringRangeStartsOver(t *testing.T) {
	content := randomBytes(2<<20, 2)
	u, srv := newUpstream(t, content)
	u.cuts, u.cutAfter = 1, 700000
	u.ignoreRange = true
	c := openCache(t, t.TempDir(), 0)
	p, err := fetchInto(t, c, srv.URL, 3)
	if err != nil {
		t.Fatal(err)
	}
	if reqs := u.reqs(); len(reqs) != 2 || reqs[1].Header.Get("Range") != "bytes=700000-" {
		t.Fatalf("requests %d", len(reqs))
	}
	if c.Used() != int64(len(content)) {
		t.Errorf("used %d: the first bytes are counted twice", c.Used())
	}
	commitEquals(t, p, content)
}

func TestDownloadChangedUpstreamStartsOver(t *testing.T) {
	old, current := randomBytes(2<<20, 3), randomBytes(2<<20+5, 4)
	u, srv := newUpstream(t, old)
	u.cuts, u.cutAfter = 1, 1<<20
	c := openCache(t, t.TempDir(), 0)
	p, err := c.Begin("image")
	if err != nil {
		t.Fatal(err)
	}
	// Once the first answer is cut, upstream publishes a new version.
	u.onCut = func() { u.content, u.etag = current, `"v2"` }
	if err := Download(context.Background(), srv.Client(), srv.URL, nil, p, 3, c.Fits, nil); err != nil {
		t.Fatal(err)
	}
	reqs := u.reqs()
	if len(reqs) != 2 || reqs[1].Header.Get("If-Range") != `"v1"` {
		t.Fatalf("%d requests; the resumed one did not carry If-Range \"v1\"", len(reqs))
	}
	commitEquals(t, p, current)
}

func TestDownloadAlreadyComplete(t *testing.T) {
	content := randomBytes(100000, 5)
	u, srv := newUpstream(t, content)
	dir := t.TempDir()
	c := openCache(t, dir, 0)
	p, _ := c.Begin("image")
	p.Write(content)
	p.Close()
	p, err := c.Begin("image")
	if err != nil {
		t.Fatal(err)
	}
	// Resumed at the end: the server answers 416.
	if err := Download(context.Background(), srv.Client(), srv.URL, nil, p, 1, c.Fits, nil); err != nil {
		t.Fatal(err)
	}
	if reqs := u.reqs(); len(reqs) != 1 || reqs[0].Header.Get("Range") != "bytes=100000-" {
		t.Fatalf("requests %d", len(reqs))
	}
	commitEquals(t, p, content)

	// A partial longer than the file (it changed): start over.
	p, _ = c.Begin("longer")
	p.Write(append(bytes.Clone(content), "more"...))
	if err := Download(context.Background(), srv.Client(), srv.URL, nil, p, 2, c.Fits, nil); err != nil {
		t.Fatal(err)
	}
	if p.Size() != int64(len(content)) {
		t.Fatalf("holding %d", p.Size())
	}
}

func TestDownloadRefusals(t *testing.T) {
	content := randomBytes(50000, 6)
	u, srv := newUpstream(t, content)

	t.Run("404", func(t *testing.T) {
		c := openCache(t, t.TempDir(), 0)
		before := len(u.reqs())
		_, err := fetchInto(t, c, srv.URL+"/missing", 3)
		if err == nil || !strings.Contains(err.Error(), "404 Not Found") || !strings.Contains(err.Error(), srv.URL+"/missing") {
			t.Fatalf("got %v, want an error naming 404 and the URL", err)
		}
		if n := len(u.reqs()) - before; n != 1 {
			t.Errorf("%d requests for a 404", n)
		}
	})
	t.Run("quota", func(t *testing.T) {
		c := openCache(t, t.TempDir(), 10000)
		p, err := fetchInto(t, c, srv.URL, 3)
		if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "quota") {
			t.Fatalf("got %v, want ErrNoSpace", err)
		}
		if p.Size() != 0 || c.Used() != 0 {
			t.Errorf("wrote %d bytes before refusing", p.Size())
		}
	})
	t.Run("disk", func(t *testing.T) {
		c := openCache(t, t.TempDir(), 0)
		c.free = func() (int64, error) { return 1000, nil }
		p, err := fetchInto(t, c, srv.URL, 3)
		if !errors.Is(err, ErrNoSpace) || !strings.Contains(err.Error(), "1000 bytes free") {
			t.Fatalf("got %v, want ErrNoSpace", err)
		}
		if p.Size() != 0 {
			t.Errorf("wrote %d bytes before refusing", p.Size())
		}
	})
	t.Run("resumed, only the rest needs to fit", func(t *testing.T) {
		c := openCache(t, t.TempDir(), int64(len(content)))
		p, _ := c.Begin("download")
		p.Write(content[:30000])
		if err := Download(context.Background(), srv.Client(), srv.URL, nil, p, 1, c.Fits, nil); err != nil {
			t.Fatal(err)
		}
		commitEquals(t, p, content)
	})
	t.Run("gives up", func(t *testing.T) {
		u.mu.Lock()
		u.cuts, u.cutAfter = 100, 1000
		u.mu.Unlock()
		t.Cleanup(func() { u.mu.Lock(); u.cuts = 0; u.mu.Unlock() })
		c := openCache(t, t.TempDir(), 0)
		before := len(u.reqs())
		p, err := fetchInto(t, c, srv.URL, 3)
		if err == nil || !strings.Contains(err.Error(), "gave up after 3 attempts") {
			t.Fatalf("got %v", err)
		}
		if n := len(u.reqs()) - before; n != 3 {
			t.Errorf("%d requests, want 3", n)
		}
		// What came is kept for a later resume.
		if p.Size() != 3000 {
			t.Errorf("holding %d", p.Size())
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		c := openCache(t, t.TempDir(), 0)
		p, _ := c.Begin("download")
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := Download(ctx, srv.Client(), srv.URL, nil, p, 3, c.Fits, nil)
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("got %v", err)
		}
	})
}

func TestDownloadRetriesUnavailable(t *testing.T) {
	content := randomBytes(1000, 7)
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		w.Write(content)
	}))
	defer srv.Close()
	c := openCache(t, t.TempDir(), 0)
	p, err := fetchInto(t, c, srv.URL, 2)
	if err != nil {
		t.Fatal(err)
	}
	commitEquals(t, p, content)
}

// TestDownloadMemoryFlat streams 64 MiB (never held anywhere: the server
// generates it) and checks that the download allocates a small fraction
// of that: the file is never buffered whole.
func TestDownloadMemoryFlat(t *testing.T) {
	const size = 64 << 20
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		io.CopyN(w, zeros{}, size)
	}))
	defer srv.Close()
	c := openCache(t, t.TempDir(), 0)
	p, _ := c.Begin("big")
	defer p.Discard()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	if err := Download(context.Background(), srv.Client(), srv.URL, nil, p, 1, c.Fits, func(int64, int64) {}); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if p.Size() != size {
		t.Fatalf("holding %d", p.Size())
	}
	t.Logf("allocated %d bytes to stream %d", after.TotalAlloc-before.TotalAlloc, size)
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("allocated %d bytes to stream %d", alloc, size)
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

func TestGet(t *testing.T) {
	_, srv := newUpstream(t, []byte("small file"))
	b, err := Get(context.Background(), srv.Client(), srv.URL, 100)
	if err != nil || string(b) != "small file" {
		t.Fatalf("%q %v", b, err)
	}
	if _, err := Get(context.Background(), srv.Client(), srv.URL, 5); err == nil || !strings.Contains(err.Error(), "more than the 5") {
		t.Errorf("over the limit: %v", err)
	}
	// Without a Content-Length the limit still holds.
	chunked := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range 100 {
			w.Write([]byte("0123456789"))
			w.(http.Flusher).Flush()
		}
	}))
	defer chunked.Close()
	if _, err := Get(context.Background(), chunked.Client(), chunked.URL, 500); err == nil || !strings.Contains(err.Error(), "more than the 500") {
		t.Errorf("chunked, over the limit: %v", err)
	}
	missing := httptest.NewServer(http.NotFoundHandler())
	defer missing.Close()
	if _, err := Get(context.Background(), missing.Client(), missing.URL+"/x.DIGESTS.asc", 100); err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), missing.URL+"/x.DIGESTS.asc") {
		t.Errorf("404: %v", err)
	}
}
