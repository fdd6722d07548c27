package election

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The verdicts a follower reaches from its probes of one term.
func TestJudge(t *testing.T) {
	A, R, T, S, U := Answered, Refused, TimedOut, Stranger, Unreachable
	for _, c := range []struct {
		name     string
		outcomes []Outcome
		want     verdict // after the last outcome
	}{
		{"answering", []Outcome{A, A}, answering},
		{"refused twice: the process is gone", []Outcome{A, R, R}, deposeAlone},
		{"refused once: a reset, not yet", []Outcome{A, R}, wait},
		{"refused, answered, refused: no run", []Outcome{A, R, A, R}, wait},
		{"never seen answering: never deposed", []Outcome{R, R, R, R}, wait},
		{"never seen answering: never suspected", []Outcome{T, T, T, T, T}, wait},
		{"three timeouts: suspected", []Outcome{A, T, T, T}, suspect},
		{"two timeouts (a pause): not yet", []Outcome{A, T, T}, wait},
		{"a pause, then answers: cleared", []Outcome{A, T, T, A}, answering},
		{"a pause, answers, a pause: no run of three", []Outcome{A, T, T, A, T, T}, wait},
		{"timeouts then refused (a cut link comes back without the process)", []Outcome{A, T, T, R, R}, deposeAlone},
		{"refused then timeouts: the run starts again", []Outcome{A, R, T, T}, wait},
		// Another process at the address (a virtual address that moved
		// to a follower, a restart) proves nothing: never a deposition.
		{"strangers only", []Outcome{A, S, S, S, S, S}, wait},
		{"a stranger breaks a run of refusals", []Outcome{A, R, S, R}, wait},
		{"a stranger breaks a run of timeouts", []Outcome{A, T, T, S, T}, wait},
		// No handshake: the host is cut off, suspected after two.
		{"unreachable twice: suspected", []Outcome{A, U, U}, suspect},
		{"unreachable once: a lost packet, not yet", []Outcome{A, U}, wait},
		{"never seen answering: unreachable never suspected", []Outcome{U, U, U, U}, wait},
		{"unreachable, answered, unreachable: no run", []Outcome{A, U, A, U}, wait},
		{"a timeout then unreachable: counts as timeouts, not yet", []Outcome{A, T, U}, wait},
		{"timeouts and unreachable make three timeouts", []Outcome{A, U, T, U}, suspect},
		{"a stranger breaks a run of unreachable", []Outcome{A, U, S, U}, wait},
	} {
		t.Run(c.name, func(t *testing.T) {
			j := judge{suspectAfter: 3}
			var got verdict
			for _, o := range c.outcomes {
				got = j.observe(o)
			}
			if got != c.want {
				t.Errorf("after %v: verdict %d, want %d", c.outcomes, got, c.want)
			}
		})
	}
}

// The HTTP probe against real sockets: a leader that answers naming its
// term is alive; a closed port means the term's process is gone; a
// process that answers without the term is a stranger (proves nothing); a socket
// the kernel accepts but no process serves (frozen) times out.
func TestHTTPProbe(t *testing.T) {
	probe := httpProbe(150 * time.Millisecond)
	at := func(url string, term int64) Outcome {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		return probe(ctx, url, term)
	}

	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "leader r1 (term 42)")
	}))
	defer leader.Close()
	if o := at(leader.URL+"/leader", 42); o != Answered {
		t.Errorf("leader of term 42: %v", o)
	}
	if o := at(leader.URL+"/leader", 7); o != Stranger {
		t.Errorf("a replica that does not hold term 7 asked about it: %v, want refused", o)
	}
	loading := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "elected r1 (term 42), not answering DHCP yet", http.StatusServiceUnavailable)
	}))
	defer loading.Close()
	if o := at(loading.URL+"/leader", 42); o != Answered {
		t.Errorf("elected, loading its leases: %v, want answered", o)
	}

	// Closed: a port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/leader"
	ln.Close()
	if o := at(closed, 42); o != Refused {
		t.Errorf("closed port: %v, want refused", o)
	}

	// Frozen: the kernel completes the handshake, nobody reads.
	frozen, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer frozen.Close()
	start := time.Now()
	if o := at("http://"+frozen.Addr().String()+"/leader", 42); o != TimedOut {
		t.Errorf("frozen: %v, want timeout", o)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("the probe took %s, past its 300ms deadline", d)
	}

	// No handshake at all and no connection kept: a host whose link was
	// cut, or a leader whose accept queue a flood filled (a listening
	// socket whose accept queue is full drops SYNs). Only a timeout:
	// Unreachable needs a kept connection that the leader's kernel does
	// not acknowledge (TestProbeFindsACutLinkOnTheKeptConnection).
	full := fullListener(t)
	start = time.Now()
	if o := at("http://"+full+"/leader", 42); o != TimedOut {
		t.Errorf("no handshake: %v, want timeout", o)
	}
	if d := time.Since(start); d > 250*time.Millisecond {
		t.Errorf("the probe took %s: the handshake is bounded to 150ms", d)
	}
	if o := at(leader.URL+"/leader", 42); o != Answered {
		t.Fatalf("leader of term 42: %v", o)
	}

	// Gone after answering: the connection kept from the last probe is
	// closed by its end, the next one is refused.
	gone := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "leader r1 (term 42)")
	}))
	if o := at(gone.URL+"/leader", 42); o != Answered {
		t.Fatalf("leader of term 42: %v", o)
	}
	gone.Close()
	if o := at(gone.URL+"/leader", 42); o != Refused {
		t.Errorf("a leader gone since the last probe: %v, want refused", o)
	}
}

// A hostile host fills the leader's accept queue: fresh handshakes fail
// while the leader runs. The connection the probes keep still answers, so
// the probe says Answered, never Unreachable (two of which would be a
// verdict): a flood alone does not depose a healthy leader.
func TestProbeThroughAFloodedAcceptQueue(t *testing.T) {
	var running sync.RWMutex
	at := floodedLeader(t, httpProbe(125*time.Millisecond), &running, 0)
	for i := range 3 {
		if o := at(); o != Answered {
			t.Errorf("probe %d during the flood: %v, want answered (the kept connection)", i, o)
		}
	}
}

// stoppable is a listener whose Accept waits, after stop, until it is
// closed: a process out of file descriptors accepts nothing more.
type stoppable struct {
	net.Listener
	stopped, closed chan struct{}
	stopOnce        sync.Once
	closeOnce       sync.Once
}

func (l *stoppable) stop() { l.stopOnce.Do(func() { close(l.stopped) }) }

func (l *stoppable) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

func (l *stoppable) Accept() (net.Conn, error) {
	select {
	case <-l.stopped:
		<-l.closed
		return nil, net.ErrClosed
	default:
	}
	return l.Listener.Accept()
}

// queuedListener listens on loopback with a small backlog (4), so that
// its accept queue fills after a few connections once nothing accepts,
// while before that the probes' connections never wait for a slot.
func queuedListener(t *testing.T) (string, *stoppable) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 4); err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "queued")
	ln, err := net.FileListener(f)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	l := &stoppable{Listener: ln, stopped: make(chan struct{}), closed: make(chan struct{})}
	t.Cleanup(func() { l.Close() })
	return ln.Addr().String(), l
}

// fullListener is a listening socket (backlog 0) whose accept queue is
// full: Linux drops further SYNs, as a host cut off answers none.
func fullListener(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	for range 10 {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			return addr // the queue is full: SYNs go unanswered
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("the accept queue never filled")
	return ""
}

// A deposition's write that a silent etcd member swallowed is sent again
// beside it after hedgeAfter rather than failing at its bound; one that
// failed at once is sent again at once; one that succeeded is not.
func TestTwiceHedgesAStuckCall(t *testing.T) {
	var calls atomic.Int32
	start := time.Now()
	// total is long: a hedge sent at total/2 instead of hedgeAfter would
	// fall far outside the bound below.
	v, err := twice(context.Background(), 2*time.Second, func(ctx context.Context) (int32, error) {
		n := calls.Add(1)
		if n == 1 {
			<-ctx.Done() // a member that never answers
			return 0, ctx.Err()
		}
		return n, nil
	})
	if err != nil || v != 2 {
		t.Fatalf("%d, %v after %d calls, want the second to succeed", v, err, calls.Load())
	}
	if d := time.Since(start); d < hedgeAfter || d > hedgeAfter+300*time.Millisecond {
		t.Errorf("took %s, want the second call sent at %s", d, hedgeAfter)
	}
	calls.Store(0)
	start = time.Now()
	twice(context.Background(), 400*time.Millisecond, func(ctx context.Context) (int32, error) {
		if calls.Add(1) == 1 {
			return 0, errors.New("unavailable")
		}
		return 0, nil
	})
	// Sent at once, not at hedgeAfter (below it by a margin that a slow
	// machine's scheduling does not eat).
	if d := time.Since(start); calls.Load() != 2 || d >= hedgeAfter {
		t.Errorf("a call that failed at once: %d calls, %s", calls.Load(), d)
	}
	calls.Store(0)
	twice(context.Background(), 400*time.Millisecond, func(ctx context.Context) (int32, error) { calls.Add(1); return 0, nil })
	if calls.Load() != 1 {
		t.Errorf("%d calls for one that succeeded at once", calls.Load())
	}
	calls.Store(0)
	start = time.Now()
	v, err = twice(context.Background(), 400*time.Millisecond, func(ctx context.Context) (int32, error) {
		n := calls.Add(1)
		if n == 1 { // slow, but it answers before the copy beside it
			time.Sleep(80 * time.Millisecond)
			return n, nil
		}
		<-ctx.Done()
		return 0, ctx.Err()
	})
	if d := time.Since(start); err != nil || v != 1 || d > 150*time.Millisecond {
		t.Errorf("a first call that answers after the hedge: %d, %v after %s", v, err, d)
	}
	calls.Store(0)
	_, err = twice(context.Background(), 200*time.Millisecond, func(ctx context.Context) (int32, error) {
		calls.Add(1)
		<-ctx.Done()
		return 0, ctx.Err()
	})
	if err == nil || calls.Load() != 2 {
		t.Errorf("both stuck: %v after %d calls", err, calls.Load())
	}
}

// The flood of TestProbeThroughAFloodedAcceptQueue, and then the leader
// pauses for longer than a probe's deadline (a long GC, a slow disk): its
// probes time out, and no new connection gets through. The connection the
// probes keep is not given up with a late probe, and the leader's kernel
// acknowledges its requests, so no probe says Unreachable (two of which
// would be a verdict): only the timeouts count, as for any slow leader, and
// once it runs again it answers on that connection.
func TestProbeThroughAFloodAndAPause(t *testing.T) {
	// 125 ms: the default probe_timeout's bound; 25 ms: one shorter than
	// the leader kernel's delayed acknowledgement (minUnacked).
	for _, bound := range []time.Duration{125 * time.Millisecond, 25 * time.Millisecond} {
		t.Run(bound.String(), func(t *testing.T) {
			var paused sync.RWMutex // held for writing while the leader pauses
			at := floodedLeader(t, httpProbe(bound), &paused, 0)
			paused.Lock()
			var during []Outcome
			for range 4 { // 4 probes of 250 ms: a pause of a second
				o := at()
				during = append(during, o)
				if o != TimedOut {
					t.Errorf("a paused leader behind a flood: %v, want timeouts", during)
					break
				}
			}
			paused.Unlock()
			t.Logf("during the pause: %v", during)
			answered := false
			for range 3 {
				if o := at(); o == Answered {
					answered = true
					break
				}
			}
			if !answered {
				t.Error("the leader runs again and was not heard on the kept connection")
			}
		})
	}
}

// floodedLeader is a leader behind a flood: its accept queue full, so no
// new connection reaches it, after one probe got a connection to keep.
// Its handler holds paused for reading, and then takes delay.
func floodedLeader(t *testing.T, probe func(context.Context, string, int64) Outcome, paused *sync.RWMutex, delay time.Duration) func() Outcome {
	t.Helper()
	addr, accept := queuedListener(t)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		paused.RLock()
		defer paused.RUnlock()
		time.Sleep(delay)
		fmt.Fprintln(w, "leader r1 (term 42)")
	})}
	go srv.Serve(accept)
	t.Cleanup(func() { srv.Close() })
	at := func() Outcome {
		ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
		defer cancel()
		return probe(ctx, "http://"+addr+"/leader", 42)
	}
	for i := 0; at() != Answered; i++ { // a slow one answers a later probe
		if i == 3 {
			t.Fatal("no answer before the flood")
		}
	}
	accept.stop()
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			break // the queue is full: SYNs go unanswered
		}
		if i == 20 {
			t.Fatal("the accept queue never filled")
		}
		t.Cleanup(func() { c.Close() })
	}
	return at
}

// After a pause the leader answers every request the late probes left on
// the kept connection at once. Those answers are of the past: when it
// freezes again, the first probes after must time out, as if there had
// been no pause (else a backlog of old answers hides a frozen leader for
// as many probes as the pause lasted).
func TestProbeOldAnswersDoNotHideAFreeze(t *testing.T) {
	var paused sync.RWMutex
	at := floodedLeader(t, httpProbe(125*time.Millisecond), &paused, 0)
	paused.Lock()
	for range 6 { // a pause of 1.5 s: six requests outstanding
		if o := at(); o != TimedOut {
			t.Fatalf("during the pause: %v", o)
		}
	}
	paused.Unlock()
	for i := range 3 {
		if o := at(); o != Answered {
			t.Fatalf("probe %d after the pause: %v", i, o)
		}
	}
	time.Sleep(50 * time.Millisecond) // every old answer is in
	paused.Lock()
	defer paused.Unlock()
	var after []Outcome
	for range 3 {
		after = append(after, at())
	}
	for _, o := range after {
		if o != TimedOut {
			t.Errorf("frozen again: %v, want three timeouts", after)
			break
		}
	}
}

// A leader that answers more slowly than it is probed (its CPU starved),
// behind a flood: the requests pile up to the cap on the kept connection,
// which the probes then wait on rather than drop (a new one would not get
// through the flood). Answers and timeouts, never unreachable.
func TestProbeSlowLeaderBehindAFlood(t *testing.T) {
	var paused sync.RWMutex
	p := newProber(125 * time.Millisecond)
	p.maxPending = 3
	at := floodedLeader(t, p.probe, &paused, 300*time.Millisecond)
	var seen []Outcome
	answered := 0
	for range 16 {
		o := at()
		seen = append(seen, o)
		if o == Answered {
			answered++
		}
		if o == Unreachable || o == Refused {
			t.Fatalf("a slow leader: %v", seen)
		}
	}
	if p.kept == nil {
		t.Error("the connection to the slow leader was dropped")
	}
	if answered < 4 {
		t.Errorf("a leader answering every 300 ms: %v", seen)
	}
	t.Logf("%v", seen)
}

// Whatever answers at the probe address may be hostile (an address taken
// over on the boot network): an endless status line or headers cost the
// follower no more than maxResponse, and the connection is dropped.
func TestProbeBoundsAHostileAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		n   int64
		err error
	}
	sent := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line := bytes.Repeat([]byte("X"), 64<<10)
		var n int64
		c.Write([]byte("HTTP/1.1 200 OK\r\nX-A: "))
		for n < 64<<20 {
			c.SetWriteDeadline(time.Now().Add(2 * time.Second))
			m, err := c.Write(line)
			n += int64(m)
			if err != nil {
				sent <- result{n, err}
				return
			}
		}
		sent <- result{n, nil}
	}()
	p := newProber(125 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	o := p.probe(ctx, "http://"+ln.Addr().String()+"/leader", 42)
	cancel()
	if o == Answered {
		t.Errorf("an endless header: %v", o)
	}
	select {
	case r := <-sent:
		if r.n >= 64<<20 {
			t.Errorf("the follower read %d bytes of one answer", r.n)
		}
		if errors.Is(r.err, os.ErrDeadlineExceeded) {
			t.Errorf("the follower stopped reading after %d bytes but kept the connection open", r.n)
		}
	case <-time.After(10 * time.Second):
		t.Error("the follower kept reading")
	}
	p.release()
}

// release closes the kept connection (this replica leads, or there is no
// leader): nothing stays open to a leader of the past.
func TestProbeReleaseClosesTheConnection(t *testing.T) {
	closed := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "leader r1 (term 42)")
	}))
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			close(closed)
		}
	}
	srv.Start()
	defer srv.Close()
	p := newProber(125 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	if o := p.probe(ctx, srv.URL+"/leader", 42); o != Answered {
		t.Fatalf("the leader: %v", o)
	}
	p.release()
	select {
	case <-closed:
	case <-time.After(2 * time.Second):
		t.Fatal("the kept connection is still open after release")
	}
	if p.kept != nil {
		t.Error("release left a connection kept")
	}
}
