package artifact

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The client's header and the server's check are made the same way: they
// agree with each other, and with nothing else.
func TestPeerAuthorization(t *testing.T) {
	sha := strings.Repeat("ab", 32)
	other := strings.Repeat("cd", 32)
	now := time.Unix(1800000000, 0)
	good := PeerAuthorization(testSecret, "mayu-2", "mayu-1", now, sha)
	if r, why := CheckPeerAuthorization(testSecret, good, "mayu-1", sha, now.Add(time.Minute)); r != "mayu-2" || why != "" {
		t.Fatalf("good header: %q %q", r, why)
	}
	for _, tc := range []struct {
		what, header, sha string
		now               time.Time
		secret            []byte
		want              string
	}{
		{"no header", "", sha, now, testSecret, refusedMissing},
		{"bearer", "Bearer x", sha, now, testSecret, refusedMissing},
		{"two fields", "Mayu-Peer mayu-2 1800000000", sha, now, testSecret, refusedMalformed},
		{"bad name", strings.Replace(good, "mayu-2", "../x", 1), sha, now, testSecret, refusedMalformed},
		{"bad time", strings.Replace(good, "1800000000", "18e8", 1), sha, now, testSecret, refusedMalformed},
		{"short mac", good[:len(good)-2], sha, now, testSecret, refusedMalformed},
		{"wrong secret", PeerAuthorization([]byte("another secret"), "mayu-2", "mayu-1", now, sha), sha, now, testSecret, refusedMAC},
		{"other digest", good, other, now, testSecret, refusedMAC},
		{"other replica", strings.Replace(good, "mayu-2", "mayu-3", 1), sha, now, testSecret, refusedMAC},
		{"meant for another peer", PeerAuthorization(testSecret, "mayu-2", "mayu-3", now, sha), sha, now, testSecret, refusedMAC},
		{"too old", good, sha, now.Add(PeerSkew + time.Second), testSecret, refusedExpired},
		{"from the future", good, sha, now.Add(-PeerSkew - time.Second), testSecret, refusedExpired},
		{"no secret here", good, sha, now, nil, refusedNoSecret},
	} {
		if r, why := CheckPeerAuthorization(tc.secret, tc.header, "mayu-1", tc.sha, tc.now); why != tc.want || r != "" {
			t.Errorf("%s: %q %q, want refused %q", tc.what, r, why, tc.want)
		}
	}
}

// The peer endpoint serves held bytes, with Range and the digest ETag,
// only to an authenticated peer; refusals say nothing but that, and are
// counted.
func TestPeerHandler(t *testing.T) {
	cache, err := OpenCache(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("0123456789"), 1000)
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	p, err := cache.Begin("x")
	if err != nil {
		t.Fatal(err)
	}
	p.Write(data)
	if err := p.Commit(sha); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	previous := []byte("the secret before the last rotation")
	m := NewManager(Options{Replica: "mayu-1", Cache: cache, Registerer: reg,
		Secret:         func(context.Context) ([]byte, error) { return testSecret, nil },
		PreviousSecret: func(context.Context) ([]byte, error) { return previous, nil }})
	srv := httptest.NewServer(m.PeerHandler())
	defer srv.Close()

	get := func(method, sha, auth, rng string) (*http.Response, string) {
		req, _ := http.NewRequest(method, srv.URL+PeerPath+sha, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		if rng != "" {
			req.Header.Set("Range", rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}
	resp, body := get("GET", sha, PeerAuthorization(testSecret, "mayu-2", "mayu-1", time.Now(), sha), "")
	if resp.StatusCode != 200 || body != string(data) || resp.Header.Get("ETag") != ETag(sha) {
		t.Fatalf("authenticated GET: %s, etag %q, %d bytes", resp.Status, resp.Header.Get("ETag"), len(body))
	}
	resp, body = get("GET", sha, PeerAuthorization(testSecret, "mayu-2", "mayu-1", time.Now(), sha), "bytes=9990-")
	if resp.StatusCode != 206 || body != "0123456789" {
		t.Errorf("Range: %s %q", resp.Status, body)
	}
	resp, _ = get("HEAD", sha, PeerAuthorization(testSecret, "mayu-2", "mayu-1", time.Now(), sha), "")
	if resp.StatusCode != 200 || resp.ContentLength != int64(len(data)) {
		t.Errorf("HEAD: %s, length %d", resp.Status, resp.ContentLength)
	}
	// A peer that has not seen the rotation yet.
	if resp, _ = get("GET", sha, PeerAuthorization(previous, "mayu-2", "mayu-1", time.Now(), sha), ""); resp.StatusCode != 200 {
		t.Errorf("signed with the previous secret: %s", resp.Status)
	}
	unheld := strings.Repeat("0", 64)
	if resp, _ = get("GET", unheld, PeerAuthorization(testSecret, "mayu-2", "mayu-1", time.Now(), unheld), ""); resp.StatusCode != 404 {
		t.Errorf("not held: %s", resp.Status)
	}
	counted := map[string]float64{}
	for _, tc := range []struct {
		what, auth string
		code       int
		reason     string
	}{
		{"no authorization", "", 401, refusedMissing},
		{"malformed", "Mayu-Peer x", 401, refusedMalformed},
		{"wrong secret", PeerAuthorization([]byte("guessed"), "mayu-2", "mayu-1", time.Now(), sha), 403, refusedMAC},
		{"another digest's", PeerAuthorization(testSecret, "mayu-2", "mayu-1", time.Now(), unheld), 403, refusedMAC},
		{"skewed", PeerAuthorization(testSecret, "mayu-2", "mayu-1", time.Now().Add(-10*time.Minute), sha), 403, refusedExpired},
	} {
		resp, body := get("GET", sha, tc.auth, "")
		if resp.StatusCode != tc.code || strings.TrimSpace(body) != "peer authentication failed" || strings.Contains(body, "0123") {
			t.Errorf("%s: %s %q", tc.what, resp.Status, body)
		}
		counted[tc.reason]++
		if n := testutil.ToFloat64(m.met.peerRefused.WithLabelValues(tc.reason)); n != counted[tc.reason] {
			t.Errorf("%s: counted %v times as %s", tc.what, n, tc.reason)
		}
	}
}

// Every metric the package registers is in docs/metrics.md (pkg/metrics
// checks it too, once pkg/server registers the Manager on a replica's
// registry).
func TestMetricsDocumented(t *testing.T) {
	reg := prometheus.NewRegistry()
	newMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 5 {
		t.Errorf("%d metrics gathered, want 5", len(mfs))
	}
	for _, mf := range mfs {
		if !strings.Contains(string(doc), "| `"+mf.GetName()+"` |") {
			t.Errorf("%s is not documented in docs/metrics.md", mf.GetName())
		}
	}
}
