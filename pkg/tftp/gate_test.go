package tftp

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pin/tftp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mayu-boot/mayu/pkg/config"
)

// defaultLimits are mayu's defaults (etc/mayu.yaml).
var defaultLimits = config.TFTPLimits{MaxTransfers: 256, MaxPending: 256, MaxPerAddress: 64,
	Timeout: time.Second, Retransmissions: 1, FirstBlockTimeout: 3 * time.Second}

// fastLimits have short timeouts, so that a test sees them pass.
var fastLimits = config.TFTPLimits{MaxTransfers: 256, MaxPending: 256, MaxPerAddress: 64,
	Timeout: 200 * time.Millisecond, Retransmissions: 1, FirstBlockTimeout: 600 * time.Millisecond}

type testServer struct {
	*Server
	addr string
	data []byte
}

// start serves a directory with undionly.kpxe (many blocks) on loopback.
func start(t testing.TB, limits config.TFTPLimits) *testServer {
	t.Helper()
	dir := t.TempDir()
	data := bytes.Repeat([]byte("iPXE"), 30000)
	os.WriteFile(filepath.Join(dir, "undionly.kpxe"), data, 0o644)
	srv, err := New(dir, limits, slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(conn)
	t.Cleanup(srv.Shutdown)
	return &testServer{Server: srv, addr: conn.LocalAddr().String(), data: data}
}

func (s *testServer) limited(reason string) float64 {
	return testutil.ToFloat64(s.metrics.limited.WithLabelValues(reason))
}

// rawClient is a TFTP client that does only what a test tells it: it sends
// requests and acknowledgements, and records every packet it gets.
type rawClient struct {
	t    *testing.T
	conn *net.UDPConn
}

func newRawClient(t *testing.T, from string) *rawClient {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(from)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawClient{t: t, conn: conn}
}

// request sends a read request for file with options (name, value, …).
func (c *rawClient) request(server, file string, opts ...string) {
	c.t.Helper()
	c.requestMode(server, file, "octet", opts...)
}

func (c *rawClient) requestMode(server, file, mode string, opts ...string) {
	c.t.Helper()
	p := []byte{0, 1}
	for _, s := range append([]string{file, mode}, opts...) {
		p = append(append(p, s...), 0)
	}
	to, _ := net.ResolveUDPAddr("udp4", server)
	if _, err := c.conn.WriteToUDP(p, to); err != nil {
		c.t.Fatal(err)
	}
}

type packet struct {
	op    uint16
	block uint16 // DATA, ACK
	size  int    // the whole datagram
	text  string // ERROR's message
	from  *net.UDPAddr
}

// next waits up to d for a packet.
func (c *rawClient) next(d time.Duration) (packet, bool) {
	buf := make([]byte, 65536)
	c.conn.SetReadDeadline(time.Now().Add(d))
	n, from, err := c.conn.ReadFromUDP(buf)
	if err != nil {
		return packet{}, false
	}
	p := packet{op: binary.BigEndian.Uint16(buf), size: n, from: from}
	switch p.op {
	case 3:
		p.block = binary.BigEndian.Uint16(buf[2:])
	case 5:
		p.text = strings.TrimRight(string(buf[4:n]), "\x00")
	}
	return p, true
}

// all collects what arrives until nothing has for quiet.
func (c *rawClient) all(quiet time.Duration) []packet {
	var ps []packet
	for {
		p, ok := c.next(quiet)
		if !ok {
			return ps
		}
		ps = append(ps, p)
	}
}

func (c *rawClient) ack(to *net.UDPAddr, block uint16) {
	c.t.Helper()
	if _, err := c.conn.WriteToUDP([]byte{0, 4, byte(block >> 8), byte(block)}, to); err != nil {
		c.t.Fatal(err)
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var localhost = netip.MustParseAddr("127.0.0.1")

// A 16-byte request whose sender never acknowledges anything gets its
// first block at most twice (the library's default sent it six times:
// 3 kB), and stops counting against its address soon after.
func TestUnacknowledgedRequestCostsTwoPackets(t *testing.T) {
	s := start(t, fastLimits)
	c := newRawClient(t, "127.0.0.1")
	started := time.Now()
	c.request(s.addr, "undionly.kpxe")
	data, size := count(t, c.all(4*fastLimits.Timeout), 3)
	if data == 0 || data > 2 {
		t.Errorf("%d data packets, want 1 or 2", data)
	}
	if size > 2*(4+512) {
		t.Errorf("%d bytes of data answered a 16-byte request", size)
	}
	waitFor(t, time.Second, func() bool { return s.gate.count(localhost) == 0 }, "the request's count freed")
	if d := time.Since(started); d > 2*fastLimits.FirstBlockTimeout+4*fastLimits.Timeout {
		t.Errorf("freed after %s", d)
	}

	// Asking for a block size: the option acknowledgement at most twice,
	// and not one data packet.
	c = newRawClient(t, "127.0.0.1")
	c.request(s.addr, "undionly.kpxe", "blksize", "1468", "tsize", "0")
	if oacks, _ := count(t, c.all(4*fastLimits.Timeout), 6); oacks == 0 || oacks > 2 {
		t.Errorf("%d option acknowledgements, want 1 or 2", oacks)
	}
	waitFor(t, time.Second, func() bool { return s.gate.count(localhost) == 0 }, "the request's count freed")
}

// count counts the packets of type op (and their bytes) in ps, which may
// end with the error the library sends when it gives up, and nothing else.
func count(t *testing.T, ps []packet, op uint16) (n, size int) {
	t.Helper()
	for i, p := range ps {
		switch {
		case p.op == op && (op != 3 || p.block == 1):
			n++
			size += p.size
		case p.op == 5 && i == len(ps)-1:
		default:
			t.Errorf("got op %d block %d", p.op, p.block)
		}
	}
	return n, size
}

// The per-address limit refuses a request beyond it with a TFTP error,
// counts it, and leaves other addresses alone; pending requests hold no
// transfer slot.
func TestPerAddressLimit(t *testing.T) {
	l := fastLimits
	l.MaxPerAddress, l.MaxTransfers = 2, 1
	l.Timeout, l.FirstBlockTimeout = time.Second, 3*time.Second // the pending ones stay for the test
	s := start(t, l)
	for range 2 {
		c := newRawClient(t, "127.0.0.2")
		c.request(s.addr, "undionly.kpxe")
		if p, ok := c.next(time.Second); !ok || p.op != 3 {
			t.Fatalf("a request within the limit: %+v %v", p, ok)
		}
	}
	c := newRawClient(t, "127.0.0.2")
	c.request(s.addr, "undionly.kpxe")
	p, ok := c.next(time.Second)
	if !ok || p.op != 5 || !strings.Contains(p.text, "too many transfers from 127.0.0.2") {
		t.Fatalf("the third request got %+v (%v), want a TFTP error", p, ok)
	}
	if got := s.limited("per_address"); got != 1 {
		t.Errorf("per_address = %v, want 1", got)
	}
	// Another address gets the whole file, through the one transfer slot
	// that the two pending requests do not hold.
	got := fetch(t, s.addr)
	if !bytes.Equal(got, s.data) {
		t.Errorf("got %d bytes", len(got))
	}
}

// fetch gets undionly.kpxe with the library's client (from 127.0.0.1).
func fetch(t *testing.T, server string) []byte {
	t.Helper()
	cl, err := tftp.NewClient(server)
	if err != nil {
		t.Fatal(err)
	}
	cl.SetTimeout(time.Second)
	cl.SetBlockSize(1468)
	wt, err := cl.Receive("undionly.kpxe", "octet")
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A transfer takes a slot once its first block is acknowledged: with the
// one slot held, the next transfer is refused at its second block, and
// counted; the slot is free again when the holder stops.
func TestSlotTakenAtFirstAcknowledgement(t *testing.T) {
	l := fastLimits
	l.MaxTransfers = 1
	// The holder keeps the slot until its block 2 has timed out twice:
	// long enough for the second client's whole exchange below on a
	// slow machine, and within its own first-block watchdog.
	l.Timeout, l.FirstBlockTimeout = time.Second, 5*time.Second
	s := start(t, l)
	holder := newRawClient(t, "127.0.0.1")
	holder.request(s.addr, "undionly.kpxe")
	p, ok := holder.next(time.Second)
	if !ok || p.op != 3 || p.block != 1 {
		t.Fatalf("holder: %+v", p)
	}
	holder.ack(p.from, 1) // takes the slot, then goes quiet
	waitFor(t, time.Second, func() bool { return testutil.ToFloat64(s.metrics.active) == 1 }, "the slot taken")

	c := newRawClient(t, "127.0.0.1")
	c.request(s.addr, "undionly.kpxe")
	p, ok = c.next(time.Second)
	if !ok || p.op != 3 || p.block != 1 {
		t.Fatalf("second: %+v (a pending request needs no slot)", p)
	}
	c.ack(p.from, 1)
	p, ok = c.next(time.Second)
	if !ok || p.op != 5 || !strings.Contains(p.text, "server busy") {
		t.Fatalf("second after its first block: %+v, want a busy error", p)
	}
	if got := s.limited("transfers"); got != 1 {
		t.Errorf("transfers = %v, want 1", got)
	}
	// The holder's block 2 goes unacknowledged: sent twice, then the
	// transfer ends and frees the slot.
	waitFor(t, 5*time.Second, func() bool { return testutil.ToFloat64(s.metrics.active) == 0 }, "the slot freed")
	if got := fetch(t, s.addr); !bytes.Equal(got, s.data) {
		t.Errorf("got %d bytes", len(got))
	}
}

// The first-block watchdog: with the library allowed more retransmissions
// than first_block_timeout lasts, a request stops counting against its
// address at first_block_timeout, and a late acknowledgement gets an
// error, not the second block.
func TestFirstBlockWatchdog(t *testing.T) {
	l := fastLimits
	l.MaxPerAddress, l.Retransmissions = 1, 5
	l.Timeout, l.FirstBlockTimeout = 300*time.Millisecond, 500*time.Millisecond
	s := start(t, l)
	c := newRawClient(t, "127.0.0.1")
	c.request(s.addr, "undionly.kpxe")
	first, ok := c.next(time.Second)
	if !ok || first.op != 3 {
		t.Fatalf("%+v", first)
	}
	if s.gate.count(localhost) != 1 {
		t.Fatal("not counted")
	}
	waitFor(t, time.Second, func() bool { return s.gate.count(localhost) == 0 }, "the watchdog")
	if got := s.limited("first_block_timeout"); got != 1 {
		t.Errorf("first_block_timeout = %v, want 1", got)
	}
	c.ack(first.from, 1)
	for {
		p, ok := c.next(time.Second)
		if !ok {
			t.Fatal("no answer to the late acknowledgement")
		}
		if p.op == 3 && p.block == 1 {
			continue // a retransmission already under way
		}
		if p.op != 5 || !strings.Contains(p.text, "too late") {
			t.Errorf("late acknowledgement answered %+v", p)
		}
		break
	}
}

// netascii would corrupt a boot binary, and its converter reads ahead of
// the acknowledgements: refused with an error, holding nothing.
func TestNetasciiRefused(t *testing.T) {
	s := start(t, fastLimits)
	c := newRawClient(t, "127.0.0.1")
	c.requestMode(s.addr, "undionly.kpxe", "netascii")
	p, ok := c.next(time.Second)
	if !ok || p.op != 5 || !strings.Contains(p.text, "octet") {
		t.Fatalf("netascii: %+v (%v), want an error", p, ok)
	}
	// The error packet may reach the client before the refusal is counted.
	waitFor(t, time.Second, func() bool {
		return testutil.ToFloat64(s.metrics.transfers.WithLabelValues("refused")) == 1
	}, "the refusal counted")
	waitFor(t, time.Second, func() bool { return s.gate.count(localhost) == 0 }, "the count freed")
}
