package dhcp

import (
	"context"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mayu-boot/mayu/internal/netlab"
	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/election"
)

// collect reads the answers to xid on conn until d has passed.
func collect(t *testing.T, conn *net.UDPConn, xid dhcpv4.TransactionID, d time.Duration) []*dhcpv4.DHCPv4 {
	t.Helper()
	var got []*dhcpv4.DHCPv4
	buf := make([]byte, 1500)
	conn.SetReadDeadline(time.Now().Add(d))
	for {
		n, _, err := conn.ReadFromUDP(buf)
		if err != nil {
			return got
		}
		if resp, err := dhcpv4.FromBytes(buf[:n]); err == nil && resp.TransactionID == xid && resp.OpCode == dhcpv4.OpcodeBootReply {
			got = append(got, resp)
		}
	}
}

// proxyDHCP next to a real site DHCP server: dnsmasq in its own
// namespace hands out the addresses (plain DHCP, no boot options), mayu's
// leader in another runs a proxy pool, and a UEFI PXE client (EDK2's
// DISCOVER) on the same bridge gets its address from dnsmasq and its boot
// file from mayu; mayu stays out of the client's REQUEST to dnsmasq. Then
// the boot-server port: a REQUEST from the client's new address, port
// 4011 (EDK2), gets its ACK back on port 4011, and one from port 68
// (iPXE) gets the script URL on 68.
func TestProxyNextToDnsmasq(t *testing.T) {
	netlab.Require(t, "dnsmasq")
	seg := netlab.NewSegmentT(t)
	site := seg.AddHost("site", "10.99.0.2/24")
	mayu := seg.AddHost("mayu", "10.99.0.1/24")
	cli := seg.AddHost("cli")
	seg.Start(site, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--pid-file=",
		"--interface=eth0", "--bind-interfaces", "--dhcp-authoritative", "--log-dhcp",
		"--dhcp-range=10.99.0.100,10.99.0.150,255.255.255.0,1h",
		"--dhcp-leasefile="+filepath.Join(t.TempDir(), "leases"))

	srv := New(Options{Interface: "eth0", Port: 67, BootServerPort: BootServerPort,
		ServerIP: addr("10.99.0.1"), Advertise: addr("10.99.0.3"),
		Pools:  []config.Pool{{Subnet: netip.MustParsePrefix("10.99.0.0/24"), Mode: config.PoolProxy}},
		Policy: Policy{BIOS: "undionly.kpxe", EFI64: "ipxe.efi", ScriptURL: scriptURL}, Replica: "ns",
		Leases: testfakes.NewLeases(), Installed: testfakes.NewInstalled(), Log: testLogger(t)})
	var err error
	inNetns(t, mayu, func() { err = srv.Listen() })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	go srv.Lead(ctx, election.Fence{Key: "/mayu/election/ns", Rev: 1})
	waitFor(t, 5*time.Second, "server leads", srv.Leading)

	var conn *net.UDPConn
	inNetns(t, cli, func() { conn, err = server4.NewIPv4UDPConn("eth0", &net.UDPAddr{Port: dhcpv4.ClientPort}) })
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mac := hw(1)
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ServerPort}
	disc := discover(t, mac, "edk2-pxe-x64", dhcpv4.WithBroadcast(true))
	var siteOffer, proxyOffer *dhcpv4.DHCPv4
	for try := 0; try < 10 && (siteOffer == nil || proxyOffer == nil); try++ {
		if _, err := conn.WriteToUDP(disc.ToBytes(), bcast); err != nil {
			t.Fatal(err)
		}
		for _, o := range collect(t, conn, disc.TransactionID, time.Second) {
			switch {
			case o.MessageType() != dhcpv4.MessageTypeOffer:
			case o.ServerIdentifier().Equal(net.IPv4(10, 99, 0, 2)):
				siteOffer = o
			case o.ServerIdentifier().Equal(net.IPv4(10, 99, 0, 1)):
				proxyOffer = o
			}
		}
	}
	if siteOffer == nil || proxyOffer == nil {
		t.Fatalf("offers: dnsmasq %v, mayu %v", siteOffer, proxyOffer)
	}
	if siteOffer.YourIPAddr.IsUnspecified() || siteOffer.BootFileName != "" || siteOffer.BootFileNameOption() != "" {
		t.Fatalf("dnsmasq's offer is not plain DHCP: %s", siteOffer.Summary())
	}
	if !proxyOffer.YourIPAddr.IsUnspecified() || proxyOffer.BootFileName != "ipxe.efi" || proxyOffer.ClassIdentifier() != "PXEClient" ||
		!proxyOffer.ServerIPAddr.Equal(net.IPv4(10, 99, 0, 1)) || proxyOffer.Options.Has(dhcpv4.OptionIPAddressLeaseTime) {
		t.Fatalf("mayu's proxy offer: %s", proxyOffer.Summary())
	}

	req, err := dhcpv4.NewRequestFromOffer(siteOffer, append(firmware["edk2-pxe-x64"], dhcpv4.WithBroadcast(true))...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteToUDP(req.ToBytes(), bcast); err != nil {
		t.Fatal(err)
	}
	var ack *dhcpv4.DHCPv4
	for _, a := range collect(t, conn, req.TransactionID, 2*time.Second) {
		if a.ServerIdentifier().Equal(net.IPv4(10, 99, 0, 1)) {
			t.Fatalf("mayu answered the client's REQUEST to dnsmasq: %s", a.Summary())
		}
		if a.MessageType() == dhcpv4.MessageTypeAck {
			ack = a
		}
	}
	if ack == nil {
		t.Fatal("no ACK from dnsmasq")
	}
	conn.Close()
	ip := ack.YourIPAddr.To4()
	seg.MustIP("-n", cli, "addr", "add", ip.String()+"/24", "dev", "eth0")

	// What the client asks the boot server, from port, and what comes back
	// to that port.
	askBootServer := func(port int, kind string) *dhcpv4.DHCPv4 {
		t.Helper()
		var c *net.UDPConn
		inNetns(t, cli, func() { c, err = net.ListenUDP("udp4", &net.UDPAddr{IP: ip, Port: port}) })
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r := newPacket(t, append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
			dhcpv4.WithClientIP(ip)}, firmware[kind]...)...)
		to := &net.UDPAddr{IP: proxyOffer.ServerIPAddr, Port: BootServerPort} // EDK2 asks siaddr
		for try := 0; try < 3; try++ {
			if _, err := c.WriteToUDP(r.ToBytes(), to); err != nil {
				t.Fatal(err)
			}
			if got := collect(t, c, r.TransactionID, time.Second); len(got) > 0 {
				return got[0]
			}
		}
		t.Fatalf("no answer on port %d to a boot-server request from port %d", BootServerPort, port)
		return nil
	}
	efi := askBootServer(BootServerPort, "edk2-pxe-x64")
	if efi.MessageType() != dhcpv4.MessageTypeAck || efi.BootFileName != "ipxe.efi" || !efi.YourIPAddr.IsUnspecified() ||
		!efi.ServerIPAddr.Equal(net.IPv4(10, 99, 0, 3)) {
		t.Fatalf("boot-server ACK to EDK2: %s", efi.Summary())
	}
	ipxe := askBootServer(dhcpv4.ClientPort, "ipxe-efi")
	if ipxe.BootFileName != scriptURL || ipxe.Options.Has(optIPXE) {
		t.Fatalf("boot-server ACK to iPXE: %s", ipxe.Summary())
	}
	if got := testutil.ToFloat64(srv.metrics.bootServer.WithLabelValues("answered")); got != 2 {
		t.Fatalf("boot_server_requests_total{outcome=answered} = %v", got)
	}
	if got := testutil.ToFloat64(srv.metrics.proxyAnswered.WithLabelValues("4011", "pxe")); got != 1 {
		t.Fatalf("proxy_answers_total{port=4011,firmware=pxe} = %v", got)
	}
}
