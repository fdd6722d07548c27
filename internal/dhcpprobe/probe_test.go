package dhcpprobe

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// fakeServer answers DHCP over UDP on loopback, so the prober's exchange
// logic runs over real sockets without root.
type fakeServer struct {
	t      *testing.T
	conn   net.PacketConn
	handle func(req *dhcpv4.DHCPv4) []*dhcpv4.DHCPv4

	mu   sync.Mutex
	seen []*dhcpv4.DHCPv4
}

func newFakeServer(t *testing.T, handle func(req *dhcpv4.DHCPv4) []*dhcpv4.DHCPv4) *fakeServer {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, conn: conn, handle: handle}
	done := make(chan struct{})
	t.Cleanup(func() { conn.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			req, err := dhcpv4.FromBytes(buf[:n])
			if err != nil {
				continue
			}
			s.mu.Lock()
			s.seen = append(s.seen, req)
			s.mu.Unlock()
			for _, resp := range handle(req) {
				if _, err := conn.WriteTo(resp.ToBytes(), from); err != nil {
					return
				}
			}
		}
	}()
	return s
}

func (s *fakeServer) requests() []*dhcpv4.DHCPv4 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*dhcpv4.DHCPv4(nil), s.seen...)
}

// prober returns a prober talking to s over a loopback UDP socket.
func (s *fakeServer) prober(cfg Config) *Prober {
	s.t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { conn.Close() })
	cfg.Server = s.conn.LocalAddr().(*net.UDPAddr)
	return NewProber(conn, cfg)
}

var (
	srvID  = net.IPv4(10, 77, 0, 1)
	leased = net.IPv4(10, 77, 0, 100)
)

func reply(t *testing.T, req *dhcpv4.DHCPv4, typ dhcpv4.MessageType, sid net.IP, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	m, err := dhcpv4.NewReplyFromRequest(req, append([]dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithYourIP(leased),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(sid)),
	}, mods...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// server returns a handler answering DISCOVER with offer and REQUEST with
// ack (nil: stay silent).
func server(t *testing.T, offer, ack dhcpv4.MessageType) func(*dhcpv4.DHCPv4) []*dhcpv4.DHCPv4 {
	return func(req *dhcpv4.DHCPv4) []*dhcpv4.DHCPv4 {
		switch req.MessageType() {
		case dhcpv4.MessageTypeDiscover:
			if offer != dhcpv4.MessageTypeNone {
				return []*dhcpv4.DHCPv4{reply(t, req, offer, srvID)}
			}
		case dhcpv4.MessageTypeRequest:
			if ack != dhcpv4.MessageTypeNone {
				return []*dhcpv4.DHCPv4{reply(t, req, ack, srvID)}
			}
		}
		return nil
	}
}

func TestMAC(t *testing.T) {
	for _, tt := range []struct {
		i    int
		want string
	}{{0, "02:00:00:00:00:00"}, {1, "02:00:00:00:00:01"}, {0x1234, "02:00:00:00:12:34"}, {65535, "02:00:00:00:ff:ff"}} {
		if got := MAC(tt.i).String(); got != tt.want {
			t.Errorf("MAC(%d) = %s, want %s", tt.i, got, tt.want)
		}
	}
}

func TestExchange(t *testing.T) {
	// Loopback answers in well under a second; the slack allows for a
	// loaded machine.
	const timeout, slack = time.Second, 500 * time.Millisecond
	tests := []struct {
		name       string
		offer, ack dhcpv4.MessageType
		wantOK     bool
		wantReason string
		slow       bool // expected to take the whole timeout
	}{
		{name: "ok", offer: dhcpv4.MessageTypeOffer, ack: dhcpv4.MessageTypeAck, wantOK: true},
		{name: "nak", offer: dhcpv4.MessageTypeOffer, ack: dhcpv4.MessageTypeNak, wantReason: "nak"},
		{name: "no offer", wantReason: "timeout", slow: true},
		{name: "no ack", offer: dhcpv4.MessageTypeOffer, wantReason: "timeout", slow: true},
		{name: "ack instead of offer", offer: dhcpv4.MessageTypeAck, ack: dhcpv4.MessageTypeAck, wantReason: "timeout", slow: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newFakeServer(t, server(t, tt.offer, tt.ack))
			p := s.prober(Config{Timeout: timeout})
			mac := MAC(7)
			r := p.Exchange(context.Background(), mac)
			if r.OK != tt.wantOK || r.Reason != tt.wantReason || r.MAC != mac.String() {
				t.Fatalf("result %+v, want ok=%v reason=%q", r, tt.wantOK, tt.wantReason)
			}
			if r.OK && (r.IP != leased.String() || r.Server != srvID.String()) {
				t.Errorf("result %+v, want ip %s server %s", r, leased, srvID)
			}
			if lat := r.Latency(); lat > timeout+slack || (tt.slow && lat < timeout) || (!tt.slow && lat >= timeout) {
				t.Errorf("latency %v with timeout %v", lat, timeout)
			}
			if _, err := ParseLog(strings.NewReader(r.String())); err != nil {
				t.Errorf("log line %q: %v", r, err)
			}
		})
	}
}

func TestExchangeIgnoresOthersReplies(t *testing.T) {
	other := net.IPv4(10, 77, 0, 2)
	s := newFakeServer(t, func(req *dhcpv4.DHCPv4) []*dhcpv4.DHCPv4 {
		wrongXID := reply(t, req, dhcpv4.MessageTypeOffer, srvID)
		wrongXID.TransactionID[0] ^= 0xff
		wrongMAC := reply(t, req, dhcpv4.MessageTypeOffer, srvID)
		wrongMAC.ClientHWAddr = MAC(99)
		request := reply(t, req, dhcpv4.MessageTypeOffer, srvID)
		request.OpCode = dhcpv4.OpcodeBootRequest
		switch req.MessageType() {
		case dhcpv4.MessageTypeDiscover:
			return []*dhcpv4.DHCPv4{wrongXID, wrongMAC, request, reply(t, req, dhcpv4.MessageTypeOffer, srvID)}
		case dhcpv4.MessageTypeRequest:
			// Another server's NAK to the broadcast REQUEST must not count.
			return []*dhcpv4.DHCPv4{reply(t, req, dhcpv4.MessageTypeNak, other), reply(t, req, dhcpv4.MessageTypeAck, srvID)}
		}
		return nil
	})
	r := s.prober(Config{Timeout: time.Second}).Exchange(context.Background(), MAC(1))
	if !r.OK || r.Server != srvID.String() {
		t.Fatalf("result %+v", r)
	}
}

func TestExchangeOptions(t *testing.T) {
	for _, tt := range []struct {
		name string
		cfg  Config
	}{
		{"defaults", Config{Arch: -1}},
		{"vendor arch broadcast release", Config{Vendor: "PXEClient:Arch:00007", Arch: 7, Broadcast: true, Release: true}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := newFakeServer(t, server(t, dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeAck))
			r := s.prober(tt.cfg).Exchange(context.Background(), MAC(3))
			if !r.OK {
				t.Fatalf("result %+v", r)
			}
			want := []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest}
			if tt.cfg.Release {
				want = append(want, dhcpv4.MessageTypeRelease)
				// The RELEASE is fire-and-forget: wait for it to arrive.
				for deadline := time.Now().Add(time.Second); len(s.requests()) < 3 && time.Now().Before(deadline); {
					time.Sleep(5 * time.Millisecond)
				}
			}
			reqs := s.requests()
			if len(reqs) != len(want) {
				t.Fatalf("server saw %d messages, want %v", len(reqs), want)
			}
			for i, req := range reqs {
				if req.MessageType() != want[i] {
					t.Errorf("message %d is %s, want %s", i, req.MessageType(), want[i])
				}
				if req.ClientHWAddr.String() != MAC(3).String() {
					t.Errorf("%s chaddr %s", req.MessageType(), req.ClientHWAddr)
				}
				if req.MessageType() == dhcpv4.MessageTypeRelease {
					if !req.ClientIPAddr.Equal(leased) || !req.ServerIdentifier().Equal(srvID) {
						t.Errorf("RELEASE ciaddr %s server %s", req.ClientIPAddr, req.ServerIdentifier())
					}
					continue
				}
				if req.IsBroadcast() != tt.cfg.Broadcast {
					t.Errorf("%s broadcast flag %v", req.MessageType(), req.IsBroadcast())
				}
				if got := req.ClassIdentifier(); got != tt.cfg.Vendor {
					t.Errorf("%s vendor class %q, want %q", req.MessageType(), got, tt.cfg.Vendor)
				}
				archs := req.ClientArch()
				if tt.cfg.Arch < 0 && len(archs) != 0 || tt.cfg.Arch >= 0 && (len(archs) != 1 || archs[0] != iana.Arch(tt.cfg.Arch)) {
					t.Errorf("%s arch %v, want %d", req.MessageType(), archs, tt.cfg.Arch)
				}
			}
			if reqs[1].TransactionID != reqs[0].TransactionID {
				t.Error("REQUEST does not reuse the DISCOVER's transaction ID")
			}
			if sid := reqs[1].ServerIdentifier(); !sid.Equal(srvID) {
				t.Errorf("REQUEST server identifier %s", sid)
			}
		})
	}
}

func TestExchangeCancelled(t *testing.T) {
	s := newFakeServer(t, server(t, dhcpv4.MessageTypeNone, dhcpv4.MessageTypeNone))
	p := s.prober(Config{Timeout: 5 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	r := p.Exchange(ctx, MAC(1))
	if r.OK || r.Reason == ReasonTimeout || r.Latency() > time.Second {
		t.Fatalf("result %+v", r)
	}
	// A later exchange on the same prober is not affected, and a ctx
	// deadline earlier than the timeout counts as a timeout.
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	r = p.Exchange(ctx, MAC(1))
	if r.Reason != ReasonTimeout || r.Latency() > time.Second {
		t.Fatalf("after cancel: %+v", r)
	}
}

func TestExchangeSequence(t *testing.T) {
	// Late replies to an earlier attempt must not satisfy a later one.
	var mu sync.Mutex
	var held []*dhcpv4.DHCPv4
	s := newFakeServer(t, func(req *dhcpv4.DHCPv4) []*dhcpv4.DHCPv4 {
		mu.Lock()
		defer mu.Unlock()
		if req.MessageType() != dhcpv4.MessageTypeDiscover {
			return nil
		}
		out := held // replay offers to older DISCOVERs only
		held = []*dhcpv4.DHCPv4{reply(t, req, dhcpv4.MessageTypeOffer, srvID)}
		return out
	})
	p := s.prober(Config{Timeout: 50 * time.Millisecond})
	for i := range 3 {
		if r := p.Exchange(context.Background(), MAC(1)); r.Reason != ReasonTimeout {
			t.Fatalf("attempt %d: %+v", i, r)
		}
	}
}

// With Renew, a MAC holding an address alternates a lone REQUEST for it
// (option 50, no server identifier, no DISCOVER) with a full exchange; a
// NAK sends it back to a full exchange.
func TestExchangeRenew(t *testing.T) {
	var mu sync.Mutex
	nak := false
	s := newFakeServer(t, func(req *dhcpv4.DHCPv4) []*dhcpv4.DHCPv4 {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case req.MessageType() == dhcpv4.MessageTypeDiscover:
			return []*dhcpv4.DHCPv4{reply(t, req, dhcpv4.MessageTypeOffer, srvID)}
		case req.MessageType() == dhcpv4.MessageTypeRequest && nak:
			return []*dhcpv4.DHCPv4{reply(t, req, dhcpv4.MessageTypeNak, srvID)}
		default:
			return []*dhcpv4.DHCPv4{reply(t, req, dhcpv4.MessageTypeAck, srvID)}
		}
	})
	p := s.prober(Config{Timeout: time.Second, Renew: true})
	var kinds []string
	exchange := func(wantOK bool) {
		t.Helper()
		before := len(s.requests())
		r := p.Exchange(context.Background(), MAC(1))
		if r.OK != wantOK || wantOK && r.IP != leased.String() {
			t.Fatalf("%+v", r)
		}
		var k []string
		for _, req := range s.requests()[before:] {
			k = append(k, req.MessageType().String())
			if req.MessageType() == dhcpv4.MessageTypeRequest && len(s.requests())-before == 1 {
				if !req.RequestedIPAddress().Equal(leased) || req.ServerIdentifier() != nil {
					t.Fatalf("renewal REQUEST: requested %v, server id %v", req.RequestedIPAddress(), req.ServerIdentifier())
				}
			}
		}
		kinds = append(kinds, strings.Join(k, "+"))
	}
	exchange(true)
	exchange(true)
	exchange(true)
	mu.Lock()
	nak = true
	mu.Unlock()
	exchange(false) // the renewal is NAKed
	mu.Lock()
	nak = false
	mu.Unlock()
	exchange(true)
	want := []string{"DISCOVER+REQUEST", "REQUEST", "DISCOVER+REQUEST", "REQUEST", "DISCOVER+REQUEST"}
	if strings.Join(kinds, " ") != strings.Join(want, " ") {
		t.Fatalf("exchanges %v, want %v", kinds, want)
	}
}
