package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/netlab"
	"github.com/mayu-boot/mayu/internal/upstream"
)

func TestParseFlags(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	os.WriteFile(file, nil, 0o644)
	o, err := parseFlags([]string{"-dir", dir}, io.Discard)
	if err != nil || o.dir != dir || o.listen != "127.0.0.1:8080" || o.rate != 0 {
		t.Errorf("defaults: %+v %v", o, err)
	}
	o, err = parseFlags([]string{"-dir", dir, "-listen", "10.99.0.9:80", "-rate", "1000"}, io.Discard)
	if err != nil || o.listen != "10.99.0.9:80" || o.rate != 1000 {
		t.Errorf("flags: %+v %v", o, err)
	}
	for args, want := range map[string]string{
		"":                          "-dir is required",
		"-dir " + dir + " x":        "unexpected",
		"-dir " + file:              "not a directory",
		"-dir /nonexistent":         "not a directory",
		"-dir " + dir + " -rate -1": "-rate",
		"-bogus":                    "not defined",
	} {
		if _, err := parseFlags(strings.Fields(args), io.Discard); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", args, err, want)
		}
	}
}

// TestRun serves a directory on a free port, logs the request to stdout
// and stops on the context.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "big.img"), []byte("0123456789"), 0o644)
	var stdout, stderr netlab.Output
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, options{dir: dir, listen: "127.0.0.1:0"}, &stdout, &stderr) }()

	addr := regexp.MustCompile(`on (127\.0\.0\.1:\d+) \(rate 0 bytes/s`)
	var m []string
	for deadline := time.Now().Add(5 * time.Second); m == nil && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
		m = addr.FindStringSubmatch(stderr.String())
	}
	if m == nil {
		t.Fatalf("no start-up line: %q", stderr.String())
	}
	req, _ := http.NewRequest("GET", "http://"+m[1]+"/big.img", nil)
	req.Header.Set("Range", "bytes=4-")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || string(body) != "456789" {
		t.Fatalf("%s %q", resp.Status, body)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := []upstream.Request{{Method: "GET", Path: "/big.img", Range: "bytes=4-", Status: 206, Sent: 6}}
	if got := upstream.ParseLog(stdout.String()); len(got) != 1 || got[0] != want[0] {
		t.Errorf("stdout %q: %+v", stdout.String(), got)
	}
}

// TestMain lets the test binary run as the command (MAYU_UPSTREAM_MAIN=1),
// so that TestInNamespaces starts the real main in a namespace without a
// go build.
func TestMain(m *testing.M) {
	if os.Getenv("MAYU_UPSTREAM_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestInNamespaces runs the upstream in a namespace of its own, throttled,
// and curl in another: a download cut mid-transfer, then resumed with
// Range after the rate is lifted, ends with the whole file, and the log
// shows a cut 200 and a 206 for the rest, no full download.
func TestInNamespaces(t *testing.T) {
	netlab.Require(t, "curl")
	seg := netlab.NewSegmentT(t)
	up := seg.AddHost("up", "10.99.0.9/24")
	cli := seg.AddHost("cli", "10.99.0.250/24")

	dir := t.TempDir()
	const size = 8 << 20
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{3}).Read(data)
	os.WriteFile(filepath.Join(dir, "big.img"), data, 0o644)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	_, out := seg.Start(up, "env", "MAYU_UPSTREAM_MAIN=1", exe, "-dir", dir, "-listen", "10.99.0.9:8080", "-rate", "2000000")
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(out.String(), "upstream: serving"); {
		if time.Now().After(deadline) {
			t.Fatalf("upstream did not start: %s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}

	got := filepath.Join(t.TempDir(), "big.img")
	const url = "http://10.99.0.9:8080/big.img"
	// 4 s for the file at 2 MB/s: cut after 1 s.
	if o, err := seg.Run(10*time.Second, cli, "curl", "-sS", "--max-time", "1", "-o", got, url); err == nil {
		t.Fatalf("the throttled download was not cut: %s", o)
	}
	fi, err := os.Stat(got)
	if err != nil || fi.Size() == 0 || fi.Size() >= size {
		t.Fatalf("partial download: %v %v", fi, err)
	}
	partial := fi.Size()
	if o, err := seg.Run(10*time.Second, cli, "curl", "-sSf", "-X", "POST", "http://10.99.0.9:8080/rate?bytes=0"); err != nil {
		t.Fatalf("lift the rate: %v %s", err, o)
	}
	if o, err := seg.Run(20*time.Second, cli, "curl", "-sSf", "-C", "-", "-o", got, url); err != nil {
		t.Fatalf("resume: %v %s", err, o)
	}
	if b, _ := os.ReadFile(got); !bytes.Equal(b, data) {
		t.Fatalf("the resumed download differs from the file (%d bytes)", len(b))
	}

	// A request is logged when its handler returns, which may be after
	// curl has what it asked for.
	var reqs []upstream.Request
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if reqs = upstream.ParseLog(out.String()); len(reqs) >= 2 || time.Now().After(deadline) {
			break
		}
	}
	if len(reqs) != 2 {
		t.Fatalf("log: %s", out)
	}
	if r := reqs[0]; r.Status != 200 || r.Full || r.Sent < partial || r.Sent >= size {
		t.Errorf("the cut download was logged as %+v (curl kept %d bytes)", r, partial)
	}
	want := upstream.Request{Method: "GET", Path: "/big.img", Range: fmt.Sprintf("bytes=%d-", partial), Status: 206, Sent: size - partial}
	if reqs[1] != want {
		t.Errorf("the resume was logged as %+v, want %+v", reqs[1], want)
	}
	stats, err := seg.Run(10*time.Second, cli, "curl", "-sSf", "http://10.99.0.9:8080/stats")
	if err != nil {
		t.Fatal(err)
	}
	st, err := upstream.DecodeStats(strings.NewReader(stats))
	if err != nil || st["/big.img"].Requests != 2 || st["/big.img"].Full != 0 {
		t.Errorf("stats %s: %+v %v", stats, st, err)
	}
}
