package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

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

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRun serves a directory on a free port, logs the request to stdout
// and stops on the context.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "big.img"), []byte("0123456789"), 0o644)
	var stdout, stderr syncBuffer
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
