package dhcp

import (
	"encoding/binary"
	"errors"
	"net"
	"syscall"
	"unsafe"
)

// arpreq mirrors struct arpreq of <net/if_arp.h>.
type arpreq struct {
	pa      [16]byte // struct sockaddr_in: the protocol address
	ha      [16]byte // struct sockaddr: the hardware address
	flags   int32
	netmask [16]byte
	dev     [16]byte
}

const (
	siocsarp    = 0x8955
	atfCom      = 0x02 // completed entry
	arphrdEther = 1
)

// setARP adds a neighbour entry ip → mac on the DHCP interface, so that a
// reply can be unicast to a client that has no address yet and so cannot
// answer ARP (what dnsmasq and ISC dhcpd do). It needs CAP_NET_ADMIN; the
// caller broadcasts if it fails.
func (s *Server) setARP(ip net.IP, mac net.HardwareAddr) error {
	ip4 := ip.To4()
	if ip4 == nil || len(mac) != 6 || s.o.Interface == "" || len(s.o.Interface) >= 16 {
		return errors.New("cannot add an ARP entry for this client")
	}
	var req arpreq
	binary.NativeEndian.PutUint16(req.pa[0:2], syscall.AF_INET)
	copy(req.pa[4:8], ip4)
	binary.NativeEndian.PutUint16(req.ha[0:2], arphrdEther)
	copy(req.ha[2:8], mac)
	req.flags = atfCom
	copy(req.dev[:], s.o.Interface)
	raw, err := s.conn.SyscallConn()
	if err != nil {
		return err
	}
	var ioErr error
	err = raw.Control(func(fd uintptr) {
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, fd, siocsarp, uintptr(unsafe.Pointer(&req))); e != 0 {
			ioErr = e
		}
	})
	if err != nil {
		return err
	}
	return ioErr
}
