//go:build !linux

package dhcpprobe

import (
	"errors"
	"net"
)

// ListenRaw is only implemented on Linux (AF_PACKET).
func ListenRaw(iface string) (net.PacketConn, error) {
	return nil, errors.New("dhcpprobe: raw DHCP client sockets need Linux")
}
