package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"
)

// Prober finds out whether an address a client declined is really in use.
// A DECLINE alone proves nothing: a client could decline every address it
// is offered and empty the pool.
type Prober interface {
	// InUse reports whether some host other than the client (its MAC)
	// answers on ip. local: ip is on the server's own segment (ask ARP);
	// else it is behind a relay (ask ICMP echo). It returns when ctx ends
	// at the latest.
	InUse(ctx context.Context, ip netip.Addr, local bool, client net.HardwareAddr) (bool, error)
}

// netProber probes from the DHCP interface: ARP requests from the
// server's own address on the local segment, ICMP echo across relays. Its
// two sockets are opened with the DHCP socket (in the same network
// namespace) and shared by every probe; one reader per socket hands the
// answers to the probes waiting for them.
type netProber struct {
	ifi *net.Interface
	src netip.Addr // the server's address, the ARP sender

	arp    *arp.Client // nil if it could not be opened: arpErr says why
	arpErr error
	icmp   *icmp.PacketConn
	icmpV  string // "ip4:icmp" (raw) or "udp4" (a ping socket)
	icmpE  error

	mu     sync.Mutex
	arpW   map[*arpWaiter]bool
	echoW  map[int]*echoWaiter // by sequence number
	seq    int
	closed bool
}

type arpWaiter struct {
	ip     netip.Addr
	client string // the declining client's MAC: its own answers prove nothing
	found  chan struct{}
	once   sync.Once
}

type echoWaiter struct {
	ip    netip.Addr
	found chan struct{}
	once  sync.Once
}

// openProber opens the probe sockets on iface. A socket that cannot be
// opened (no CAP_NET_RAW) is not an error here: its probes report it, and
// their DECLINEs quarantine nothing.
func openProber(iface string, src netip.Addr) *netProber {
	p := &netProber{src: src, arpW: map[*arpWaiter]bool{}, echoW: map[int]*echoWaiter{}}
	ifi, err := net.InterfaceByName(iface)
	if err == nil {
		p.ifi = ifi
		p.arp, err = arp.Dial(ifi)
	}
	if err != nil {
		p.arpErr = fmt.Errorf("ARP socket on %s: %w", iface, err)
	} else {
		go p.readARP()
	}
	p.icmpV = "ip4:icmp"
	if p.icmp, err = icmp.ListenPacket(p.icmpV, "0.0.0.0"); err != nil {
		p.icmpV = "udp4"
		p.icmp, err = icmp.ListenPacket(p.icmpV, "0.0.0.0")
	}
	if err != nil {
		p.icmpE = fmt.Errorf("ICMP socket: %w", err)
	} else {
		go p.readICMP()
	}
	return p
}

// Close ends the readers.
func (p *netProber) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	if p.arp != nil {
		p.arp.Close()
	}
	if p.icmp != nil {
		p.icmp.Close()
	}
}

func (p *netProber) InUse(ctx context.Context, ip netip.Addr, local bool, client net.HardwareAddr) (bool, error) {
	if local {
		return p.probeARP(ctx, ip, client)
	}
	return p.probeEcho(ctx, ip)
}

// probeARP asks who has ip, twice, and waits for a reply from any MAC but
// the client's (a client that declines and then answers for the address
// itself proves nothing).
func (p *netProber) probeARP(ctx context.Context, ip netip.Addr, client net.HardwareAddr) (bool, error) {
	if p.arp == nil {
		return false, p.arpErr
	}
	w := &arpWaiter{ip: ip, client: client.String(), found: make(chan struct{})}
	p.mu.Lock()
	p.arpW[w] = true
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.arpW, w)
		p.mu.Unlock()
	}()
	req, err := arp.NewPacket(arp.OperationRequest, p.ifi.HardwareAddr, p.src, ethernet.Broadcast, ip)
	if err != nil {
		return false, err
	}
	if err := p.arp.WriteTo(req, ethernet.Broadcast); err != nil {
		return false, err
	}
	// One more request halfway, in case the first was lost.
	half := time.Second / 2
	if d, ok := ctx.Deadline(); ok {
		half = time.Until(d) / 2
	}
	again := time.NewTimer(half)
	defer again.Stop()
	for {
		select {
		case <-w.found:
			return true, nil
		case <-again.C:
			p.arp.WriteTo(req, ethernet.Broadcast)
		case <-ctx.Done():
			return false, nil
		}
	}
}

func (p *netProber) readARP() {
	for {
		reply, _, err := p.arp.Read()
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a frame it could not parse
		}
		if reply.Operation != arp.OperationReply {
			continue
		}
		from := reply.SenderHardwareAddr.String()
		p.mu.Lock()
		for w := range p.arpW {
			if w.ip == reply.SenderIP && w.client != from {
				w.once.Do(func() { close(w.found) })
			}
		}
		p.mu.Unlock()
	}
}

// probeEcho sends an ICMP echo request to ip and waits for its reply.
func (p *netProber) probeEcho(ctx context.Context, ip netip.Addr) (bool, error) {
	if p.icmp == nil {
		return false, p.icmpE
	}
	w := &echoWaiter{ip: ip, found: make(chan struct{})}
	p.mu.Lock()
	p.seq = (p.seq + 1) & 0xffff
	seq := p.seq
	p.echoW[seq] = w
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.echoW, seq)
		p.mu.Unlock()
	}()
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: os.Getpid() & 0xffff, Seq: seq, Data: []byte("mayu decline probe")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return false, err
	}
	var dst net.Addr = &net.IPAddr{IP: ip.AsSlice()}
	if p.icmpV == "udp4" {
		dst = &net.UDPAddr{IP: ip.AsSlice()}
	}
	if _, err := p.icmp.WriteTo(b, dst); err != nil {
		return false, err
	}
	select {
	case <-w.found:
		return true, nil
	case <-ctx.Done():
		return false, nil
	}
}

func (p *netProber) readICMP() {
	buf := make([]byte, 1500)
	id := os.Getpid() & 0xffff
	for {
		n, from, err := p.icmp.ReadFrom(buf)
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		var fromIP net.IP
		switch a := from.(type) {
		case *net.IPAddr:
			fromIP = a.IP
		case *net.UDPAddr:
			fromIP = a.IP
		}
		src, ok := netip.AddrFromSlice(fromIP.To4())
		if !ok {
			continue
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		e, ok := m.Body.(*icmp.Echo)
		// A ping socket rewrites the id; the sequence number is ours.
		if !ok || (p.icmpV != "udp4" && e.ID != id) {
			continue
		}
		p.mu.Lock()
		if w := p.echoW[e.Seq]; w != nil && w.ip == src {
			w.once.Do(func() { close(w.found) })
		}
		p.mu.Unlock()
	}
}
