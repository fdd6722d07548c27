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
