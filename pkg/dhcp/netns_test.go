package dhcp

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/internal/netlab"
	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/state"
)

// inNetns is netlab.InNetns, failing the test if ns cannot be joined.
func inNetns(t *testing.T, ns string, f func()) {
	t.Helper()
	if err := netlab.InNetns(ns, f); err != nil {
		t.Fatalf("netns %s: %v", ns, err)
	}
}

// The probes with real packets between two namespaces: the server's side
// (srv0 10.99.0.1/24 and 10.98.0.1/16) asks; the other side, a host that
// owns 10.99.0.120 on the segment and 10.98.0.50 behind the "relay",
// answers. Nobody has 10.99.0.121 or 10.98.0.51.
func TestProbesFindAddressesInUse(t *testing.T) {
	lab := netlab.NewT(t, "10.99.0.1/24")
	lab.MustIP("-n", lab.Srv, "addr", "add", "10.98.0.1/16", "dev", "srv0")
	lab.MustIP("-n", lab.Cli, "addr", "add", "10.99.0.120/24", "dev", "cli0")
	lab.MustIP("-n", lab.Cli, "addr", "add", "10.98.0.50/16", "dev", "cli0")
	var ownerMAC net.HardwareAddr
	var err error
	inNetns(t, lab.Cli, func() {
		if ifi, e := net.InterfaceByName("cli0"); e == nil {
			ownerMAC = ifi.HardwareAddr
		} else {
			err = e
		}
	})
	if err != nil || ownerMAC == nil {
		t.Fatalf("cli0: %v", err)
	}
	stranger := net.HardwareAddr{0x52, 0x54, 0x00, 0x12, 0x34, 0x56}
	var p *netProber
	inNetns(t, lab.Srv, func() { p = openProber("srv0", netip.MustParseAddr("10.99.0.1")) })
	defer p.Close()
	if p.arpErr != nil || p.icmpE != nil {
		t.Fatalf("probe sockets: %v, %v", p.arpErr, p.icmpE)
	}
	for _, tc := range []struct {
		name   string
		ip     string
		local  bool
		client net.HardwareAddr
		want   bool
	}{
		{"ARP: another host owns it", "10.99.0.120", true, stranger, true},
		{"ARP: nobody has it", "10.99.0.121", true, stranger, false},
		// The declining client answering for the address itself
		// proves nothing.
		{"ARP: only the declining client answers", "10.99.0.120", true, ownerMAC, false},
		{"ICMP: a host behind the relay owns it", "10.98.0.50", false, stranger, true},
		{"ICMP: nobody has it", "10.98.0.51", false, stranger, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got bool
			var perr error
			start := time.Now()
			// From any thread: the sockets are in the namespace.
			ctx, cancel := context.WithTimeout(context.Background(), 700*time.Millisecond)
			defer cancel()
			got, perr = p.InUse(ctx, netip.MustParseAddr(tc.ip), tc.local, tc.client)
			if perr != nil {
				t.Fatal(perr)
			}
			if got != tc.want {
				t.Fatalf("InUse(%s) = %v, want %v", tc.ip, got, tc.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("the probe took %s, past its deadline", d)
			}
		})
	}
}

// The pool-draining flood with a real client: perfdhcp in its own
// namespace, as one relay (giaddr 10.98.0.2), brings 103 new clients at
// once to a pool of 51. With a budget of 10 (and 1/s), at most a few more
// than 10 get an address; before the budget every address went.
func TestFloodFromPerfdhcpKeepsThePool(t *testing.T) {
	netlab.Require(t, "perfdhcp")
	lab := netlab.NewT(t, "10.99.0.1/24")
	lab.MustIP("-n", lab.Srv, "addr", "add", "10.98.0.1/24", "dev", "srv0")
	lab.MustIP("-n", lab.Cli, "addr", "add", "10.98.0.2/24", "dev", "cli0")
	cli := etcdtest.Start(t)
	pool := config.Pool{Subnet: netip.MustParsePrefix("10.98.0.0/24"),
		Range:     config.Range{Start: addr("10.98.0.10"), End: addr("10.98.0.60")},
		LeaseTime: time.Hour}
	o := Options{Interface: "srv0", Port: 67, ServerIP: addr("10.99.0.1"), Advertise: addr("10.99.0.1"),
		Pools: []config.Pool{pool}, Policy: Policy{BIOS: "undionly.kpxe", ScriptURL: scriptURL}, Replica: "ns",
		Leases: lease.NewStore(cli, state.Keys{Prefix: prefix}, 3*time.Second),
		Limits: config.DHCP{NewClientsPerSecond: 1, NewClientsBurst: 10, Relays: []netip.Addr{addr("10.98.0.2")}},
		Log:    testLogger(t)}
	srv := New(o)
	var err error
	inNetns(t, lab.Srv, func() { err = srv.Listen() }) // the socket stays in the namespace
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	campaign(t, cli, srv, "ns")
	waitFor(t, 15*time.Second, "server leads", srv.Leading)

	out, _ := lab.Run(60*time.Second, lab.Cli, "perfdhcp", "-4", "-l", "10.98.0.2", "-r", "200", "-R", "103", "-n", "103",
		"-p", "4", "-o", "93,0000", "-o", "60,505845436c69656e74", "10.99.0.1")
	t.Logf("perfdhcp:\n%s", out)
	acks := leaseCount(t, cli)
	_, free := srv.term.Load().pools[0].stats(time.Now())
	t.Logf("%d leases in etcd, %d of 51 addresses free", acks, free)
	if acks > 10+6 || acks < 1 {
		t.Fatalf("%d leases from a flood of 103 new clients with a budget of 10 (+1/s)", acks)
	}
	if got := counter(t, srv.metrics.ignored, "new_client_budget"); got < 50 {
		t.Fatalf("new_client_budget = %v", got)
	}
}

// nsRelay is a relay agent in the client namespace: a UDP socket on
// 10.99.0.250 that forwards the test's packets to the server with that
// giaddr and reads the answers.
type nsRelay struct {
	t    *testing.T
	conn *net.UDPConn
	to   *net.UDPAddr
}

func (r *nsRelay) exchange(req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	r.t.Helper()
	req.GatewayIPAddr, req.HopCount = net.IPv4(10, 99, 0, 250).To4(), 1
	if _, err := r.conn.WriteToUDP(req.ToBytes(), r.to); err != nil {
		r.t.Fatal(err)
	}
	buf := make([]byte, 1500)
	r.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	for {
		n, _, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			return nil
		}
		if resp, err := dhcpv4.FromBytes(buf[:n]); err == nil && resp.TransactionID == req.TransactionID {
			return resp
		}
	}
}

// The whole DECLINE path with real packets: the server in its namespace,
// a relay and a host owning 10.99.0.120 in the other. A decline of .120
// quarantines it (the ARP probe hears the owner); a decline of an address
// nobody has gives it back to the pool.
func TestDeclineProbedOnTheSegment(t *testing.T) {
	lab := netlab.NewT(t, "10.99.0.1/24")
	lab.MustIP("-n", lab.Cli, "addr", "add", "10.99.0.250/24", "dev", "cli0")
	lab.MustIP("-n", lab.Cli, "addr", "add", "10.99.0.120/24", "dev", "cli0") // the owner
	pool := config.Pool{Subnet: netip.MustParsePrefix("10.99.0.0/24"),
		Range: config.Range{Start: addr("10.99.0.100"), End: addr("10.99.0.199")}, LeaseTime: time.Hour}
	srv := New(Options{Interface: "srv0", Port: 67, ServerIP: addr("10.99.0.1"), Advertise: addr("10.99.0.1"),
		Pools: []config.Pool{pool}, Replica: "ns", Leases: testfakes.NewLeases(),
		Limits: config.DHCP{DeclineProbeTimeout: 500 * time.Millisecond}, Log: testLogger(t)})
	var err error
	inNetns(t, lab.Srv, func() { err = srv.Listen() })
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
	inNetns(t, lab.Cli, func() { conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(10, 99, 0, 250)}) })
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := &nsRelay{t: t, conn: conn, to: &net.UDPAddr{IP: net.IPv4(10, 99, 0, 1), Port: 67}}
	sid := net.IPv4(10, 99, 0, 1).To4()

	lease := func(mac net.HardwareAddr, want string) {
		t.Helper()
		d, _ := dhcpv4.NewDiscovery(mac, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(want))))
		offer := r.exchange(d)
		if offer == nil || offer.YourIPAddr.String() != want {
			t.Fatalf("offer to %s: %v, want %s", mac, offer, want)
		}
		req, _ := dhcpv4.NewRequestFromOffer(offer)
		if ack := r.exchange(req); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
			t.Fatalf("ack to %s: %v", mac, ack)
		}
	}
	decline := func(mac net.HardwareAddr, ip string) {
		t.Helper()
		dec, _ := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(ip))), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(sid)))
		r.exchange(dec) // no answer
	}
	offeredTo := func(mac net.HardwareAddr, ip string) string {
		t.Helper()
		d, _ := dhcpv4.NewDiscovery(mac, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.ParseIP(ip))))
		offer := r.exchange(d)
		if offer == nil {
			t.Fatalf("no offer to %s", mac)
		}
		return offer.YourIPAddr.String()
	}

	lease(hw(1), "10.99.0.120")
	decline(hw(1), "10.99.0.120")
	waitFor(t, 5*time.Second, "probe of .120", func() bool { return counter(t, srv.metrics.declines, "quarantined") == 1 })
	if got := offeredTo(hw(2), "10.99.0.120"); got == "10.99.0.120" {
		t.Fatal("an address another host answers ARP on was offered again")
	}

	lease(hw(3), "10.99.0.121")
	decline(hw(3), "10.99.0.121")
	waitFor(t, 5*time.Second, "probe of .121", func() bool { return counter(t, srv.metrics.declines, "unconfirmed") == 1 })
	if got := offeredTo(hw(4), "10.99.0.121"); got != "10.99.0.121" {
		t.Fatalf("an address nobody has was kept from the pool: offered %s", got)
	}
}
