// Package httplimit makes a flood of HTTP clients cost the clients, not
// the replica. Each connection holds a descriptor, and at the descriptor
// limit the whole replica goes deaf, its embedded etcd included; so a
// Limiter bounds the connections of a listener, in total and per client
// address, bounds headers in time and size, and cuts a request whose body
// or answer stops moving, while one that keeps moving, however slowly and
// however long (a multi-GB image), is never cut.
//
// The progress deadlines are the connection's read and write deadlines,
// set through http.ResponseController before each step of a transfer: an
// answer is sent in steps of chunk bytes, each with a fresh deadline of
// the stall timeout. A file is still sent with sendfile, step by step.
package httplimit

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayu-boot/mayu/pkg/config"
)

// chunk is what one step of an answer may send under one deadline: an
// answer moving slower than chunk bytes per stall timeout (2 KiB/s at the
// default 30 s) counts as stalled. The kernel sends a file in pieces of
// this order anyway, so the extra system calls cost nothing measurable.
const chunk = 64 << 10

// Limiter applies one listener's limits.
type Limiter struct {
	name    string
	limits  config.HTTPLimits
	log     *slog.Logger
	metrics *metrics

	mu     sync.Mutex
	total  int
	byAddr map[netip.Addr]int
}

// New returns the Limiter of the listener called name (http, admin),
// whose metrics go to reg (nil: nowhere).
func New(name string, limits config.HTTPLimits, log *slog.Logger, reg prometheus.Registerer) *Limiter {
	return &Limiter{name: name, limits: limits, log: log, metrics: newMetrics(reg, name), byAddr: map[netip.Addr]int{}}
}

// Server returns an http.Server serving h under the limits. Serve it on
// l.Listener(ln) for the connection caps and the header metrics.
func (l *Limiter) Server(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           l.Handler(h),
		ReadHeaderTimeout: l.limits.ReadHeaderTimeout,
		IdleTimeout:       l.limits.IdleTimeout,
		MaxHeaderBytes:    l.limits.MaxHeaderBytes,
		// No ReadTimeout or WriteTimeout: they bound a whole request, and
		// an OS image may take many minutes. The stall timeout bounds
		// each step instead (Handler).
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			// Under TLS the server sees the TLS connection; ours is below.
			if tc, ok := c.(interface{ NetConn() net.Conn }); ok {
				c = tc.NetConn()
			}
			if lc, ok := c.(*conn); ok {
				return context.WithValue(ctx, connKey{}, lc)
			}
			return ctx
		},
	}
}

// Listener wraps ln: a connection beyond max_connections, or beyond
// max_connections_per_address for its address, gets a short 503 and is
// closed at once.
func (l *Limiter) Listener(ln net.Listener) net.Listener { return &listener{Listener: ln, l: l} }

type listener struct {
	net.Listener
	l *Limiter
}

func (ln *listener) Accept() (net.Conn, error) {
	for {
		c, err := ln.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := remoteAddr(c)
		if reason := ln.l.admit(addr); reason != "" {
			ln.l.refuse(c, addr, reason)
			continue
		}
		ln.l.metrics.open.Inc()
		return &conn{Conn: c, l: ln.l, addr: addr}, nil
	}
}

func remoteAddr(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}

// admit counts a new connection from addr, or says why it may not open.
func (l *Limiter) admit(addr netip.Addr) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.total >= l.limits.MaxConnections:
		return "total"
	case l.byAddr[addr] >= l.limits.MaxConnectionsPerAddress:
		return "per_address"
	}
	l.total++
	l.byAddr[addr]++
	return ""
}

func (l *Limiter) release(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.byAddr[addr]--; l.byAddr[addr] <= 0 {
		delete(l.byAddr, addr)
	}
	l.metrics.open.Dec()
}

// refuse answers a connection over a cap with a 503 that says which,
// best effort (a flood does not read it), and closes it.
func (l *Limiter) refuse(c net.Conn, addr netip.Addr, reason string) {
	l.metrics.refused.WithLabelValues(reason).Inc()
	msg := "too many connections to this replica\n"
	if reason == "per_address" {
		msg = "too many connections from " + addr.String() + "\n"
	}
	c.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
	io.WriteString(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n"+
		"Retry-After: 5\r\nContent-Length: "+strconv.Itoa(len(msg))+"\r\n\r\n"+msg)
	c.Close()
	l.log.Debug("http: connection refused", "listener", l.name, "remote", addr, "reason", reason)
}

type connKey struct{}

// conn is an admitted connection. It tells a request's phase from the
// time between requests, so that it can count what net/http drops
// without calling a handler: headers that took too long (slowloris) and
// headers too large (431).
type conn struct {
	net.Conn
	l      *Limiter
	addr   netip.Addr
	closed sync.Once

	inRequest atomic.Bool // a handler runs
	served    atomic.Bool // a handler has run on this connection
	partial   atomic.Bool // bytes of a next request arrived; no handler yet
	dropped   atomic.Bool // counted once
}

func (c *conn) Close() error {
	c.closed.Do(func() { c.l.release(c.addr) })
	return c.Conn.Close()
}

func (c *conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if c.inRequest.Load() {
		return n, err // the handler's body, or net/http's background read
	}
	if n > 0 && !c.partial.Swap(true) {
		// The first bytes of a request: the previous answer's progress
		// deadline must not cut net/http's own error answer to it.
		c.Conn.SetWriteDeadline(time.Time{})
	}
	// A kept-alive connection that sends nothing is closed after the idle
	// timeout, by design; a request begun (or a new connection's first)
	// that does not finish its headers in time is a slowloris.
	if isTimeout(err) && (c.partial.Load() || !c.served.Load()) {
		c.drop("header_timeout")
	}
	return n, err
}

func (c *conn) Write(b []byte) (int, error) {
	if !c.inRequest.Load() && bytes.HasPrefix(b, []byte("HTTP/1.1 431 ")) {
		// net/http's own answer to headers over max_header_bytes.
		c.drop("header_too_large")
	}
	return c.Conn.Write(b)
}

// ReadFrom keeps sendfile: net/http sends a file with the connection's
// ReadFrom when it has one, and net.TCPConn's is sendfile. Without this
// method every byte of an image would be copied through user space.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}

func (c *conn) drop(reason string) {
	if !c.dropped.Swap(true) {
		c.l.metrics.dropped.WithLabelValues(reason).Inc()
		c.l.log.Debug("http: request dropped", "listener", c.l.name, "remote", c.addr, "reason", reason)
	}
}

func isTimeout(err error) bool { return err != nil && errors.Is(err, os.ErrDeadlineExceeded) }

// Handler gives each read of a request body and each step of an answer a
// fresh deadline of the stall timeout.
func (l *Limiter) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, _ := r.Context().Value(connKey{}).(*conn)
		if c != nil {
			c.partial.Store(false)
			c.inRequest.Store(true)
			c.served.Store(true)
			c.dropped.Store(false)
		}
		p := &progress{ResponseWriter: w, rc: http.NewResponseController(w), l: l}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = &progressBody{ReadCloser: r.Body, p: p}
		}
		// A kept-alive connection's deadline from its last answer may
		// have passed: this answer starts afresh.
		p.extend()
		next.ServeHTTP(p, r)
		// net/http flushes what is buffered once the handler returns.
		p.extend()
		if c != nil {
			c.inRequest.Store(false)
		}
	})
}

// progress is a ResponseWriter whose every step of writing has its own
// deadline.
type progress struct {
	http.ResponseWriter
	rc      *http.ResponseController
	l       *Limiter
	stalled atomic.Bool
}

func (p *progress) extend() {
	// An error means the writer cannot take deadlines (a test recorder);
	// then there is nothing to extend.
	p.rc.SetWriteDeadline(time.Now().Add(p.l.limits.StallTimeout))
}

func (p *progress) check(err error, direction string) {
	if isTimeout(err) && !p.stalled.Swap(true) {
		p.l.metrics.dropped.WithLabelValues("stalled_" + direction).Inc()
		p.l.log.Info("http: stalled request cut", "listener", p.l.name, "direction", direction, "stall_timeout", p.l.limits.StallTimeout)
	}
}

func (p *progress) Write(b []byte) (n int, err error) {
	for len(b) > 0 {
		step := b[:min(len(b), chunk)]
		p.extend()
		m, err := p.ResponseWriter.Write(step)
		n += m
		if err != nil {
			p.check(err, "write")
			return n, err
		}
		b = b[m:]
	}
	return n, nil
}

// ReadFrom sends src step by step. http.ServeContent hands it an
// *io.LimitedReader of an *os.File; each step passes on one
// *io.LimitedReader of that same file, the shape net.TCPConn sends with
// sendfile (a LimitedReader of a LimitedReader would be copied through
// user space instead).
func (p *progress) ReadFrom(src io.Reader) (n int64, err error) {
	rf, ok := p.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{p}, src)
	}
	base, remain := src, int64(-1) // -1: until EOF
	outer, limited := src.(*io.LimitedReader)
	if limited {
		base, remain = outer.R, outer.N
	}
	for remain != 0 {
		step := int64(chunk)
		if remain >= 0 && remain < step {
			step = remain
		}
		p.extend()
		m, err := rf.ReadFrom(&io.LimitedReader{R: base, N: step})
		n += m
		if limited {
			remain -= m
			outer.N = remain
		}
		if err != nil {
			p.check(err, "write")
			return n, err
		}
		if m < step {
			return n, nil // base is at its end
		}
	}
	return n, nil
}

// writerOnly hides ReadFrom, so that io.Copy does not call it again.
type writerOnly struct{ io.Writer }

func (p *progress) Flush() { p.FlushError() }

// FlushError is what http.ResponseController calls.
func (p *progress) FlushError() error {
	p.extend()
	err := p.rc.Flush()
	p.check(err, "write")
	return err
}

// Unwrap lets http.ResponseController reach the connection.
func (p *progress) Unwrap() http.ResponseWriter { return p.ResponseWriter }

// progressBody gives each read of a request body a fresh deadline.
type progressBody struct {
	io.ReadCloser
	p   *progress
	eof bool
}

func (b *progressBody) Read(buf []byte) (int, error) {
	if b.eof {
		// net/http reads the next request in the background from the end
		// of the body on, with no deadline: setting one would cut it.
		return b.ReadCloser.Read(buf)
	}
	b.p.rc.SetReadDeadline(time.Now().Add(b.p.l.limits.StallTimeout))
	n, err := b.ReadCloser.Read(buf)
	if err == io.EOF {
		b.eof = true
	}
	b.p.check(err, "read")
	return n, err
}
