package dhcpprobe

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// DefaultTimeout bounds one whole exchange (DISCOVER to ACK).
const DefaultTimeout = 250 * time.Millisecond

// Errors an exchange ends with besides I/O errors.
var (
	ErrTimeout = errors.New("timeout")
	ErrNak     = errors.New("nak")
)

// Config tunes a Prober. The zero value probes with DefaultTimeout, no
// vendor class, no option 93, no RELEASE and the BROADCAST flag clear,
// sending to 255.255.255.255:67.
type Config struct {
	// Timeout bounds one exchange, DISCOVER to ACK, including waiting.
	// Nothing is retransmitted: a lost packet makes the attempt fail with
	// "timeout", which is what a failover measurement wants to see.
	Timeout time.Duration
	// Vendor, if not empty, is sent as the vendor class identifier (60).
	Vendor string
	// Arch, if >= 0, is sent as the client system architecture (93).
	Arch int
	// Release sends a RELEASE after each ACK, so the pool never fills up.
	Release bool
	// Broadcast sets the BROADCAST flag, asking servers to broadcast their
	// replies rather than unicast them to a MAC the interface may filter.
	Broadcast bool
	// Server is where DISCOVER and REQUEST go; nil means 255.255.255.255:67.
	Server *net.UDPAddr
	// Renew makes every other exchange of a MAC that holds an address a
	// lone REQUEST for it (INIT-REBOOT: option 50, no server identifier,
	// broadcast), as a client that verifies its lease: the server must
	// ACK it from its lease table, or NAK it. A NAK makes the MAC's next
	// exchange a full one again.
	Renew bool
}

// Prober performs DHCP exchanges over one connection. It is not safe for
// concurrent use: exchanges must not overlap anyway.
type Prober struct {
	conn net.PacketConn
	cfg  Config
	mods []dhcpv4.Modifier
	buf  []byte
	held map[string]heldLease // by MAC, with Config.Renew
}

// heldLease is the address a MAC was last ACKed, and whether its next
// exchange renews it.
type heldLease struct {
	ip    net.IP
	renew bool
}

// NewProber returns a prober using conn, typically from ListenRaw; any
// net.PacketConn delivering DHCP payloads works (tests use UDP on
// loopback). The prober does not close conn.
func NewProber(conn net.PacketConn, cfg Config) *Prober {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Server == nil {
		cfg.Server = &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithBroadcast(cfg.Broadcast),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(1500)),
	}
	if cfg.Vendor != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier(cfg.Vendor)))
	}
	if cfg.Arch >= 0 && cfg.Arch <= 0xffff {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClientArch(iana.Arch(cfg.Arch))))
	}
	return &Prober{conn: conn, cfg: cfg, mods: mods, buf: make([]byte, 4096), held: map[string]heldLease{}}
}

// MAC is the index-th probe MAC, 02:00:00:00:<hi>:<lo>: locally
// administered, unicast, and distinct for indexes 0..65535.
func MAC(index int) net.HardwareAddr {
	return net.HardwareAddr{0x02, 0, 0, 0, byte(index >> 8), byte(index)}
}

// Exchange performs one DISCOVER→OFFER→REQUEST→ACK exchange for mac and
// reports it; it never takes longer than the configured Timeout (or ctx's
// deadline, if earlier). Failures are reported in the Result, with Reason
// "timeout", "nak" or the error text.
func (p *Prober) Exchange(ctx context.Context, mac net.HardwareAddr) Result {
	res := Result{Start: time.Now(), MAC: mac.String()}
	ctx, cancel := context.WithDeadline(ctx, res.Start.Add(p.cfg.Timeout))
	defer cancel()
	var ack *dhcpv4.DHCPv4
	var err error
	h, renew := p.held[res.MAC]
	if renew = renew && h.renew; renew {
		ack, err = p.verify(ctx, mac, h.ip)
	} else {
		ack, err = p.dora(ctx, mac)
	}
	res.End = time.Now()
	if p.cfg.Renew {
		switch {
		case err == nil:
			p.held[res.MAC] = heldLease{ip: ack.YourIPAddr, renew: !renew}
		case errors.Is(err, ErrNak):
			delete(p.held, res.MAC)
		}
	}
	if err != nil {
		res.Reason = Reason(err)
		return res
	}
	res.OK = true
	res.IP = ack.YourIPAddr.String()
	if sid := ack.ServerIdentifier(); sid != nil && !sid.IsUnspecified() {
		res.Server = sid.String()
	}
	if p.cfg.Release {
		// Best effort: the exchange itself succeeded, and a RELEASE that
		// the server missed only keeps the lease until it expires.
		_ = p.release(ack)
	}
	return res
}

// Reason maps an exchange error to the log's reason field.
func Reason(err error) string {
	switch {
	case errors.Is(err, ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return ReasonTimeout
	case errors.Is(err, ErrNak):
		return ReasonNak
	default:
		return SanitizeReason(err.Error())
	}
}

func (p *Prober) dora(ctx context.Context, mac net.HardwareAddr) (*dhcpv4.DHCPv4, error) {
	discover, err := dhcpv4.NewDiscovery(mac, p.mods...)
	if err != nil {
		return nil, fmt.Errorf("building DISCOVER: %w", err)
	}
	offer, err := p.sendAndWait(ctx, discover, func(m *dhcpv4.DHCPv4) bool {
		return m.MessageType() == dhcpv4.MessageTypeOffer
	})
	if err != nil {
		return nil, err
	}
	if offer.YourIPAddr.To4() == nil || offer.YourIPAddr.IsUnspecified() {
		return nil, errors.New("offer_without_address")
	}
	request, err := dhcpv4.NewRequestFromOffer(offer, p.mods...)
	if err != nil {
		return nil, fmt.Errorf("building REQUEST: %w", err)
	}
	sid := offer.ServerIdentifier()
	reply, err := p.sendAndWait(ctx, request, func(m *dhcpv4.DHCPv4) bool {
		t := m.MessageType()
		if t != dhcpv4.MessageTypeAck && t != dhcpv4.MessageTypeNak {
			return false
		}
		// Another server's answer to our broadcast REQUEST is not ours.
		return sid == nil || m.ServerIdentifier() == nil || m.ServerIdentifier().Equal(sid)
	})
	if err != nil {
		return nil, err
	}
	if reply.MessageType() == dhcpv4.MessageTypeNak {
		return nil, ErrNak
	}
	if reply.YourIPAddr.To4() == nil || reply.YourIPAddr.IsUnspecified() {
		return nil, errors.New("ack_without_address")
	}
	return reply, nil
}

// verify asks for ip again with a lone REQUEST (INIT-REBOOT).
func (p *Prober) verify(ctx context.Context, mac net.HardwareAddr, ip net.IP) (*dhcpv4.DHCPv4, error) {
	request, err := dhcpv4.New(append([]dhcpv4.Modifier{
		dhcpv4.WithHwAddr(mac),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)),
	}, p.mods...)...)
	if err != nil {
		return nil, fmt.Errorf("building REQUEST: %w", err)
	}
	reply, err := p.sendAndWait(ctx, request, func(m *dhcpv4.DHCPv4) bool {
		t := m.MessageType()
		return t == dhcpv4.MessageTypeAck || t == dhcpv4.MessageTypeNak
	})
	if err != nil {
		return nil, err
	}
	if reply.MessageType() == dhcpv4.MessageTypeNak {
		return nil, ErrNak
	}
	if reply.YourIPAddr.To4() == nil || reply.YourIPAddr.IsUnspecified() {
		return nil, errors.New("ack_without_address")
	}
	return reply, nil
}

// sendAndWait sends msg and returns the first reply with msg's transaction
// ID and client MAC that match accepts.
func (p *Prober) sendAndWait(ctx context.Context, msg *dhcpv4.DHCPv4, match func(*dhcpv4.DHCPv4) bool) (*dhcpv4.DHCPv4, error) {
	if _, err := p.conn.WriteTo(msg.ToBytes(), p.cfg.Server); err != nil {
		return nil, fmt.Errorf("send %s: %w", msg.MessageType(), err)
	}
	deadline, _ := ctx.Deadline()
	if err := p.conn.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	// Cancelling ctx interrupts the read by moving the deadline to now.
	stop := context.AfterFunc(ctx, func() { _ = p.conn.SetReadDeadline(time.Now()) })
	defer stop()
	for {
		n, _, err := p.conn.ReadFrom(p.buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
					return nil, ctx.Err()
				}
				return nil, ErrTimeout
			}
			return nil, fmt.Errorf("receive: %w", err)
		}
		m, err := dhcpv4.FromBytes(p.buf[:n])
		if err != nil ||
			m.OpCode != dhcpv4.OpcodeBootReply ||
			m.TransactionID != msg.TransactionID ||
			!bytes.Equal(m.ClientHWAddr, msg.ClientHWAddr) ||
			!match(m) {
			continue // someone else's traffic, or a late reply
		}
		return m, nil
	}
}

// release sends a RELEASE for ack's lease to the server that granted it.
func (p *Prober) release(ack *dhcpv4.DHCPv4) error {
	rel, err := dhcpv4.NewReleaseFromACK(ack)
	if err != nil {
		return err
	}
	dst := p.cfg.Server
	if sid := ack.ServerIdentifier(); sid != nil && !sid.IsUnspecified() && dst.IP.Equal(net.IPv4bcast) {
		dst = &net.UDPAddr{IP: sid, Port: dhcpv4.ServerPort}
	}
	_, err = p.conn.WriteTo(rel.ToBytes(), dst)
	return err
}
