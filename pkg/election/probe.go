package election

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"syscall"
	"time"
)

// The probe asks the leader's /leader over one TCP connection that it keeps
// from probe to probe, whatever a probe's outcome: an answer that names the
// term (200, or 503 while the leader loads its leases) is alive. A frozen
// process's kernel still completes TCP handshakes on its listening socket,
// so only an HTTP answer, which needs the process to run, counts.
//
// A probe whose answer is late does not give its connection up: its
// request stays outstanding and the next probe writes its own behind it
// (HTTP/1.1 pipelining, answered in order), so an answer that arrives
// later still proves the leader runs. This matters under a flood: a host
// on the boot network can fill the leader's accept queue (idle connections
// until it runs out of descriptors), and then no new connection gets
// through while the leader runs. A prober that closed its connection at a
// probe's deadline, as an HTTP client does when its request is cancelled,
// would have none left after the leader's first pause of a few hundred
// milliseconds.
//
// Unreachable: a probe decides that no kernel answers at the leader's
// address (its host's link cut, the host down) when, within the handshake
// bound, a fresh TCP handshake beside the request does not complete and
// the kept connection neither answered nor had its request acknowledged
// by the leader's kernel (TCP_INFO: segments unacknowledged). Both must
// fail: a flooded accept queue fails fresh handshakes only, and the
// leader's kernel acknowledges the request on the kept connection even
// while its process is frozen.

// maxPending bounds the requests a kept connection carries unanswered;
// at it, a probe writes nothing more and only waits for answers: a leader
// that answers slower than it is probed (a starved CPU) keeps its
// connection.
const maxPending = 16

// minUnacked is how long a request must have gone unacknowledged before
// a probe takes it for no kernel at the leader's address: a kernel delays
// its acknowledgement (40 ms, more on some paths) while its process has
// not answered. With the default probe_timeout (250 ms) the handshake
// bound (125 ms) is longer, and this changes nothing.
const minUnacked = 100 * time.Millisecond

// maxResponse bounds what one answer may take on the connection, its
// status line and headers included: the leader's is a few hundred bytes.
// Past it the connection is closed (not the leader's server).
const maxResponse = 8 << 10

// prober is the probe of one replica's follower.
type prober struct {
	handshake  time.Duration
	maxPending int

	mu   sync.Mutex // one probe at a time
	kept *kept
}

func newProber(handshake time.Duration) *prober {
	return &prober{handshake: handshake, maxPending: maxPending}
}

// httpProbe is a prober's probe (tests; SetDeposition keeps the prober
// to release it).
func httpProbe(handshake time.Duration) func(ctx context.Context, url string, term int64) Outcome {
	return newProber(handshake).probe
}

// release closes the kept connection: there is no leader to probe, this
// replica leads, or the watch ended.
func (p *prober) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kept != nil {
		p.kept.close()
		p.kept = nil
	}
}

// kept is a connection to the leader's probe address and the reader of
// its answers.
type kept struct {
	addr    string // host:port
	conn    *net.TCPConn
	answers chan answer
	dead    chan struct{} // closed when the connection ends
	pending int           // requests written and not yet answered
	wrote   time.Time     // when the last request was written
}

// answer is one answer's body and when it was read.
type answer struct {
	body []byte
	at   time.Time
}

func (p *prober) probe(ctx context.Context, rawURL string, term int64) Outcome {
	p.mu.Lock()
	defer p.mu.Unlock()
	start := time.Now()
	u, err := url.Parse(rawURL)
	if err != nil || u.Host == "" {
		return TimedOut // nothing learnt
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	req := []byte(fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: mayu-probe\r\n\r\n", u.RequestURI(), u.Host))

	if k := p.kept; k != nil && (k.addr != addr || k.closed()) {
		k.close()
		p.kept = nil
	}
	fresh := false
	if p.kept == nil {
		// The dial is the handshake: nothing to keep yet.
		k, o := p.dial(ctx, addr)
		if k == nil {
			return o
		}
		p.kept, fresh = k, true
	}
	k := p.kept
	// Answers read before this probe began answered earlier probes'
	// requests and say nothing of the leader now; one read since does.
	for len(k.answers) > 0 {
		a := <-k.answers
		k.pending--
		if !a.at.Before(start) {
			return judgeAnswer(a.body, term)
		}
	}
	// At the cap (every request unanswered), nothing more is written: a
	// leader slower than its probes keeps its connection, and its link
	// cut is then found by the timeouts alone (nothing new to be left
	// unacknowledged).
	if k.pending < p.maxPending && !k.ask(ctx, req) {
		k.close()
	}

	// Beside the request, on a connection kept from earlier probes: a
	// fresh handshake, to tell "no kernel answers" from "the process is
	// slow" within the handshake bound.
	hctx, hcancel := context.WithCancel(ctx)
	defer hcancel()
	var shook chan bool
	if !fresh {
		shook = make(chan bool, 1)
		go func() { shook <- handshakes(hctx, addr, p.handshake) }()
	}
	// replace gives the kept connection up for a new one, once a probe,
	// and asks on it; over when the probe's outcome is known without.
	redialed := false
	replace := func() (o Outcome, over bool) {
		k.close()
		p.kept = nil
		if redialed {
			return TimedOut, true
		}
		redialed = true
		nk, o := p.dial(ctx, addr)
		if nk == nil {
			return o, true
		}
		p.kept, k = nk, nk
		if !k.ask(ctx, req) {
			k.close()
		}
		return 0, false
	}
	var recheck <-chan time.Time
	for {
		select {
		case a := <-k.answers:
			k.pending--
			if a.at.Before(start) {
				// Read before this probe began: it answered an earlier
				// probe's request and says nothing of the leader now.
				continue
			}
			return judgeAnswer(a.body, term)
		case <-k.dead:
			if len(k.answers) > 0 {
				continue // the answers it read before its end first
			}
			// Closed by its other end (a leader process gone, or one
			// that restarted its listener): one fresh connection says
			// which.
			if o, over := replace(); over {
				return o
			}
		case ok := <-shook:
			shook = nil
			tcp := k.tcp()
			switch {
			case ok && tcp.retransmitting:
				// A kernel answers a fresh handshake while the kept
				// connection waits out its retransmission backoff (the
				// network was down for a while): that connection would
				// answer only at its next retransmission, seconds
				// away. A new one asks now.
				if o, over := replace(); over {
					return o
				}
			case !ok && tcp.unacked:
				// Only once the leader's kernel had minUnacked to
				// acknowledge: a kernel delays its ACK up to 40 ms
				// while its process has not answered.
				if wait := minUnacked - time.Since(k.wrote); wait > 0 {
					recheck = time.After(wait)
				} else {
					return Unreachable
				}
			}
		case <-recheck:
			recheck = nil
			if k.tcp().unacked {
				return Unreachable
			}
		case <-ctx.Done():
			// Late: the request stays outstanding on the connection.
			return TimedOut
		}
	}
}

// judgeAnswer: an answer that names the term is the leader's; any other
// comes from a live process at that address that does not hold the term
// (a restarted leader, or an address that moved).
func judgeAnswer(body []byte, term int64) Outcome {
	if !bytes.Contains(body, []byte(fmt.Sprintf("(term %d)", term))) {
		return Stranger
	}
	return Answered
}

// dial opens a connection to addr within the handshake bound; when it
// cannot, o is Refused (a kernel refused: nothing listens) or TimedOut. A
// handshake that goes unanswered is not Unreachable on its own: a flooded
// accept queue drops handshakes of a leader that runs; only a connection
// kept open says more (probe).
func (p *prober) dial(ctx context.Context, addr string) (k *kept, o Outcome) {
	c, err := (&net.Dialer{Timeout: p.handshake}).DialContext(ctx, "tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
			return nil, Refused
		}
		return nil, TimedOut
	}
	k = &kept{addr: addr, conn: c.(*net.TCPConn), answers: make(chan answer, p.maxPending), dead: make(chan struct{})}
	go k.read()
	return k, 0
}

// ask writes one request; false if the connection cannot take it.
func (k *kept) ask(ctx context.Context, req []byte) bool {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Second)
	}
	k.conn.SetWriteDeadline(deadline)
	if _, err := k.conn.Write(req); err != nil {
		return false
	}
	k.pending++
	k.wrote = time.Now()
	return true
}

// read hands every answer to answers, in order, until the connection ends
// or carries something that is not a short HTTP answer.
func (k *kept) read() {
	defer close(k.dead)
	defer k.conn.Close()
	// Each answer may read maxResponse bytes from the connection (what
	// the buffer holds of the next one was read on the last's account).
	lr := &io.LimitedReader{R: k.conn}
	br := bufio.NewReaderSize(lr, 1024)
	for {
		lr.N = maxResponse
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1024))
		resp.Body.Close() // what is left of the body, within lr
		if err != nil || lr.N <= 0 {
			return
		}
		select {
		case k.answers <- answer{body: body, at: time.Now()}:
		default:
			return // more answers than requests: not the leader's server
		}
		if resp.Close {
			return
		}
	}
}

func (k *kept) closed() bool {
	select {
	case <-k.dead:
		return true
	default:
		return false
	}
}

func (k *kept) close() { k.conn.Close() }

// handshakes reports whether a TCP handshake with addr completes (or is
// refused: a kernel answered) within bound; false only when nothing
// answered in time.
func handshakes(ctx context.Context, addr string, bound time.Duration) bool {
	c, err := (&net.Dialer{Timeout: bound}).DialContext(ctx, "tcp", addr)
	if err == nil {
		c.Close()
		return true
	}
	var ne net.Error
	return ctx.Err() != nil || !errors.As(err, &ne) || !ne.Timeout()
}

// tcpState is what the kernel knows of a kept connection.
type tcpState struct {
	unacked        bool // something written is not acknowledged yet
	retransmitting bool // and was sent again after a timeout, unanswered
}
