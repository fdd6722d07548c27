package election_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
)

// A leader whose keepalives go unanswered for a TTL while etcd keeps its
// lease (as after etcd's raft leader was cut off and a new one extended
// every lease) keeps its term, and renews the lease itself from then on:
// one failure, at most one change of leader. Once the lease is gone, the
// term ends.
func TestTermOutlivesUnansweredKeepalives(t *testing.T) {
	t.Parallel()
	for _, kept := range []bool{true, false} {
		name := "lease kept"
		if !kept {
			name = "lease expired"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			srv := etcdtest.StartServer(t)
			px := newPausableProxy(t, strings.TrimPrefix(srv.ClientURL, "http://"))
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{px.addr}, DialTimeout: 3 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { cli.Close() })
			tl := &testLog{t: t}
			t.Cleanup(func() {
				tl.mu.Lock()
				tl.done = true
				tl.mu.Unlock()
			})
			lines := &signalLog{w: tl, seen: map[string]chan struct{}{
				"asking etcd to renew": make(chan struct{}),
				"session resumed":      make(chan struct{}),
			}}
			// The default TTL: etcd's client keeps a lease alive every
			// third of it, and a kept lease must never look expired.
			const ttl = 3 * time.Second
			r := startLogged(t, cli, "r1", ttl, nil, slog.New(slog.NewTextHandler(lines, nil)))
			tm := r.nextTerm(t, 10*time.Second)

			stopKeeping := func() {}
			if kept {
				// etcd keeps the lease alive, as a new raft leader
				// extending every lease does, whatever reaches it from r1.
				kctx, stop := context.WithCancel(context.Background())
				t.Cleanup(stop)
				stopKeeping = stop
				alive, err := srv.Client.KeepAlive(kctx, tm.fence.Lease)
				if err != nil {
					t.Fatal(err)
				}
				go func() {
					for range alive {
					}
				}()
			}
			px.pause()
			select {
			case <-lines.seen["asking etcd to renew"]:
			case <-tm.ended:
				px.resume()
				t.Fatal("the term ended without asking etcd whether its lease lives")
			case <-time.After(ttl + 5*time.Second):
				px.resume()
				t.Fatalf("the session did not end within %s of unanswered keepalives", ttl+5*time.Second)
			}
			px.resume()

			if !kept {
				// Found by the renewal etcd refuses, or by the leader
				// key's deletion that the lease's expiry brought.
				if !ended(tm, 5*time.Second) {
					t.Fatal("the term goes on with its lease gone")
				}
				if n := lines.count("session resumed"); n != 0 {
					t.Fatal("the session was resumed on an expired lease")
				}
				return
			}
			select {
			case <-lines.seen["session resumed"]:
			case <-tm.ended:
				t.Fatal("the term ended although etcd still held its lease")
			case <-time.After(5 * time.Second):
				t.Fatal("the session was not resumed")
			}
			// From now on only the term's own renewals keep the lease.
			stopKeeping()
			if ended(tm, 3*ttl) {
				t.Fatal("the resumed term ended: its own renewals do not keep the lease")
			}
			f, ok := r.el.Fence()
			if !ok || f != tm.fence {
				t.Fatalf("Fence() = %+v, %v; want the term's %+v", f, ok, tm.fence)
			}
			wctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := f.Write(wctx, cli, clientv3.OpPut(prefix+"probe", "x")); err != nil {
				t.Fatalf("a fenced write of the resumed term: %v", err)
			}
			if n := lines.count("asking etcd to renew"); n != 1 {
				t.Fatalf("etcd was asked %d times; want once", n)
			}
			r.noTerm(t, 100*time.Millisecond)

			// Cut off for good: the term ends within a TTL of its last
			// renewal, before etcd may expire the lease.
			px.pause()
			cut := time.Now()
			if !ended(tm, ttl+2*time.Second) {
				t.Fatalf("the resumed term outlived its lease: still leading %s after etcd last heard of it", time.Since(cut))
			}
			if d := time.Since(cut); d > ttl+time.Second/2 {
				t.Errorf("the resumed term ended %s after the cut; want within the TTL (%s) of its last renewal", d.Round(time.Millisecond), ttl)
			}
			px.resume()
		})
	}
}

// signalLog writes through w; seen[text] is closed at the first line
// holding text, and count says how many held it.
type signalLog struct {
	w    io.Writer
	mu   sync.Mutex
	seen map[string]chan struct{}
	n    map[string]int
}

func (s *signalLog) Write(p []byte) (int, error) {
	s.mu.Lock()
	for text, ch := range s.seen {
		if strings.Contains(string(p), text) {
			if s.n == nil {
				s.n = map[string]int{}
			}
			if s.n[text]++; s.n[text] == 1 {
				close(ch)
			}
		}
	}
	s.mu.Unlock()
	return s.w.Write(p)
}

func (s *signalLog) count(text string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.n[text]
}

// pausableProxy forwards TCP connections to target; paused, it holds
// what either side sends (connections stay open, as to a member whose
// host's link is cut) until resumed.
type pausableProxy struct {
	addr   string
	mu     sync.Mutex
	paused bool
	cond   *sync.Cond
}

func newPausableProxy(t *testing.T, target string) *pausableProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &pausableProxy{addr: ln.Addr().String()}
	p.cond = sync.NewCond(&p.mu)
	var (
		mu     sync.Mutex
		open   []net.Conn
		closed bool
		conns  sync.WaitGroup
	)
	accepted := make(chan struct{})
	t.Cleanup(func() {
		ln.Close()
		<-accepted
		mu.Lock()
		closed = true
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		p.resume()
		conns.Wait()
	})
	go func() {
		defer close(accepted)
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", target)
			if err != nil {
				in.Close()
				continue
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				in.Close()
				out.Close()
				return
			}
			open = append(open, in, out)
			conns.Add(2)
			mu.Unlock()
			go func() { defer conns.Done(); p.copy(out, in) }()
			go func() { defer conns.Done(); p.copy(in, out) }()
		}
	}()
	return p
}

func (p *pausableProxy) copy(dst, src net.Conn) {
	defer dst.Close()
	defer src.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		for p.paused {
			p.cond.Wait()
		}
		p.mu.Unlock()
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *pausableProxy) pause() {
	p.mu.Lock()
	p.paused = true
	p.mu.Unlock()
}

func (p *pausableProxy) resume() {
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
	p.cond.Broadcast()
}
