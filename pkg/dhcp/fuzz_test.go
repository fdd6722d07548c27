package dhcp

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/config"
)

// FuzzHandle runs any datagram through the leader's whole request path
// (parse, classify, budget, pool, lease store, answer), as a hostile host
// on the boot network could send it. It never panics, and an answer is a
// BOOTREPLY to the same transaction whose address, if any, is in the pool.
//
// giaddr is forced to loopback before the packet is handled, so that
// every answer goes to the test's relay socket and never to an address
// the fuzzer made up.
func FuzzHandle(f *testing.F) {
	s, relay, _ := fakeServerWith(f, Options{Leases: testfakes.NewLeases(), Installed: &testfakes.Installed{},
		Limits: config.DHCP{NewClientsPerSecond: 1e9, NewClientsBurst: 1 << 30}})
	pool := benchPool()
	for _, typ := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest,
		dhcpv4.MessageTypeDecline, dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeInform} {
		req, err := dhcpv4.New(dhcpv4.WithHwAddr(net.HardwareAddr{0x52, 0x54, 0, 0, 0, byte(typ)}), dhcpv4.WithMessageType(typ),
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(127, 1, 0, 9))),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(loopback)))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(req.ToBytes())
	}
	f.Add(make([]byte, 240))
	f.Add([]byte{})
	buf := make([]byte, 4096)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) >= 28 {
			data = append([]byte(nil), data...)
			copy(data[24:28], loopback.To4())
		}
		s.handle(context.Background(), packet{data: data, peer: relay.LocalAddr().(*net.UDPAddr)})
		// handle answers before it returns: anything for this packet is
		// in the relay's socket now (loopback queues a datagram before
		// the send returns), so a short wait is enough.
		relay.SetReadDeadline(time.Now().Add(time.Millisecond))
		n, _, err := relay.ReadFromUDP(buf)
		if err != nil {
			return
		}
		req, err := dhcpv4.FromBytes(data)
		if err != nil {
			t.Fatalf("an answer to a packet that does not parse: %x", data)
		}
		resp, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			t.Fatalf("undecodable answer to %s: %v", req.Summary(), err)
		}
		if resp.OpCode != dhcpv4.OpcodeBootReply || resp.TransactionID != req.TransactionID {
			t.Fatalf("answer %s to %s", resp.Summary(), req.Summary())
		}
		if ip := resp.YourIPAddr; !ip.IsUnspecified() && !inRange(pool, ip) {
			t.Fatalf("address %s outside the pool, for %s", ip, req.Summary())
		}
	})
}
