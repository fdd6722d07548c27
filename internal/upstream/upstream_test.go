package upstream

import (
	"bytes"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/netlab"
)

type lab struct {
	t    *testing.T
	dir  string
	data []byte
	srv  *Server
	url  string
	log  *netlab.Output
}

// newLab serves a directory holding big.img (size bytes) at rate.
func newLab(t *testing.T, size int, rate int64) *lab {
	t.Helper()
	l := &lab{t: t, dir: t.TempDir(), log: &netlab.Output{}}
	l.data = make([]byte, size)
	rand.NewChaCha8([32]byte{1}).Read(l.data)
	if err := os.WriteFile(filepath.Join(l.dir, "big.img"), l.data, 0o644); err != nil {
		t.Fatal(err)
	}
	var err error
	if l.srv, err = New(Config{Dir: l.dir, Rate: rate, Log: l.log}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.srv.Close() })
	hs := httptest.NewServer(l.srv)
	t.Cleanup(hs.Close)
	l.url = hs.URL
	return l
}

func (l *lab) get(path string, header ...string) (*http.Response, []byte) {
	l.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, l.url+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		l.t.Fatal(err)
	}
	return resp, body
}

// requests waits until the log holds n request lines and returns them (a
// line is written once the handler returns, just after the client has its
// answer).
func (l *lab) requests(n int) []Request {
	l.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		reqs := ParseLog(l.log.String())
		if len(reqs) >= n || time.Now().After(deadline) {
			if len(reqs) != n {
				l.t.Fatalf("log has %d requests, want %d:\n%s", len(reqs), n, l.log)
			}
			return reqs
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFullDownloadAndResume(t *testing.T) {
	const size = 300 << 10
	l := newLab(t, size, 0)

	resp, body := l.get("/big.img")
	if resp.StatusCode != 200 || !bytes.Equal(body, l.data) {
		t.Fatalf("GET: %s, %d bytes", resp.Status, len(body))
	}
	etag := resp.Header.Get("ETag")
	if !strings.HasPrefix(etag, `"`) {
		t.Fatalf("ETag %q is not a strong validator", etag)
	}

	// A resume, as a downloader whose connection broke at 100000 does it.
	resp, body = l.get("/big.img", "Range", "bytes=100000-", "If-Range", etag)
	if resp.StatusCode != 206 || !bytes.Equal(body, l.data[100000:]) {
		t.Fatalf("resume: %s, %d bytes", resp.Status, len(body))
	}
	// The file changed (another ETag): the whole file again, not a piece
	// of another one.
	resp, body = l.get("/big.img", "Range", "bytes=100000-", "If-Range", `"other"`)
	if resp.StatusCode != 200 || !bytes.Equal(body, l.data) {
		t.Fatalf("If-Range with a stale ETag: %s, %d bytes", resp.Status, len(body))
	}
	// One range from the first byte to the last is a whole download too.
	resp, _ = l.get("/big.img", "Range", "bytes=0-")
	if resp.StatusCode != 206 {
		t.Fatalf("bytes=0-: %s", resp.Status)
	}
	req, _ := http.NewRequest(http.MethodHead, l.url+"/big.img", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Fatalf("HEAD: %v %v", resp, err)
	}

	reqs := l.requests(5)
	want := []Request{
		{Method: "GET", Path: "/big.img", Status: 200, Sent: size, Full: true},
		{Method: "GET", Path: "/big.img", Range: "bytes=100000-", Status: 206, Sent: size - 100000},
		{Method: "GET", Path: "/big.img", Range: "bytes=100000-", Status: 200, Sent: size, Full: true},
		{Method: "GET", Path: "/big.img", Range: "bytes=0-", Status: 206, Sent: size, Full: true},
		{Method: "HEAD", Path: "/big.img", Status: 200},
	}
	for i := range want {
		if reqs[i] != want[i] {
			t.Errorf("request %d: %+v, want %+v", i, reqs[i], want[i])
		}
	}
	if n := FullDownloads(reqs, "/big.img"); n != 3 {
		t.Errorf("FullDownloads = %d, want 3", n)
	}
	_, body = l.get("/stats")
	st, err := DecodeStats(bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := st["/big.img"], (PathStats{Requests: 5, Full: 3, Bytes: 4*size - 100000}); got != want {
		t.Errorf("stats %+v, want %+v", got, want)
	}
}

func TestRefusesWhatIsNotAFileInTheDirectory(t *testing.T) {
	l := newLab(t, 10, 0)
	outside := t.TempDir()
	os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644)
	if err := os.Symlink(filepath.Join(outside, "secret"), filepath.Join(l.dir, "link")); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(filepath.Join(l.dir, "sub"), 0o755)
	for _, p := range []string{"/missing", "/link", "/sub", "/", "/../" + filepath.Base(outside) + "/secret"} {
		resp, body := l.get(p)
		if resp.StatusCode != 404 {
			t.Errorf("GET %s: %s %q, want 404", p, resp.Status, body)
		}
	}
	resp, err := http.Post(l.url+"/big.img", "text/plain", nil)
	if err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST a file: %v %v, want 405", resp, err)
	}
}

func TestThrottleAndAbortedTransfer(t *testing.T) {
	const size, rate = 400 << 10, 800 << 10 // half a second for the file
	l := newLab(t, size, rate)

	start := time.Now()
	_, body := l.get("/big.img")
	if took := time.Since(start); took < 400*time.Millisecond || len(body) != size {
		t.Fatalf("%d bytes in %v at %d bytes/s: not throttled", len(body), took, rate)
	}

	// A client that goes away mid-transfer: the log says how much left,
	// and it was not a full download.
	resp, err := http.Get(l.url + "/big.img")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(resp.Body, make([]byte, 50<<10)); err != nil {
		t.Fatal(err)
	}
	// /stats shows the transfer under way before it ends (a write is
	// counted when it returns: the client may hold a few KiB more).
	_, stats := l.get("/stats")
	st, _ := DecodeStats(bytes.NewReader(stats))
	if b := st["/big.img"].Bytes; b <= size || b >= 2*size {
		t.Errorf("stats bytes mid-transfer = %d, want between %d and %d", b, size, 2*size)
	}
	resp.Body.Close()
	reqs := l.requests(2) // the two downloads; /stats and /rate are not logged
	var cut Request
	for _, r := range reqs {
		if r.Path == "/big.img" && !r.Full {
			cut = r
		}
	}
	if cut.Status != 200 || cut.Sent < 50<<10 || cut.Sent >= size {
		t.Errorf("aborted transfer logged as %+v", cut)
	}
	if n := FullDownloads(reqs, "/big.img"); n != 1 {
		t.Errorf("FullDownloads = %d, want 1", n)
	}
}

func TestRateChangesInFlight(t *testing.T) {
	const size = 1 << 20
	l := newLab(t, size, 64<<10) // 16 s for the file at this rate
	resp, err := http.Get(l.url + "/big.img")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadFull(resp.Body, make([]byte, 16<<10)); err != nil {
		t.Fatal(err)
	}
	r, err := http.Post(l.url+"/rate?bytes=0", "", nil)
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("POST /rate: %v %v", r, err)
	}
	start := time.Now()
	rest, err := io.ReadAll(resp.Body)
	if err != nil || len(rest) != size-16<<10 {
		t.Fatalf("rest: %d bytes, %v", len(rest), err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("the rest took %v after the rate was lifted", took)
	}
	if r, _ := http.Post(l.url+"/rate?bytes=-1", "", nil); r == nil || r.StatusCode != 400 {
		t.Errorf("POST /rate?bytes=-1: %v, want 400", r)
	}
}

func TestParseLog(t *testing.T) {
	log := "upstream: serving /srv on 10.99.0.9:8080\n" +
		`GET "/a \"b\".img" range="bytes=5-" status=206 sent=95 full=false` + "\n" +
		`GET "/big.img" range="" status=200 sent=100 full=true` + "\n" +
		"GET /big.img status=200\n"
	got := ParseLog(log)
	want := []Request{
		{Method: "GET", Path: `/a "b".img`, Range: "bytes=5-", Status: 206, Sent: 95},
		{Method: "GET", Path: "/big.img", Status: 200, Sent: 100, Full: true},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("ParseLog = %+v, want %+v", got, want)
	}
}
