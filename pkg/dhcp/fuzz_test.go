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

// FuzzProxy runs any datagram through a proxy pool's two paths: port 67
// (as FuzzHandle, giaddr forced to loopback) and the boot-server port
// (4011), as if sent from its own ciaddr. It never panics, and an answer
// is a BOOTREPLY to the same transaction with no address in it, no lease
// time and no option 175.176; nothing is leased.
func FuzzProxy(f *testing.F) {
	s, relay, leases := fakeProxyServer(f, Options{Limits: config.DHCP{NewClientsPerSecond: 1e9, NewClientsBurst: 1 << 30}})
	for _, kind := range []string{"bios-pxe", "edk2-pxe-x64", "http-x64", "ipxe-efi", "plain"} {
		for _, typ := range []dhcpv4.MessageType{dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeRequest} {
			req, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(net.HardwareAddr{0x52, 0x54, 0, 0, 0, byte(typ)}),
				dhcpv4.WithMessageType(typ), dhcpv4.WithClientIP(net.IPv4(127, 0, 0, 9)),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(loopback))}, firmware[kind]...)...)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(req.ToBytes())
		}
	}
	f.Add(make([]byte, 240))
	// A proxy request with any opcode but BOOTREQUEST (CI's fuzzing found
	// the boot-server path answering opcode 255) gets no answer.
	for _, op := range []dhcpv4.OpcodeType{dhcpv4.OpcodeBootReply, 255} {
		req, err := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(net.HardwareAddr{0x52, 0x54, 0, 0, 0, 3}),
			dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest), dhcpv4.WithClientIP(net.IPv4(127, 0, 0, 9)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(loopback))}, firmware["bios-pxe"]...)...)
		if err != nil {
			f.Fatal(err)
		}
		req.OpCode = op
		f.Add(req.ToBytes())
	}
	buf := make([]byte, 4096)
	check := func(t *testing.T, req, resp *dhcpv4.DHCPv4, port string) {
		t.Helper()
		if resp.OpCode != dhcpv4.OpcodeBootReply || resp.TransactionID != req.TransactionID {
			t.Fatalf("%s: answer %s to %s", port, resp.Summary(), req.Summary())
		}
		if !resp.YourIPAddr.IsUnspecified() || resp.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || resp.Options.Has(optIPXE) {
			t.Fatalf("%s: a proxy answer with an address, a lease time or 175: %s", port, resp.Summary())
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		// The boot-server path, from the packet's own ciaddr, past the
		// same check handleBootServer makes.
		if req, err := parseRequest(data); err == nil && req.ClientIPAddr.To4() != nil {
			x := &exchange{ctx: context.Background(), log: s.o.Log, req: req, mac: req.ClientHWAddr.String(), now: time.Now(),
				peer: &net.UDPAddr{IP: req.ClientIPAddr, Port: BootServerPort}}
			if resp, _, _ := s.bootServer(x, s.term.Load()); resp != nil {
				check(t, req, resp, "4011")
			}
		}
		if len(data) >= 28 {
			data = append([]byte(nil), data...)
			copy(data[24:28], loopback.To4())
		}
		s.handle(context.Background(), packet{data: data, peer: relay.LocalAddr().(*net.UDPAddr)})
		relay.SetReadDeadline(time.Now().Add(time.Millisecond))
		n, _, err := relay.ReadFromUDP(buf)
		if err != nil {
			return
		}
		req, perr := dhcpv4.FromBytes(data)
		if perr != nil {
			t.Fatalf("an answer to a packet that does not parse: %x", data)
		}
		resp, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			t.Fatalf("undecodable answer to %s: %v", req.Summary(), err)
		}
		check(t, req, resp, "67")
		if leases.Puts != 0 {
			t.Fatalf("a lease written in a proxy pool, for %s", req.Summary())
		}
	})
}
