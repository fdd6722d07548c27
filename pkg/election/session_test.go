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
// every lease) keeps its term: one failure, at most one change of leader.
// Once the lease is gone, the term ends.
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
			asking := make(chan struct{})
			tl := &testLog{t: t}
			t.Cleanup(func() {
				tl.mu.Lock()
				tl.done = true
				tl.mu.Unlock()
			})
			log := slog.New(slog.NewTextHandler(&signalLog{w: tl, line: "asking etcd whether the term's lease lives", seen: asking}, nil))
			// The default TTL: etcd answers a lease's time to live in
			// whole seconds, and with a TTL of 2 s a kept lease may have
			// less than one left between two keepalives.
			const ttl = 3 * time.Second
			r := startLogged(t, cli, "r1", ttl, nil, log)
			tm := r.nextTerm(t, 10*time.Second)

			if kept {
				// etcd keeps the lease alive, as a new raft leader
				// extending every lease does, whatever reaches it from r1.
				kctx, stop := context.WithCancel(context.Background())
				t.Cleanup(stop)
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
			case <-asking:
			case <-time.After(ttl + 5*time.Second):
				px.resume()
				t.Fatalf("the session did not end within %s of unanswered keepalives", ttl+5*time.Second)
			}
			px.resume()

			if !kept {
				if !ended(tm, 5*time.Second) {
					t.Fatal("the term goes on with its lease gone")
				}
				return
			}
			if ended(tm, 2*ttl) {
				t.Fatal("the term ended although etcd still held its lease")
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
			r.noTerm(t, 100*time.Millisecond)
		})
	}
}

// signalLog writes through w and closes seen at the first line holding
// line.
type signalLog struct {
	w    io.Writer
	line string
	once sync.Once
	seen chan struct{}
}

func (s *signalLog) Write(p []byte) (int, error) {
	if strings.Contains(string(p), s.line) {
		s.once.Do(func() { close(s.seen) })
	}
	return s.w.Write(p)
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
	var conns sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		p.resume()
		conns.Wait()
	})
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range open {
			c.Close()
		}
	})
	go func() {
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
			open = append(open, in, out)
			mu.Unlock()
			conns.Add(2)
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
