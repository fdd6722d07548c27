package tftp

import (
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"

	"github.com/mayu-boot/mayu/pkg/config"
)

// What pin/tftp v3.1.0 cannot do, and how mayu builds it around it:
//
//   - It opens a socket for every request before mayu's read handler runs,
//     and sends mayu's refusal as a TFTP error from it. A refused request
//     so holds a descriptor only until that error is sent; a request that
//     is let in holds one until its transfer ends. The gate below bounds
//     those (max_pending, max_transfers), per address too; a flood of
//     requests from spoofed addresses still costs one socket and one error
//     packet per request, which no handler can avoid.
//   - It has one timeout and one retry count for every block of every
//     transfer. mayu sets its retries to node.limits.tftp.retransmissions
//     (1): a request nobody acknowledges gets its first block (or its
//     option acknowledgement) at most twice. The price is that an honest
//     transfer is also given up when one block is lost twice in a row; a
//     lossy network can raise retransmissions, and pay per flood request.
//   - It cannot be told to give up a transfer from outside, and it never
//     says that a block was acknowledged. It does read block n+1 only once
//     block n was acknowledged, so firstBlock below, between the library
//     and the file, sees the first block acknowledged when it is asked for
//     the second; a watchdog ends the request's claim on its address at
//     first_block_timeout, and a later acknowledgement gets an error
//     instead of the second block. The socket lives on until the library's
//     own retries end ((1+retransmissions) × timeout per phase).

// gate admits TFTP requests: a request is pending until its first block is
// acknowledged, then takes one of max_transfers slots.
type gate struct {
	limits config.TFTPLimits
	m      *metrics

	mu      sync.Mutex
	pending int
	active  int
	byAddr  map[netip.Addr]int
}

func newGate(limits config.TFTPLimits, m *metrics) *gate {
	return &gate{limits: limits, m: m, byAddr: map[netip.Addr]int{}}
}

// errLimited marks an error that a limit caused: counted as such, not as
// a failed transfer.
var errLimited = errors.New("limit")

type limitError struct{ msg string }

func (e limitError) Error() string        { return e.msg }
func (e limitError) Is(target error) bool { return target == errLimited }

// claim is one admitted request's hold on the gate.
type claim struct {
	g     *gate
	addr  netip.Addr
	watch *time.Timer

	// Under g.mu:
	pending bool // counts in g.pending
	active  bool // holds a slot
	counted bool // counts against its address
	expired bool // the watchdog fired before the first acknowledgement
}

// enter admits a request from addr, or refuses it with an error the
// client is sent.
func (g *gate) enter(addr netip.Addr) (*claim, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.byAddr[addr] >= g.limits.MaxPerAddress:
		g.m.limited.WithLabelValues("per_address").Inc()
		return nil, limitError{fmt.Sprintf("too many transfers from %s (%d), try again", addr, g.limits.MaxPerAddress)}
	case g.pending >= g.limits.MaxPending:
		g.m.limited.WithLabelValues("pending").Inc()
		return nil, limitError{"server busy, try again"}
	}
	g.pending++
	g.byAddr[addr]++
	g.m.pending.Inc()
	c := &claim{g: g, addr: addr, pending: true, counted: true}
	c.watch = time.AfterFunc(g.limits.FirstBlockTimeout, c.expire)
	return c, nil
}

// expire is the first-block watchdog: a request whose first block is not
// acknowledged in time stops counting against its address.
func (c *claim) expire() {
	g := c.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if !c.pending || c.expired {
		return
	}
	c.expired = true
	g.m.limited.WithLabelValues("first_block_timeout").Inc()
	c.uncount()
}

// acknowledged moves a pending request to a transfer slot, once its
// first block was acknowledged.
func (c *claim) acknowledged() error {
	g := c.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if !c.pending {
		return nil
	}
	if c.expired {
		return limitError{"first block acknowledged too late"}
	}
	if g.active >= g.limits.MaxTransfers {
		g.m.limited.WithLabelValues("transfers").Inc()
		return limitError{fmt.Sprintf("server busy (%d transfers), try again", g.limits.MaxTransfers)}
	}
	c.watch.Stop()
	c.pending = false
	g.pending--
	g.m.pending.Dec()
	c.active = true
	g.active++
	g.m.active.Inc()
	return nil
}

// leave releases whatever c holds, when its handler returns.
func (c *claim) leave() {
	c.watch.Stop()
	g := c.g
	g.mu.Lock()
	defer g.mu.Unlock()
	if c.pending {
		c.pending = false
		g.pending--
		g.m.pending.Dec()
	}
	if c.active {
		c.active = false
		g.active--
		g.m.active.Dec()
	}
	c.uncount()
}

func (c *claim) uncount() {
	if !c.counted {
		return
	}
	c.counted = false
	if c.g.byAddr[c.addr]--; c.g.byAddr[c.addr] <= 0 {
		delete(c.g.byAddr, c.addr)
	}
}

// errNetascii refuses netascii mode: it would corrupt a boot binary, and
// it reads in a pattern that firstBlock cannot follow.
var errNetascii = errors.New("only octet mode is served")

// count is how many requests of addr count against it now.
func (g *gate) count(addr netip.Addr) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.byAddr[addr]
}

// firstBlock sits between the library and the file. The library reads
// one whole block per Read (io.ReadFull of blksize) and reads the next
// only once the previous one was acknowledged; so the second Read means
// the first block was acknowledged. Each Read fills its buffer, or ends
// the file, so that one Read is one block.
type firstBlock struct {
	r     io.Reader
	claim *claim
	reads int
}

func (f *firstBlock) Read(p []byte) (int, error) {
	f.reads++
	if f.reads == 1 && len(p) < 512 {
		// In octet mode the library asks a whole block, 512 bytes or
		// more; only its netascii converter asks less (256 at a time),
		// and would make the second Read come before any acknowledgement.
		return 0, errNetascii
	}
	if f.reads == 2 {
		if err := f.claim.acknowledged(); err != nil {
			return 0, err
		}
	}
	n, err := io.ReadFull(f.r, p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}
