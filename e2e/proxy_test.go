package e2e

import (
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/mayu-boot/mayu/internal/netlab"
)

// proxyExchange sends req from conn to to and returns the first answer to
// its transaction, nil if none came within a second (three tries).
func proxyExchange(t *testing.T, conn *net.UDPConn, req *dhcpv4.DHCPv4, to *net.UDPAddr) *dhcpv4.DHCPv4 {
	t.Helper()
	buf := make([]byte, 1500)
	for try := 0; try < 3; try++ {
		if _, err := conn.WriteToUDP(req.ToBytes(), to); err != nil {
			t.Fatal(err)
		}
		conn.SetReadDeadline(time.Now().Add(time.Second))
		for {
			n, _, err := conn.ReadFromUDP(buf)
			if err != nil {
				break
			}
			if resp, err := dhcpv4.FromBytes(buf[:n]); err == nil && resp.TransactionID == req.TransactionID && resp.OpCode == dhcpv4.OpcodeBootReply {
				return resp
			}
		}
	}
	return nil
}

// The binary with its pools in proxy mode (cluster.pools[].mode: proxy):
// the leader answers a UEFI PXE DISCOVER on port 67 with boot options and
// no address, opens the boot-server port (node.ports.proxy_dhcp, 4011) and
// answers there the REQUEST EDK2 sends from its address, port 4011.
func TestProxyModeBinary(t *testing.T) {
	lab := netlab.NewT(t, "10.99.0.1/24")
	lab.MustIP("-n", lab.Cli, "addr", "add", "10.99.0.120/24", "dev", "cli0") // as if from the site's server
	r := startReplica(t, lab, lab.Srv, replicaOptions{proxy: true})
	r.waitLog(t, "answering DHCP", 30*time.Second)
	mac := net.HardwareAddr{0x52, 0x54, 0, 0, 0x14, 1}
	pxe := []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64))}

	var conn *net.UDPConn
	var err error
	if e := netlab.InNetns(lab.Cli, func() { conn, err = server4.NewIPv4UDPConn("cli0", &net.UDPAddr{Port: dhcpv4.ClientPort}) }); e != nil || err != nil {
		t.Fatalf("client socket: %v %v", e, err)
	}
	disc, _ := dhcpv4.NewDiscovery(mac, append(pxe, dhcpv4.WithBroadcast(true))...)
	offer := proxyExchange(t, conn, disc, &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort})
	conn.Close()
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer || !offer.YourIPAddr.IsUnspecified() ||
		offer.BootFileName != "ipxe.efi" || offer.ClassIdentifier() != "PXEClient" || offer.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
		t.Fatalf("proxy offer: %v", offer)
	}

	if e := netlab.InNetns(lab.Cli, func() { conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 99, 0, 120), Port: 4011}) }); e != nil || err != nil {
		t.Fatalf("client socket: %v %v", e, err)
	}
	defer conn.Close()
	req, _ := dhcpv4.New(append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(net.IPv4(10, 99, 0, 120))}, pxe...)...)
	ack := proxyExchange(t, conn, req, &net.UDPAddr{IP: offer.ServerIPAddr, Port: 4011})
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.BootFileName != "ipxe.efi" || !ack.YourIPAddr.IsUnspecified() ||
		!ack.ServerIPAddr.Equal(net.IPv4(10, 99, 0, 1)) {
		t.Fatalf("boot-server ACK: %v", ack)
	}
}
