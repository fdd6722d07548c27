package dhcp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync/atomic"
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

// netProber probes from the DHCP interface: ARP requests from its own
// address on the local segment, ICMP echo across relays.
type netProber struct {
	iface string
	src   netip.Addr // the server's address, the ARP sender
}

func (p netProber) InUse(ctx context.Context, ip netip.Addr, local bool, client net.HardwareAddr) (bool, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(time.Second)
	}
	if local {
		return p.arp(ctx, deadline, ip, client)
	}
	return p.icmp(ctx, deadline, ip)
}

// arp asks who has ip, twice, and waits for a reply from any MAC but the
// client's (a client that declines and then answers for the address
// itself proves nothing).
func (p netProber) arp(ctx context.Context, deadline time.Time, ip netip.Addr, client net.HardwareAddr) (bool, error) {
	ifi, err := net.InterfaceByName(p.iface)
	if err != nil {
		return false, err
	}
	c, err := arp.Dial(ifi)
	if err != nil {
		return false, fmt.Errorf("ARP socket on %s: %w", p.iface, err)
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	req, err := arp.NewPacket(arp.OperationRequest, ifi.HardwareAddr, p.src, ethernet.Broadcast, ip)
	if err != nil {
		return false, err
	}
	if err := c.WriteTo(req, ethernet.Broadcast); err != nil {
		return false, err
	}
	// One more request halfway, in case the first was lost.
	again := time.AfterFunc(time.Until(deadline)/2, func() { c.WriteTo(req, ethernet.Broadcast) })
	defer again.Stop()
	c.SetReadDeadline(deadline)
	for {
		reply, _, err := c.Read()
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return false, nil
			}
			return false, err
		}
		if reply.Operation == arp.OperationReply && reply.SenderIP == ip &&
			reply.SenderHardwareAddr.String() != client.String() {
			return true, nil
		}
	}
}

var echoSeq atomic.Uint32

// icmp sends an echo request to ip and waits for its reply: from a raw
// socket (mayu runs with CAP_NET_RAW for DHCP), else from an unprivileged
// ping socket where net.ipv4.ping_group_range allows one.
func (p netProber) icmp(ctx context.Context, deadline time.Time, ip netip.Addr) (bool, error) {
	network, dst := "ip4:icmp", net.Addr(&net.IPAddr{IP: ip.AsSlice()})
	c, err := icmp.ListenPacket(network, "0.0.0.0")
	if err != nil {
		network, dst = "udp4", &net.UDPAddr{IP: ip.AsSlice()}
		if c, err = icmp.ListenPacket(network, "0.0.0.0"); err != nil {
			return false, fmt.Errorf("ICMP socket: %w", err)
		}
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetReadDeadline(time.Now()) })
	defer stop()
	seq := int(echoSeq.Add(1) & 0xffff)
	id := os.Getpid() & 0xffff
	msg := icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: id, Seq: seq, Data: []byte("mayu decline probe")}}
	b, err := msg.Marshal(nil)
	if err != nil {
		return false, err
	}
	if _, err := c.WriteTo(b, dst); err != nil {
		return false, err
	}
	c.SetReadDeadline(deadline)
	buf := make([]byte, 1500)
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return false, nil
			}
			return false, err
		}
		var fromIP net.IP
		switch a := from.(type) {
		case *net.IPAddr:
			fromIP = a.IP
		case *net.UDPAddr:
			fromIP = a.IP
		}
		if !fromIP.Equal(ip.AsSlice()) {
			continue
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		// A ping socket rewrites the id; the sequence number is ours.
		if e, ok := m.Body.(*icmp.Echo); ok && e.Seq == seq && (network == "udp4" || e.ID == id) {
			return true, nil
		}
	}
}
