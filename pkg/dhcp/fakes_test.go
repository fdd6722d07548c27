package dhcp

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/election"
)

// fakeServer is a leading server whose leases and installed MACs are
// in-memory fakes; its answers go to the returned socket (the relay).
func fakeServer(t testing.TB, leases LeaseStore, installed InstalledMACs) (*Server, *net.UDPConn, election.Fence) {
	t.Helper()
	return fakeServerWith(t, Options{Leases: leases, Installed: installed})
}

// fakeServerWith is fakeServer with more options (o.Leases and
// o.Installed included).
func fakeServerWith(t testing.TB, o Options) (*Server, *net.UDPConn, election.Fence) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback})
	if err != nil {
		t.Fatal(err)
	}
	relay, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(); relay.Close() })
	o.Policy, o.Replica, o.Pools, o.Log = benchPolicy, "fake", []config.Pool{benchPool()}, slog.New(slog.NewTextHandler(io.Discard, nil))
	s := New(o)
	f := election.Fence{Key: "/mayu/election/fake", Rev: 7}
	s.conn, s.serverIP, s.o.Advertise = conn, addr("127.0.0.1"), addr("127.0.0.1")
	s.term.Store(&term{fence: f, pools: []*pool{newPool(benchPool())}})
	return s, relay, f
}

// pxeRequest is a PXE packet of type typ from mac (asking for ip, if set,
// from this server).
func pxeRequest(t *testing.T, typ dhcpv4.MessageType, mac net.HardwareAddr, ip net.IP) *dhcpv4.DHCPv4 {
	t.Helper()
	mods := []dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(typ),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC))}
	if ip != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(loopback)))
	}
	req, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// sendRelayed sends one relayed packet of type typ from mac through the
// server and returns its answer, nil if none came.
func sendRelayed(t *testing.T, s *Server, relay *net.UDPConn, typ dhcpv4.MessageType, mac net.HardwareAddr, ip net.IP) *dhcpv4.DHCPv4 {
	t.Helper()
	return handleRelayed(t, s, relay, pxeRequest(t, typ, mac, ip))
}

// An exchange on the fakes: the OFFER writes nothing, the ACK only after
// its lease is durable.
func TestExchangeWritesOneLeaseAtAck(t *testing.T) {
	leases := testfakes.NewLeases()
	s, relay, _ := fakeServer(t, leases, testfakes.NewInstalled())
	mac := benchMAC(1)
	offer := sendRelayed(t, s, relay, dhcpv4.MessageTypeDiscover, mac, nil)
	if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer || leases.Puts != 0 {
		t.Fatalf("offer %v, %d leases written", offer, leases.Puts)
	}
	ack := sendRelayed(t, s, relay, dhcpv4.MessageTypeRequest, mac, offer.YourIPAddr)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || leases.Puts != 1 {
		t.Fatalf("ack %v, %d leases written", ack, leases.Puts)
	}
	if ls, _ := leases.List(context.Background()); len(ls) != 1 || ls[0].MAC != mac.String() || !ls[0].IP.IsValid() {
		t.Fatalf("stored %+v", ls)
	}
}

// With the lease store unreachable, no ACK goes out (the client retries),
// and the address is free again for the next try.
func TestNoAckWithoutDurableLease(t *testing.T) {
	s, relay, _ := fakeServer(t, testfakes.BrokenLeases{}, testfakes.NewInstalled())
	mac := benchMAC(2)
	offer := sendRelayed(t, s, relay, dhcpv4.MessageTypeDiscover, mac, nil)
	if offer == nil {
		t.Fatal("no offer")
	}
	if ack := sendRelayed(t, s, relay, dhcpv4.MessageTypeRequest, mac, offer.YourIPAddr); ack != nil {
		t.Fatalf("answered %s without a durable lease", ack.MessageType())
	}
	if !s.Leading() {
		t.Fatal("an unreachable store is not a deposition")
	}
}

// A deposed leader's write is refused: it acknowledges nothing and stops
// answering at once, before the election notices.
func TestDeposedLeaderStopsAtOnce(t *testing.T) {
	leases := testfakes.NewLeases()
	s, relay, f := fakeServer(t, leases, testfakes.NewInstalled())
	offer := sendRelayed(t, s, relay, dhcpv4.MessageTypeDiscover, benchMAC(3), nil)
	leases.Depose(f)
	if ack := sendRelayed(t, s, relay, dhcpv4.MessageTypeRequest, benchMAC(3), offer.YourIPAddr); ack != nil {
		t.Fatalf("a deposed leader answered %s", ack.MessageType())
	}
	if s.Leading() {
		t.Fatal("still leading after a refused write")
	}
	if got := sendRelayed(t, s, relay, dhcpv4.MessageTypeDiscover, benchMAC(4), nil); got != nil {
		t.Fatal("a deposed leader still offers")
	}
}

// An installed machine's MAC gets no answer at all.
func TestInstalledMACIgnored(t *testing.T) {
	mac := benchMAC(5)
	s, relay, _ := fakeServer(t, testfakes.NewLeases(), testfakes.NewInstalled(mac.String()))
	if got := sendRelayed(t, s, relay, dhcpv4.MessageTypeDiscover, mac, nil); got != nil {
		t.Fatalf("an installed machine got %s", got.MessageType())
	}
}

// A lease store slower than the client's patience: the ACK waits for the
// durable lease however long it takes, and is sent once it is.
func TestAckWaitsForSlowStore(t *testing.T) {
	leases := testfakes.NewLeases()
	leases.Delay = 100 * time.Millisecond
	s, relay, _ := fakeServer(t, leases, testfakes.NewInstalled())
	offer := sendRelayed(t, s, relay, dhcpv4.MessageTypeDiscover, benchMAC(6), nil)
	start := time.Now()
	ack := sendRelayed(t, s, relay, dhcpv4.MessageTypeRequest, benchMAC(6), offer.YourIPAddr)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || time.Since(start) < leases.Delay {
		t.Fatalf("ack %v after %s", ack, time.Since(start))
	}
}
