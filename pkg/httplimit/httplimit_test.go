package httplimit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mayu-boot/mayu/pkg/config"
)

// testLimits are small, so that every limit is reached in a test's time.
var testLimits = config.HTTPLimits{
	ReadHeaderTimeout: 500 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, StallTimeout: 500 * time.Millisecond,
	MaxHeaderBytes: 1024, MaxConnections: 100, MaxConnectionsPerAddress: 100,
}

// smallBuffers makes the kernel's socket buffers small on the server's
// side, so that a client that stops reading is noticed after a few
// hundred kilobytes rather than megabytes. (Not smaller: loopback's MSS is
// 64 KiB, and a window below a few of them makes TCP itself wait.)
type smallBuffers struct{ net.Listener }

func (l smallBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetWriteBuffer(128 << 10)
		tc.SetReadBuffer(128 << 10)
		return &sendfileConn{TCPConn: tc}, nil
	}
	return c, err
}

// sendfileConn records what net/http hands the connection's ReadFrom
// (net.TCPConn's sends a *io.LimitedReader of an *os.File with sendfile).
type sendfileConn struct {
	*net.TCPConn
}

var sendfiles struct {
	sync.Mutex
	shapes map[string]int
}

func (c *sendfileConn) ReadFrom(r io.Reader) (int64, error) {
	shape := fmt.Sprintf("%T", r)
	if lr, ok := r.(*io.LimitedReader); ok {
		shape += fmt.Sprintf("(%T)", lr.R)
	}
	sendfiles.Lock()
	if sendfiles.shapes == nil {
		sendfiles.shapes = map[string]int{}
	}
	sendfiles.shapes[shape]++
	sendfiles.Unlock()
	return c.TCPConn.ReadFrom(r)
}

type served struct {
	url  string
	addr string
	reg  *prometheus.Registry
	lim  *Limiter
	// errs receives what the handler's copy returned, per request.
	errs chan error
}

// serve runs a Limiter's server on loopback: /file serves path with
// http.ServeContent (sendfile), /upload reads the body and answers its
// length.
func serve(t *testing.T, limits config.HTTPLimits, path string) *served {
	t.Helper()
	reg := prometheus.NewRegistry()
	s := &served{reg: reg, errs: make(chan error, 16)}
	s.lim = New("http", limits, slog.New(slog.DiscardHandler), reg)
	mux := http.NewServeMux()
	mux.HandleFunc("/file", func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		st, _ := f.Stat()
		w.Header().Set("Content-Length", fmt.Sprint(st.Size()))
		w.Header().Set("Content-Type", "application/octet-stream")
		// What ServeContent does for a whole file, with its error kept.
		_, err = io.CopyN(w, f, st.Size())
		s.errs <- err
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		s.errs <- err
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, n)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := s.lim.Server(mux)
	go srv.Serve(s.lim.Listener(smallBuffers{ln}))
	t.Cleanup(func() { srv.Close() })
	s.addr = ln.Addr().String()
	s.url = "http://" + s.addr
	return s
}

func (s *served) dropped(reason string) float64 {
	return testutil.ToFloat64(s.lim.metrics.dropped.WithLabelValues(reason))
}

func (s *served) refused(reason string) float64 {
	return testutil.ToFloat64(s.lim.metrics.refused.WithLabelValues(reason))
}

func bigFile(t *testing.T, size int) (string, [32]byte) {
	t.Helper()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	path := filepath.Join(t.TempDir(), "image")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return path, sha256.Sum256(data)
}

// dial opens a connection with a small receive buffer, from local address
// from (empty: any).
func dial(t *testing.T, addr, from string) *net.TCPConn {
	t.Helper()
	d := net.Dialer{}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	tc := c.(*net.TCPConn)
	tc.SetReadBuffer(128 << 10)
	t.Cleanup(func() { c.Close() })
	return tc
}

func within(t *testing.T, ch chan error, d time.Duration) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(d):
		t.Fatalf("the handler still runs after %s", d)
		return nil
	}
}

// A download whose reader stops reading is cut after the stall timeout,
// and counted; its connection is then gone.
func TestStalledReaderIsCut(t *testing.T) {
	path, _ := bigFile(t, 8<<20)
	s := serve(t, testLimits, path)
	c := dial(t, s.addr, "")
	fmt.Fprintf(c, "GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
	start := time.Now()
	err := within(t, s.errs, 5*time.Second)
	if err == nil {
		t.Fatal("the stalled download finished")
	}
	if d := time.Since(start); d < testLimits.StallTimeout {
		t.Errorf("cut after %s, before the stall timeout", d)
	}
	if got := s.dropped("stalled_write"); got != 1 {
		t.Errorf("stalled_write = %v, want 1", got)
	}
	// The client gets what was buffered, then the end: never the whole file.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _ := io.Copy(io.Discard, c)
	if n >= 8<<20 {
		t.Errorf("the client read %d bytes", n)
	}
}

// A download that keeps moving, slowly, for many stall timeouts is never
// cut, and arrives whole.
func TestSlowMovingReaderIsNotCut(t *testing.T) {
	const size = 3 << 20
	path, sum := bigFile(t, size)
	s := serve(t, testLimits, path)
	c := dial(t, s.addr, "")
	fmt.Fprintf(c, "GET /file HTTP/1.1\r\nHost: x\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	// 32 KiB every 30 ms: about 1 MiB/s, a 64 KiB step in ~60 ms.
	start := time.Now()
	h := sha256.New()
	buf := make([]byte, 32<<10)
	for {
		n, err := io.ReadFull(resp.Body, buf)
		h.Write(buf[:n])
		if err != nil {
			break
		}
		time.Sleep(30 * time.Millisecond)
	}
	took := time.Since(start)
	if !bytes.Equal(h.Sum(nil), sum[:]) {
		t.Fatalf("the slow download did not arrive whole (after %s): handler %v, stalled %v", took, <-s.errs, s.dropped("stalled_write"))
	}
	if took < 4*testLimits.StallTimeout {
		t.Errorf("the download took %s: not slow enough to test anything", took)
	}
	if err := within(t, s.errs, time.Second); err != nil {
		t.Errorf("handler: %v", err)
	}
	// The file went to the connection as sendfile takes it, step by step.
	sendfiles.Lock()
	if n := sendfiles.shapes["*io.LimitedReader(*os.File)"]; n < size/chunk-1 || len(sendfiles.shapes) != 1 {
		t.Errorf("the connection's ReadFrom was handed %v, want about %d *io.LimitedReader(*os.File)", sendfiles.shapes, size/chunk)
	}
	sendfiles.Unlock()
	if got := s.dropped("stalled_write"); got != 0 {
		t.Errorf("stalled_write = %v", got)
	}
}

// An upload that keeps moving is not cut; one that stalls is.
func TestUploads(t *testing.T) {
	s := serve(t, testLimits, "")
	c := dial(t, s.addr, "")
	const size = 160 << 10
	fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
	chunk := bytes.Repeat([]byte("x"), 8<<10)
	start := time.Now()
	for range size / len(chunk) {
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err := within(t, s.errs, time.Second); err != nil {
		t.Fatalf("a moving upload was cut after %s: %v", time.Since(start), err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	if strings.TrimSpace(string(body)) != fmt.Sprint(size) {
		t.Errorf("answer %q", body)
	}

	c = dial(t, s.addr, "")
	fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
	c.Write(chunk)
	start = time.Now()
	if err := within(t, s.errs, 5*time.Second); err == nil {
		t.Fatal("a stalled upload was read to its end")
	}
	if d := time.Since(start); d < testLimits.StallTimeout/2 {
		t.Errorf("cut after %s", d)
	}
	if got := s.dropped("stalled_read"); got != 1 {
		t.Errorf("stalled_read = %v, want 1", got)
	}
}

// get does a request on c and reads the answer.
func get(t *testing.T, c net.Conn, br *bufio.Reader) {
	t.Helper()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

// refusedConn reports whether c was refused: a 503, then the end.
func refusedConn(t *testing.T, c net.Conn) string {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	data, err := io.ReadAll(c)
	if err != nil && !strings.Contains(err.Error(), "reset") {
		t.Fatalf("reading a refused connection: %v", err)
	}
	return string(data)
}

// The per-address cap refuses the N+1th connection of an address with a
// 503 and counts it; other addresses still get in, and a closed
// connection frees its place.
func TestPerAddressCap(t *testing.T) {
	l := testLimits
	l.MaxConnectionsPerAddress = 3
	s := serve(t, l, "")
	var conns []net.Conn
	for range 3 {
		c := dial(t, s.addr, "127.0.0.1")
		get(t, c, bufio.NewReader(c))
		conns = append(conns, c)
	}
	extra := dial(t, s.addr, "127.0.0.1")
	if got := refusedConn(t, extra); !strings.HasPrefix(got, "HTTP/1.1 503 ") || !strings.Contains(got, "too many connections from 127.0.0.1") {
		t.Errorf("the 4th connection got %q", got)
	}
	if got := s.refused("per_address"); got != 1 {
		t.Errorf("per_address = %v, want 1", got)
	}
	other := dial(t, s.addr, "127.0.0.2")
	get(t, other, bufio.NewReader(other))

	conns[0].Close()
	deadline := time.Now().Add(3 * time.Second)
	for {
		c := dial(t, s.addr, "127.0.0.1")
		c.SetDeadline(time.Now().Add(time.Second))
		fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil && resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a closed connection did not free its place")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The total cap refuses a connection from any address once it is reached.
func TestTotalCap(t *testing.T) {
	l := testLimits
	l.MaxConnections, l.MaxConnectionsPerAddress = 2, 2
	s := serve(t, l, "")
	for _, from := range []string{"127.0.0.1", "127.0.0.2"} {
		c := dial(t, s.addr, from)
		get(t, c, bufio.NewReader(c))
	}
	c := dial(t, s.addr, "127.0.0.3")
	if got := refusedConn(t, c); !strings.HasPrefix(got, "HTTP/1.1 503 ") {
		t.Errorf("the 3rd connection got %q", got)
	}
	if got := s.refused("total"); got != 1 {
		t.Errorf("total = %v, want 1", got)
	}
	if got := testutil.ToFloat64(s.lim.metrics.open); got != 2 {
		t.Errorf("open connections = %v, want 2", got)
	}
}

// Headers over max_header_bytes are answered 431 and counted.
func TestHeadersTooLarge(t *testing.T) {
	s := serve(t, testLimits, "")
	c := dial(t, s.addr, "")
	// net/http allows max_header_bytes plus 4096 bytes of slack.
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n", strings.Repeat("a", 8<<10))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("status %d, want 431", resp.StatusCode)
	}
	if got := s.dropped("header_too_large"); got != 1 {
		t.Errorf("header_too_large = %v, want 1", got)
	}
	// Headers within the limit pass.
	c = dial(t, s.addr, "")
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Small: %s\r\n\r\n", strings.Repeat("a", 512))
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
		t.Errorf("small headers: %v %v", resp, err)
	}
}

// A slowloris dribbling its headers a byte at a time is cut after the
// header timeout and counted; a kept-alive connection that goes quiet is
// closed after the idle timeout, and not counted.
func TestSlowlorisIsCut(t *testing.T) {
	s := serve(t, testLimits, "")
	c := dial(t, s.addr, "")
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: x\r\n")
	start := time.Now()
	var closedAfter time.Duration
	for i := 0; i < 100; i++ {
		time.Sleep(50 * time.Millisecond)
		if _, err := c.Write([]byte("X")); err != nil {
			closedAfter = time.Since(start)
			break
		}
		// A closed connection shows on a read sooner than on a write.
		c.SetReadDeadline(time.Now().Add(time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && !os.IsTimeout(err) {
			closedAfter = time.Since(start)
			break
		}
	}
	if closedAfter == 0 || closedAfter > 3*testLimits.ReadHeaderTimeout {
		t.Fatalf("the dribbling connection was not cut (after %s)", closedAfter)
	}
	waitFor(t, func() bool { return s.dropped("header_timeout") == 1 }, "header_timeout 1")

	// Quiet after one request: closed as idle, not a slowloris.
	c = dial(t, s.addr, "")
	get(t, c, bufio.NewReader(c))
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the idle connection: %v, want EOF", err)
	}
	time.Sleep(50 * time.Millisecond)
	if got := s.dropped("header_timeout"); got != 1 {
		t.Errorf("header_timeout = %v after an idle close, want still 1", got)
	}
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 3s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// recorder is a ResponseWriter that records what ReadFrom is handed.
type recorder struct {
	http.ResponseWriter
	mu   sync.Mutex
	srcs []string
	n    int64
}

func (r *recorder) ReadFrom(src io.Reader) (int64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	shape := fmt.Sprintf("%T", src)
	if lr, ok := src.(*io.LimitedReader); ok {
		shape += fmt.Sprintf("(%T)", lr.R)
	}
	r.srcs = append(r.srcs, shape)
	n, err := io.Copy(io.Discard, src)
	r.n += n
	return n, err
}

// Each step of a file's answer reaches the connection as what
// net.TCPConn sends with sendfile: one *io.LimitedReader of the
// *os.File. The file's position and the caller's limit stay right.
func TestStepsKeepSendfile(t *testing.T) {
	path, _ := bigFile(t, 3*chunk+100)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rec := &recorder{}
	p := &progress{ResponseWriter: rec, rc: http.NewResponseController(rec), l: New("http", testLimits, slog.New(slog.DiscardHandler), nil)}
	src := &io.LimitedReader{R: f, N: 2*chunk + 10}
	n, err := p.ReadFrom(src)
	if err != nil || n != 2*chunk+10 || src.N != 0 {
		t.Fatalf("ReadFrom = %d, %v; limit left %d", n, err, src.N)
	}
	for _, s := range rec.srcs {
		if s != "*io.LimitedReader(*os.File)" {
			t.Errorf("a step was handed %s", s)
		}
	}
	if len(rec.srcs) != 3 {
		t.Errorf("%d steps, want 3", len(rec.srcs))
	}
	if pos, _ := f.Seek(0, io.SeekCurrent); pos != 2*chunk+10 {
		t.Errorf("file at %d", pos)
	}
	// Until EOF, without a limit.
	n, err = p.ReadFrom(f)
	if err != nil || n != chunk+90 {
		t.Errorf("ReadFrom to EOF = %d, %v", n, err)
	}
}
