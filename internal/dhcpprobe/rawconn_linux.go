package dhcpprobe

import (
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"syscall"
	"time"
)

// ListenRaw opens a packet socket on iface that sends DHCP client packets
// (UDP from 0.0.0.0:68) as Ethernet broadcasts and receives the UDP
// payloads addressed to port 68, whatever their IP and MAC destination, so
// it works on an unconfigured interface and for MACs other than the
// interface's own (frames to those arrive on veth; a physical NIC may need
// promiscuous mode or Config.Broadcast). It needs CAP_NET_RAW.
//
// This does what nclient4.NewRawUDPConn does, with the standard library
// only (nclient4 needs github.com/mdlayher/packet).
func ListenRaw(iface string) (net.PacketConn, error) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, err
	}
	proto := htons(syscall.ETH_P_IP)
	fd, err := syscall.Socket(syscall.AF_PACKET, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, int(proto))
	if err != nil {
		return nil, os.NewSyscallError("socket(AF_PACKET)", err)
	}
	// Keep only unfragmented UDP to port 68 before it is queued.
	if err := syscall.AttachLsf(fd, dhcpClientFilter); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("setsockopt(SO_ATTACH_FILTER)", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrLinklayer{Protocol: proto, Ifindex: ifi.Index}); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	f := os.NewFile(uintptr(fd), "packet:"+iface) // non-blocking: uses the poller
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &rawConn{f: f, rc: rc, ifindex: ifi.Index}, nil
}

// dhcpClientFilter is a classic BPF program over the IPv4 header (SOCK_DGRAM
// sockets see no link header): accept UDP, not a non-first fragment, with
// destination port 68.
var dhcpClientFilter = []syscall.SockFilter{
	*syscall.LsfStmt(syscall.BPF_LD|syscall.BPF_B|syscall.BPF_ABS, 9),                 // A = protocol
	*syscall.LsfJump(syscall.BPF_JMP|syscall.BPF_JEQ|syscall.BPF_K, 17, 0, 6),         // UDP?
	*syscall.LsfStmt(syscall.BPF_LD|syscall.BPF_H|syscall.BPF_ABS, 6),                 // A = flags|fragment offset
	*syscall.LsfJump(syscall.BPF_JMP|syscall.BPF_JSET|syscall.BPF_K, 0x1fff, 4, 0),    // fragment offset != 0?
	*syscall.LsfStmt(syscall.BPF_LDX|syscall.BPF_B|syscall.BPF_MSH, 0),                // X = IP header length
	*syscall.LsfStmt(syscall.BPF_LD|syscall.BPF_H|syscall.BPF_IND, 2),                 // A = UDP destination port
	*syscall.LsfJump(syscall.BPF_JMP|syscall.BPF_JEQ|syscall.BPF_K, clientPort, 0, 1), // port 68?
	*syscall.LsfStmt(syscall.BPF_RET|syscall.BPF_K, 0xffff),                           // accept
	*syscall.LsfStmt(syscall.BPF_RET|syscall.BPF_K, 0),                                // drop
}

const (
	clientPort     = 68
	packetOutgoing = 4 // PACKET_OUTGOING: a copy of a frame this host sent
)

func htons(v uint16) uint16 { return v<<8 | v>>8 }

type rawConn struct {
	f       *os.File
	rc      syscall.RawConn
	ifindex int
	rbuf    [1 << 16]byte
}

// ReadFrom returns the UDP payload of the next IPv4 packet to port 68 and
// its source address.
func (c *rawConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		var (
			n    int
			from syscall.Sockaddr
			err  error
		)
		rerr := c.rc.Read(func(fd uintptr) bool {
			n, from, err = syscall.Recvfrom(int(fd), c.rbuf[:], 0)
			return err != syscall.EAGAIN
		})
		if rerr != nil {
			return 0, nil, rerr
		}
		if err != nil {
			return 0, nil, os.NewSyscallError("recvfrom", err)
		}
		if ll, ok := from.(*syscall.SockaddrLinklayer); ok && ll.Pkttype == packetOutgoing {
			continue
		}
		payload, src, ok := parseUDP4(c.rbuf[:n], clientPort)
		if !ok {
			continue
		}
		return copy(b, payload), src, nil
	}
}

// WriteTo sends b as a UDP datagram from 0.0.0.0:68 to addr (a
// *net.UDPAddr), in an Ethernet broadcast frame.
func (c *rawConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	dst, ok := addr.(*net.UDPAddr)
	if !ok || dst.IP.To4() == nil {
		return 0, fmt.Errorf("dhcpprobe: raw conn needs an IPv4 *net.UDPAddr, got %v", addr)
	}
	pkt := buildUDP4(b, net.IPv4zero, clientPort, dst.IP, dst.Port)
	to := &syscall.SockaddrLinklayer{
		Protocol: htons(syscall.ETH_P_IP),
		Ifindex:  c.ifindex,
		Halen:    6,
		Addr:     [8]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
	}
	var err error
	werr := c.rc.Write(func(fd uintptr) bool {
		err = syscall.Sendto(int(fd), pkt, 0, to)
		return err != syscall.EAGAIN
	})
	if werr != nil {
		return 0, werr
	}
	if err != nil {
		return 0, os.NewSyscallError("sendto", err)
	}
	return len(b), nil
}

func (c *rawConn) Close() error                       { return c.f.Close() }
func (c *rawConn) LocalAddr() net.Addr                { return &net.UDPAddr{IP: net.IPv4zero, Port: clientPort} }
func (c *rawConn) SetDeadline(t time.Time) error      { return c.f.SetDeadline(t) }
func (c *rawConn) SetReadDeadline(t time.Time) error  { return c.f.SetReadDeadline(t) }
func (c *rawConn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }

// buildUDP4 returns an IPv4 packet carrying payload in a UDP datagram.
func buildUDP4(payload []byte, src net.IP, sport int, dst net.IP, dport int) []byte {
	const ihl, udpLen = 20, 8
	pkt := make([]byte, ihl+udpLen+len(payload))
	ip := pkt[:ihl]
	ip[0] = 0x45 // version 4, 5 words
	binary.BigEndian.PutUint16(ip[2:], uint16(len(pkt)))
	ip[8] = 64 // TTL
	ip[9] = syscall.IPPROTO_UDP
	copy(ip[12:16], src.To4())
	copy(ip[16:20], dst.To4())
	binary.BigEndian.PutUint16(ip[10:], ^checksum(0, ip))

	udp := pkt[ihl:]
	binary.BigEndian.PutUint16(udp[0:], uint16(sport))
	binary.BigEndian.PutUint16(udp[2:], uint16(dport))
	binary.BigEndian.PutUint16(udp[4:], uint16(len(udp)))
	copy(udp[udpLen:], payload)
	// Pseudo header: addresses, protocol, UDP length.
	sum := checksum(0, ip[12:20])
	sum = checksum(sum, []byte{0, syscall.IPPROTO_UDP, udp[4], udp[5]})
	cs := ^checksum(sum, udp)
	if cs == 0 {
		cs = 0xffff // 0 means "no checksum"
	}
	binary.BigEndian.PutUint16(udp[6:], cs)
	return pkt
}

// checksum adds b to the ones'-complement sum (RFC 1071) and folds it.
func checksum(sum uint16, b []byte) uint16 {
	s := uint32(sum)
	for ; len(b) >= 2; b = b[2:] {
		s += uint32(b[0])<<8 | uint32(b[1])
	}
	if len(b) == 1 {
		s += uint32(b[0]) << 8
	}
	for s > 0xffff {
		s = s>>16 + s&0xffff
	}
	return uint16(s)
}

// parseUDP4 returns the UDP payload of an IPv4 packet if it is an
// unfragmented UDP datagram to port dport.
func parseUDP4(pkt []byte, dport int) (payload []byte, src *net.UDPAddr, ok bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return nil, nil, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	total := int(binary.BigEndian.Uint16(pkt[2:]))
	if ihl < 20 || total < ihl+8 || total > len(pkt) {
		return nil, nil, false
	}
	if pkt[9] != syscall.IPPROTO_UDP || binary.BigEndian.Uint16(pkt[6:])&0x3fff != 0 {
		return nil, nil, false // not UDP, or a fragment (MF set or offset != 0)
	}
	udp := pkt[ihl:total]
	if int(binary.BigEndian.Uint16(udp[2:])) != dport {
		return nil, nil, false
	}
	ulen := int(binary.BigEndian.Uint16(udp[4:]))
	if ulen < 8 || ulen > len(udp) {
		return nil, nil, false
	}
	src = &net.UDPAddr{
		IP:   net.IPv4(pkt[12], pkt[13], pkt[14], pkt[15]),
		Port: int(binary.BigEndian.Uint16(udp[0:])),
	}
	return udp[8:ulen], src, true
}
