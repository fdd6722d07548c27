package artifact

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// The cap holds across a transfer: 256 KiB at 512 KiB/s takes about half
// a second (the first burst is free), and the bytes arrive whole.
func TestLimitedTransport(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 16<<10) // 256 KiB
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(data) }))
	defer srv.Close()
	c := &http.Client{Transport: LimitedTransport(http.DefaultTransport, 512<<10)}
	start := time.Now()
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read %d bytes, err %v", len(got), err)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("256 KiB at 512 KiB/s took only %s", d)
	}
	if LimitedTransport(http.DefaultTransport, 0) != http.DefaultTransport {
		t.Error("no cap must be the base transport itself")
	}
}

// A body that stops delivering is cut after the stall time, not waited
// for forever.
func TestStallTransport(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("first bytes"))
		w.(http.Flusher).Flush()
		<-release
	}))
	defer srv.Close()
	defer close(release)
	c := &http.Client{Transport: StallTransport(http.DefaultTransport, 300*time.Millisecond)}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	got, err := io.ReadAll(resp.Body)
	if err == nil || string(got) != "first bytes" {
		t.Fatalf("read %q, err %v", got, err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cut after %s", d)
	}
}

// Redirects: a mirror is fine, this host, link-local addresses,
// downgrades and long chains are not.
func TestCheckRedirect(t *testing.T) {
	req := func(u string) *http.Request {
		r, _ := http.NewRequest(http.MethodGet, u, nil)
		return r
	}
	from := []*http.Request{req("https://release.example/f")}
	for u, ok := range map[string]bool{
		"https://mirror.example/f":       true,
		"https://10.0.0.5/f":             true,
		"http://mirror.example/f":        false, // downgrade
		"https://127.0.0.1:2379/v3/kv":   false,
		"https://[::1]/f":                false,
		"https://localhost/f":            false,
		"https://169.254.169.254/latest": false,
		"file:///etc/passwd":             false,
	} {
		if err := CheckRedirect(req(u), from); (err == nil) != ok {
			t.Errorf("redirect to %s: %v", u, err)
		}
	}
	if err := CheckRedirect(req("https://m/f"), append(from, from[0], from[0])); err == nil {
		t.Error("a fourth hop was followed")
	}
}

// A trickle (a few bytes at a time, never a stall of its own) is cut too.
func TestStallTransportCutsATrickle(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for {
			select {
			case <-release:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, err := w.Write([]byte("x")); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	defer close(release)
	c := &http.Client{Transport: StallTransport(http.DefaultTransport, 300*time.Millisecond)}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	if _, err := io.ReadAll(resp.Body); err == nil {
		t.Fatal("a trickle was read to its end")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("cut after %s", d)
	}
}
