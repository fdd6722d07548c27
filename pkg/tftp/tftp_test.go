package tftp

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestName(t *testing.T) {
	for in, want := range map[string]string{
		"undionly.kpxe":  "undionly.kpxe",
		"/undionly.kpxe": "undionly.kpxe",
		"efi/ipxe.efi":   "efi/ipxe.efi",
	} {
		if got, err := Name(in); err != nil || got != want {
			t.Errorf("Name(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "/", "..", "../etc/passwd", "/../../etc/passwd", "a/../../b", "a//b", "./x", "a\\..\\b", "x\x00y", "efi/.."} {
		if got, err := Name(in); err == nil {
			t.Errorf("Name(%q) = %q, want an error", in, got)
		}
	}
}

func FuzzName(f *testing.F) {
	for _, s := range []string{"undionly.kpxe", "../x", "/a/b", "a/../b", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, err := Name(s)
		if err != nil {
			return
		}
		if !filepath.IsLocal(name) || strings.Contains(name, "\\") {
			t.Fatalf("Name(%q) = %q leaves the directory", s, name)
		}
	})
}

// A real transfer on loopback: blksize, tsize, a refused name, a missing
// file answered with an error rather than a timeout.
func TestServeOnLoopback(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("iPXE"), 30000) // 120000 bytes: many blocks
	os.WriteFile(filepath.Join(dir, "undionly.kpxe"), data, 0o644)
	os.WriteFile(filepath.Join(filepath.Dir(dir), "secret"), []byte("root:x"), 0o644)
	os.Symlink(filepath.Join(filepath.Dir(dir), "secret"), filepath.Join(dir, "link"))

	reg := prometheus.NewRegistry()
	srv, err := New(dir, defaultLimits, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(conn)
	defer srv.Shutdown()

	c, err := tftp.NewClient(conn.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.SetTimeout(time.Second)
	c.SetRetries(2)
	c.SetBlockSize(1468)
	c.RequestTSize(true)
	wt, err := c.Receive("undionly.kpxe", "octet")
	if err != nil {
		t.Fatal(err)
	}
	if size, ok := wt.(tftp.IncomingTransfer).Size(); !ok || size != int64(len(data)) {
		t.Errorf("tsize %d %v", size, ok)
	}
	var got bytes.Buffer
	if _, err := wt.WriteTo(&got); err != nil || !bytes.Equal(got.Bytes(), data) {
		t.Fatalf("got %d bytes, %v", got.Len(), err)
	}
	for _, name := range []string{"../secret", "link", "nonexistent.efi"} {
		start := time.Now()
		wt, err := c.Receive(name, "octet")
		if err == nil {
			_, err = wt.WriteTo(io.Discard)
		}
		if err == nil {
			t.Errorf("%s was served", name)
		}
		if d := time.Since(start); d > 900*time.Millisecond {
			t.Errorf("%s: the error took %s (a timeout, not an answer)", name, d)
		}
	}
	want := `
# HELP mayu_tftp_sent_bytes_total Bytes of files sent completely over TFTP.
# TYPE mayu_tftp_sent_bytes_total counter
mayu_tftp_sent_bytes_total 120000
# HELP mayu_tftp_transfers_total TFTP read requests, by result (ok, not_found, refused, failed).
# TYPE mayu_tftp_transfers_total counter
mayu_tftp_transfers_total{result="failed"} 0
mayu_tftp_transfers_total{result="not_found"} 1
mayu_tftp_transfers_total{result="ok"} 1
mayu_tftp_transfers_total{result="refused"} 2
`
	// The server counts a transfer once its handler returns, which can be
	// just after the client has its last block: wait for it, within a bound.
	var cmp error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		cmp = testutil.GatherAndCompare(reg, strings.NewReader(want), "mayu_tftp_sent_bytes_total", "mayu_tftp_transfers_total")
		if cmp == nil || time.Now().After(deadline) {
			break
		}
	}
	if cmp != nil {
		t.Error(cmp)
	}
}
