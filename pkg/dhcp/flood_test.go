package dhcp

// Floods cost the attacker, not the fleet: the new-client budget per
// relay, REQUESTs without an OFFER, the relay list and DECLINE probes.

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/lease"
)

// fakeProber answers every probe with inUse, after delay (or when the
// probe's time is up), and records what it was asked.
type fakeProber struct {
	inUse bool
	delay time.Duration
	asked chan probeCall
}

type probeCall struct {
	ip     netip.Addr
	local  bool
	client string
}

func (f fakeProber) InUse(ctx context.Context, ip netip.Addr, local bool, client net.HardwareAddr) (bool, error) {
	if f.asked != nil {
		f.asked <- probeCall{ip, local, client.String()}
	}
	select {
	case <-time.After(f.delay):
	case <-ctx.Done():
		return false, nil
	}
	return f.inUse, nil
}

// knownMACs is a fixed set of registered machines' MACs.
type knownMACs map[string]bool

func (k knownMACs) Has(mac string) bool { return k[mac] }

func counter(t *testing.T, c *prometheus.CounterVec, label string) float64 {
	t.Helper()
	return testutil.ToFloat64(c.WithLabelValues(label))
}

func TestBudgetPerSource(t *testing.T) {
	b := newBudget(10, 3)
	now := time.Unix(1000, 0)
	for i := 0; i < 3; i++ {
		if !b.allow("10.0.0.1", now) {
			t.Fatalf("new client %d of the burst refused", i)
		}
	}
	if b.allow("10.0.0.1", now) {
		t.Fatal("a fourth new client within the burst of 3 allowed")
	}
	if !b.allow("10.0.0.2", now) {
		t.Fatal("another relay's budget was spent by the first")
	}
	if !b.allow("10.0.0.1", now.Add(100*time.Millisecond)) {
		t.Fatal("10/s did not refill one client in 100ms")
	}
	// Made-up relays beyond the bound share one bucket: memory stays
	// bounded and so does what they take.
	allowed := 0
	for i := 0; i < maxBudgetSources+100; i++ {
		if b.allow(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}).String(), now) {
			allowed++
		}
	}
	if len(b.sources) > maxBudgetSources {
		t.Fatalf("%d buckets kept", len(b.sources))
	}
	if allowed > 3*maxBudgetSources {
		t.Fatalf("%d new clients allowed", allowed)
	}
}

// A giaddr is whatever a packet says: a host that names many giaddrs in a
// pool's subnet gets no bucket per giaddr. Without a relay list the pool's
// one bucket pays; with one, each listed relay has its own.
func TestBudgetIsNotPerClaimedGiaddr(t *testing.T) {
	const burst = 2
	for name, c := range map[string]struct {
		relays []netip.Addr
		offers int
	}{
		"no relay list": {nil, burst},
		"listed relays": {[]netip.Addr{addr("127.0.0.2"), addr("127.0.0.3")}, 2 * burst},
	} {
		t.Run(name, func(t *testing.T) {
			s, relay, _ := fakeServerWith(t, Options{Leases: testfakes.NewLeases(),
				Limits: config.DHCP{NewClientsPerSecond: 0.001, NewClientsBurst: burst, Relays: c.relays}})
			for i := 0; i < 10; i++ {
				d := discover(t, benchMAC(0x900+i), "bios-pxe")
				// Answers go to the giaddr's port 67, on loopback.
				d.GatewayIPAddr, d.HopCount = net.IPv4(127, 0, 0, byte(2+i%2)), 1
				s.handle(context.Background(), packet{data: d.ToBytes(), peer: relay.LocalAddr().(*net.UDPAddr)})
			}
			if got := counter(t, s.metrics.ignored, "new_client_budget"); got != float64(10-c.offers) {
				t.Fatalf("new_client_budget = %v, want %d of 10 ignored", got, 10-c.offers)
			}
		})
	}
}

// The flood that emptied a 51-address pool with 103 packets from one
// relay: 51 DISCOVERs and 52 INIT-REBOOT REQUESTs naming addresses, each
// from a made-up MAC. Now the relay's budget caps the offers, the
// INIT-REBOOTs get nothing, and registered machines and clients with a
// lease are still answered.
func TestFloodFromOneRelayCannotDrainThePool(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	registered := hw(0x500)
	const burst = 10
	srv, _ := leadingServer(t, cli, Options{
		Known:  knownMACs{registered.String(): true},
		Limits: config.DHCP{NewClientsPerSecond: 2, NewClientsBurst: burst},
	})
	r := newRelay(t, srv)
	pool := loPool() // 51 addresses
	if pool.Range.Size() != 51 {
		t.Fatalf("pool of %d", pool.Range.Size())
	}
	_, before := r.lease(hw(0x400), "bios-pxe") // a client with a lease (spends one of the burst)

	start := time.Now()
	for i := 0; i < 51; i++ {
		r.sendRaw(relayed(discover(t, hw(0x100+i), "bios-pxe")).ToBytes())
	}
	for i := 0; i < 52; i++ {
		ip := pool.Range.Start.AsSlice()
		ip[3] += byte(i % 51)
		r.sendRaw(relayed(requestFor(t, hw(0x200+i), ip, nil)).ToBytes())
	}
	offers := 0
	r.conn.SetReadDeadline(time.Now().Add(silence))
	buf := make([]byte, 4096)
	for {
		n, _, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			break
		}
		resp, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			t.Fatal(err)
		}
		if resp.MessageType() != dhcpv4.MessageTypeOffer {
			t.Fatalf("the flood got %s", resp.Summary())
		}
		offers++
	}
	// The bucket refills at 2/s while the flood is handled and the loop
	// above waits out its silence: a loaded machine may take a while.
	if allowed := burst + int(2*time.Since(start).Seconds()) + 1; offers > allowed {
		t.Fatalf("%d offers to a flood from one relay with a budget of %d (+%d refilled)", offers, burst, allowed-burst)
	}
	if n := leaseCount(t, cli); n != 1 {
		t.Fatalf("%d leases in etcd after the flood, want only the one from before", n)
	}
	if got := counter(t, srv.metrics.ignored, "new_client_budget"); got < 51-burst {
		t.Errorf("new_client_budget = %v", got)
	}
	if got := counter(t, srv.metrics.ignored, "unknown_client"); got != 52 {
		t.Errorf("unknown_client = %v, want 52 INIT-REBOOTs ignored", got)
	}
	_, free := srv.term.Load().pools[0].stats(time.Now())
	if free < 51-1-burst {
		t.Fatalf("%d addresses free", free)
	}

	// The fleet is still served: a registered machine, new to the pool,
	// and the client with a lease, while the relay's budget is spent.
	r.lease(registered, "bios-pxe")
	if again := r.expect(discover(t, hw(0x400), "bios-pxe"), dhcpv4.MessageTypeOffer); !again.YourIPAddr.Equal(before.YourIPAddr) {
		t.Fatalf("the client with a lease got %s, its lease is %s", again.YourIPAddr, before.YourIPAddr)
	}
	// And a new client once the budget refilled (2/s).
	time.Sleep(600 * time.Millisecond)
	r.lease(hw(0x401), "bios-pxe")
}

// A REQUEST without an OFFER from a client nobody knows gets no lease:
// silence for INIT-REBOOT (RFC 2131 4.3.2), a NAK otherwise. A registered
// machine's INIT-REBOOT is still acknowledged with the full lease time.
func TestRequestWithoutOfferGetsNoLease(t *testing.T) {
	leases := testfakes.NewLeases()
	registered := benchMAC(0x77)
	s, relay, _ := fakeServerWith(t, Options{Leases: leases, Known: knownMACs{registered.String(): true}})
	ip := net.IP(benchIP(5).AsSlice())

	// SELECTING, naming this server, without its offer.
	if got := sendRelayed(t, s, relay, dhcpv4.MessageTypeRequest, benchMAC(1), ip); got == nil || got.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("REQUEST without an offer: %v", got)
	}
	// INIT-REBOOT: no server identifier.
	req, _ := dhcpv4.New(dhcpv4.WithHwAddr(benchMAC(2)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)))
	if got := handleRelayed(t, s, relay, req); got != nil {
		t.Fatalf("INIT-REBOOT of an unknown client: %s", got.Summary())
	}
	// RENEWING: ciaddr, no requested address.
	renew, _ := dhcpv4.New(dhcpv4.WithHwAddr(benchMAC(3)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(ip))
	if got := handleRelayed(t, s, relay, renew); got == nil || got.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("RENEW without a lease: %v", got)
	}
	if leases.Puts != 0 {
		t.Fatalf("%d leases written for clients without an offer", leases.Puts)
	}
	if got := counter(t, s.metrics.naks, "unknown_client"); got != 2 {
		t.Errorf("naks{unknown_client} = %v", got)
	}
	// A registered machine's INIT-REBOOT: the full lease.
	known, _ := dhcpv4.New(dhcpv4.WithHwAddr(registered), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)))
	ack := handleRelayed(t, s, relay, known)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.IPAddressLeaseTime(0) != benchPool().LeaseTime {
		t.Fatalf("INIT-REBOOT of a registered machine: %v", ack)
	}
	// And the usual exchange still gives the full lease.
	offer := sendRelayed(t, s, relay, dhcpv4.MessageTypeDiscover, benchMAC(4), nil)
	ack = sendRelayed(t, s, relay, dhcpv4.MessageTypeRequest, benchMAC(4), offer.YourIPAddr)
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || ack.IPAddressLeaseTime(0) != benchPool().LeaseTime {
		t.Fatalf("REQUEST after the OFFER: %v", ack)
	}
}

// handleRelayed is sendRelayed for a packet the test built.
func handleRelayed(t *testing.T, s *Server, relay *net.UDPConn, req *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	t.Helper()
	req.GatewayIPAddr, req.HopCount = loopback, 1
	s.handle(context.Background(), packet{data: req.ToBytes(), peer: relay.LocalAddr().(*net.UDPAddr)})
	relay.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	buf := make([]byte, 1500)
	n, _, err := relay.ReadFromUDP(buf)
	if err != nil {
		return nil
	}
	resp, err := dhcpv4.FromBytes(buf[:n])
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// With cluster.dhcp.relays set, a giaddr not on the list is dropped and
// counted; a listed one is answered.
func TestUnlistedRelayIgnored(t *testing.T) {
	s, relay, _ := fakeServerWith(t, Options{Leases: testfakes.NewLeases(),
		Limits: config.DHCP{Relays: []netip.Addr{addr("127.0.0.9")}}})
	if got := sendRelayed(t, s, relay, dhcpv4.MessageTypeDiscover, benchMAC(1), nil); got != nil {
		t.Fatalf("giaddr 127.0.0.1 is not listed, answered %s", got.MessageType())
	}
	if got := counter(t, s.metrics.ignored, "unlisted_relay"); got != 1 {
		t.Fatalf("unlisted_relay = %v", got)
	}
	listed, _, _ := fakeServerWith(t, Options{Leases: testfakes.NewLeases(),
		Limits: config.DHCP{Relays: []netip.Addr{addr("127.0.0.1")}}})
	if got := sendRelayed(t, listed, relay, dhcpv4.MessageTypeDiscover, benchMAC(1), nil); got == nil || got.MessageType() != dhcpv4.MessageTypeOffer {
		t.Fatalf("a listed relay: %v", got)
	}
	if got := counter(t, listed.metrics.ignored, "unlisted_relay"); got != 0 {
		t.Fatalf("a listed relay was dropped")
	}
}

// declineFrom leases an address to mac and declines it.
func declineFrom(t *testing.T, s *Server, relay *net.UDPConn, mac net.HardwareAddr) net.IP {
	t.Helper()
	offer := sendRelayed(t, s, relay, dhcpv4.MessageTypeDiscover, mac, nil)
	if offer == nil {
		t.Fatal("no offer")
	}
	if ack := sendRelayed(t, s, relay, dhcpv4.MessageTypeRequest, mac, offer.YourIPAddr); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck {
		t.Fatalf("no ack: %v", ack)
	}
	sendRelayed(t, s, relay, dhcpv4.MessageTypeDecline, mac, offer.YourIPAddr)
	return offer.YourIPAddr
}

// A DECLINE of an address nobody else answers on does not quarantine it:
// once the probe found nobody, the next client may have it.
func TestDeclineOfAnUnusedAddressQuarantinesNothing(t *testing.T) {
	asked := make(chan probeCall, 1)
	// The probe ends at its timeout having found nobody: long enough
	// that "while the probe runs" below holds on a slow machine too (the
	// DECLINE alone waits out the helper's read deadline).
	s, relay, _ := fakeServerWith(t, Options{Leases: testfakes.NewLeases(), Prober: fakeProber{asked: asked, delay: time.Hour},
		Limits: config.DHCP{DeclineProbeTimeout: 1500 * time.Millisecond}})
	ip := declineFrom(t, s, relay, benchMAC(1))
	select {
	case c := <-asked:
		if c.ip.String() != ip.String() || c.client != benchMAC(1).String() || !c.local {
			t.Fatalf("probe asked %+v", c)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("no probe")
	}
	// While the probe runs, nobody gets it.
	if offer := sendRelayedAsking(t, s, relay, benchMAC(2), ip); offer == nil || offer.YourIPAddr.Equal(ip) {
		t.Fatalf("an address being probed was offered: %v", offer)
	}
	waitFor(t, 5*time.Second, "probe done", func() bool { return counter(t, s.metrics.declines, "unconfirmed") == 1 })
	offer := sendRelayedAsking(t, s, relay, benchMAC(3), ip)
	if offer == nil || !offer.YourIPAddr.Equal(ip) {
		t.Fatalf("an address nobody uses was kept from the pool: offered %v", offer)
	}
}

// A DECLINE of an address another host answers on quarantines it.
func TestDeclineOfAnAddressInUseQuarantinesIt(t *testing.T) {
	s, relay, _ := fakeServerWith(t, Options{Leases: testfakes.NewLeases(), Prober: fakeProber{inUse: true}})
	ip := declineFrom(t, s, relay, benchMAC(1))
	waitFor(t, 5*time.Second, "probe done", func() bool { return counter(t, s.metrics.declines, "quarantined") == 1 })
	if offer := sendRelayedAsking(t, s, relay, benchMAC(2), ip); offer == nil || offer.YourIPAddr.Equal(ip) {
		t.Fatalf("a quarantined address offered: %v", offer)
	}
}

// Probes are bounded: beyond cluster.dhcp.decline_probes a DECLINE
// quarantines nothing (and waits for nothing), and is counted.
func TestDeclineProbesAreBounded(t *testing.T) {
	s, relay, _ := fakeServerWith(t, Options{Leases: testfakes.NewLeases(), Prober: fakeProber{inUse: true, delay: time.Hour},
		Limits: config.DHCP{DeclineProbes: 1, DeclineProbeTimeout: 2 * time.Second}})
	declineFrom(t, s, relay, benchMAC(1))
	start := time.Now()
	ip := declineFrom(t, s, relay, benchMAC(2))
	if time.Since(start) > time.Second {
		t.Fatal("a DECLINE waited for a probe")
	}
	if got := counter(t, s.metrics.declines, "probe_busy"); got != 1 {
		t.Fatalf("probe_busy = %v", got)
	}
	if offer := sendRelayedAsking(t, s, relay, benchMAC(3), ip); offer == nil || !offer.YourIPAddr.Equal(ip) {
		t.Fatalf("an unprobed decline kept the address: %v", offer)
	}
	// The first probe ends by its timeout; nothing waits longer.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); s.probing.Wait() }()
	wg.Wait()
	if got := counter(t, s.metrics.declines, "unconfirmed"); got != 1 {
		t.Fatalf("the probe cut by its timeout: unconfirmed = %v", got)
	}
}

// sendRelayedAsking is a DISCOVER from mac asking for ip.
func sendRelayedAsking(t *testing.T, s *Server, relay *net.UDPConn, mac net.HardwareAddr, ip net.IP) *dhcpv4.DHCPv4 {
	t.Helper()
	d, err := dhcpv4.NewDiscovery(mac, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip)))
	if err != nil {
		t.Fatal(err)
	}
	return handleRelayed(t, s, relay, d)
}

// ciaddr is whatever a packet says: it names the pool of a direct request
// only for a client renewing, releasing or informing from that very
// address, never for a DISCOVER (which would take another network's pool,
// and its budget, from this segment).
func TestPoolByClientAddressOnlyFromThatAddress(t *testing.T) {
	local := config.Pool{Subnet: netip.MustParsePrefix("10.1.0.0/24"), Range: config.Range{Start: addr("10.1.0.100"), End: addr("10.1.0.150")}}
	relayed := config.Pool{Subnet: netip.MustParsePrefix("10.2.0.0/24"), Range: config.Range{Start: addr("10.2.0.100"), End: addr("10.2.0.150")}}
	s := New(Options{Pools: []config.Pool{local, relayed}})
	s.serverIP = addr("10.1.0.1")
	tm := &term{pools: []*pool{newPool(local), newPool(relayed)}}
	ci := net.IPv4(10, 2, 0, 120)
	for name, c := range map[string]struct {
		typ  dhcpv4.MessageType
		from net.IP
		want netip.Prefix
	}{
		"renew from its address":     {dhcpv4.MessageTypeRequest, ci, relayed.Subnet},
		"release from its address":   {dhcpv4.MessageTypeRelease, ci, relayed.Subnet},
		"renew from another address": {dhcpv4.MessageTypeRequest, net.IPv4(10, 1, 0, 77), local.Subnet},
		"discover naming a ciaddr":   {dhcpv4.MessageTypeDiscover, ci, local.Subnet},
		"decline naming a ciaddr":    {dhcpv4.MessageTypeDecline, ci, local.Subnet},
	} {
		req, err := dhcpv4.New(dhcpv4.WithMessageType(c.typ), dhcpv4.WithHwAddr(benchMAC(1)))
		if err != nil {
			t.Fatal(err)
		}
		req.ClientIPAddr = ci
		if p := s.poolFor(tm, req, &net.UDPAddr{IP: c.from, Port: 68}); p == nil || p.cfg.Subnet != c.want {
			t.Errorf("%s: pool %v, want %s", name, p, c.want)
		}
	}
}

// registeredSet is a set of registered machines' MACs that a test can add
// to while the server reads it.
type registeredSet struct {
	mu   sync.Mutex
	macs map[string]bool
}

func (k *registeredSet) Has(mac string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.macs[mac]
}

func (k *registeredSet) add(mac net.HardwareAddr) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.macs[mac.String()] = true
}

// The flood a review found with the default limits: 51 made-up MACs, each
// through the whole DISCOVER, OFFER, REQUEST, ACK, emptied a 51-address
// pool in 102 packets, well inside the new-client budget's burst of 200.
// Now clients that are no registered machine's hold at most
// cluster.dhcp.unregistered_share (50 %) of the range, offers included;
// registered machines find the rest, and a stranger that registers stops
// counting at the next recount.
func TestFullExchangesFromMadeUpMACsCannotDrainThePool(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	registered := hw(0x500)
	known := &registeredSet{macs: map[string]bool{registered.String(): true}}
	srv, _ := leadingServer(t, cli, Options{
		Known:  known,
		Limits: config.DHCP{NewClientsPerSecond: 20, NewClientsBurst: 200, UnregisteredShare: config.DefaultUnregisteredShare},
	})
	r := newRelay(t, srv)
	const share = 51 * config.DefaultUnregisteredShare / 100 // 25 of loPool's 51
	for i := range 51 {
		r.sendRaw(relayed(discover(t, hw(0x100+i), "bios-pxe")).ToBytes())
	}
	var offers []*dhcpv4.DHCPv4
	buf := make([]byte, 4096)
	for {
		// Until a second passes with no answer: a loaded machine may
		// take a while over the 25 offers.
		r.conn.SetReadDeadline(time.Now().Add(silence))
		n, _, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			break
		}
		resp, err := dhcpv4.FromBytes(buf[:n])
		if err != nil || resp.MessageType() != dhcpv4.MessageTypeOffer {
			t.Fatalf("the flood got %v (%v)", resp, err)
		}
		offers = append(offers, resp)
	}
	if len(offers) != share {
		t.Fatalf("%d offers to 51 made-up MACs, want %d (the unregistered share)", len(offers), share)
	}
	for _, o := range offers {
		req, err := dhcpv4.NewRequestFromOffer(o, firmware["bios-pxe"]...)
		if err != nil {
			t.Fatal(err)
		}
		r.expect(relayed(req), dhcpv4.MessageTypeAck)
	}
	if n := leaseCount(t, cli); n != share {
		t.Fatalf("%d leases in etcd, want %d", n, share)
	}
	if got := counter(t, srv.metrics.ignored, "unregistered_share"); got != 51-share {
		t.Errorf("unregistered_share = %v, want %d", got, 51-share)
	}
	// The flood goes on: still nothing for new made-up MACs, but a
	// registered machine is answered.
	r.expectNone(relayed(discover(t, hw(0x200), "bios-pxe")), "a made-up MAC past the share")
	r.lease(registered, "bios-pxe")

	// One of the strangers registers (its first iPXE request): from the
	// next recount on it no longer counts, and one more new client fits.
	known.add(offers[0].ClientHWAddr)
	for i := range 2 {
		if i > 0 {
			time.Sleep(strangerRecount + 100*time.Millisecond)
		}
		if resp := r.exchange(relayed(discover(t, hw(0x300), "bios-pxe")), silence); resp != nil {
			if resp.MessageType() != dhcpv4.MessageTypeOffer {
				t.Fatalf("a new client after a stranger registered: %s", resp.Summary())
			}
			break
		} else if i == 1 {
			t.Fatal("no room for a new client after a stranger registered and the pool recounted")
		}
	}
	r.expectNone(relayed(discover(t, hw(0x301), "bios-pxe")), "a second made-up MAC with the share full again")
}

// A stranger whose lease expired is still a client the pool knows (its
// old lease stays in the table for it), but it no longer counts against
// the share: were it let back in without the check, made-up MACs taking
// the share in waves, one lease time apart, would get all of the pool
// back (a review drained it so: 50 of 51). Coming back by DISCOVER or by
// INIT-REBOOT, it is held to the share like a new client.
func TestExpiredStrangersStayWithinTheShare(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	pl := loPool()
	// The second wave's leases must outlive the checks below: 25
	// exchanges, each a durable etcd write, take well over 2 s when
	// fsync is slow.
	pl.LeaseTime = 6 * time.Second
	known := &registeredSet{macs: map[string]bool{}}
	srv, _ := leadingServer(t, cli, Options{Known: known, Pools: []config.Pool{pl},
		Limits: config.DHCP{NewClientsPerSecond: 1000, NewClientsBurst: 1000, UnregisteredShare: config.DefaultUnregisteredShare}})
	r := newRelay(t, srv)
	const share = 51 * config.DefaultUnregisteredShare / 100
	var first []net.IP
	for i := range share {
		_, ack := r.lease(hw(0x100+i), "bios-pxe")
		first = append(first, ack.YourIPAddr)
	}
	time.Sleep(pl.LeaseTime + strangerRecount)
	for i := range share { // a second wave takes the share again
		r.lease(hw(0x200+i), "bios-pxe")
	}
	r.expectNone(relayed(requestFor(t, hw(0x100), first[0], nil)), "an INIT-REBOOT of the first wave")
	r.expectNone(relayed(discover(t, hw(0x101), "bios-pxe")), "a DISCOVER of the first wave")
	p := srv.term.Load().pools[0]
	p.mu.Lock()
	n := p.countStrangersLocked(time.Now(), known.Has)
	p.mu.Unlock()
	if n > share {
		t.Fatalf("strangers hold %d addresses, their share is %d", n, share)
	}
	if got := counter(t, srv.metrics.ignored, "unregistered_share"); got != 2 {
		t.Errorf("unregistered_share = %v, want the 2 of the first wave", got)
	}
	// Registered, the first wave's machine gets its address back.
	known.add(hw(0x100))
	r.expect(relayed(requestFor(t, hw(0x100), first[0], nil)), dhcpv4.MessageTypeAck)
}

// A client holds one offer: asking for another address gives the first
// up (it kept both, and made-up MACs that each asked for a second free
// address doubled their share of the pool, found by a review).
func TestAnotherAddressReleasesTheOffer(t *testing.T) {
	p := testPool()
	now := time.Now()
	first := mustOffer(t, p, macN(1), netip.Addr{}, now)
	second := first.Next()
	if err := p.reserve(macN(1), second, now); err != nil {
		t.Fatal(err)
	}
	if p.heldBy(macN(1), first, now) {
		t.Fatalf("%s is still held for the client that asked for %s", first, second)
	}
	if got := mustOffer(t, p, macN(2), first, now); got != first {
		t.Fatalf("the address given up went to nobody: another client got %s", got)
	}
}

// Strangers holding their share cannot grow it by asking, with their
// offer in hand, for another free address: that is a new address, held
// to the share like a new client's, and registered machines still find
// theirs.
func TestAnotherAddressCountsAgainstTheShare(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	known := &registeredSet{macs: map[string]bool{hw(0x500).String(): true, hw(0x501).String(): true}}
	srv, _ := leadingServer(t, cli, Options{Known: known,
		Limits: config.DHCP{NewClientsPerSecond: 1000, NewClientsBurst: 1000, UnregisteredShare: config.DefaultUnregisteredShare}})
	r := newRelay(t, srv)
	const share = 51 * config.DefaultUnregisteredShare / 100
	var offers []*dhcpv4.DHCPv4
	for i := range share {
		offers = append(offers, r.expect(relayed(discover(t, hw(0x100+i), "bios-pxe")), dhcpv4.MessageTypeOffer))
	}
	for _, o := range offers[:3] {
		other := net.IPv4(127, 0, 0, 150).To4() // free: the offers went from .100 up
		r.expectNone(relayed(requestFor(t, o.ClientHWAddr, other, o.ServerIdentifier())), "a stranger asking for a second address")
	}
	p := srv.term.Load().pools[0]
	p.mu.Lock()
	n := p.countStrangersLocked(time.Now(), known.Has)
	p.mu.Unlock()
	if n != share {
		t.Fatalf("strangers hold %d addresses, their share is %d", n, share)
	}
	// Their own offers are still theirs to take.
	req, err := dhcpv4.NewRequestFromOffer(offers[3], firmware["bios-pxe"]...)
	if err != nil {
		t.Fatal(err)
	}
	r.expect(relayed(req), dhcpv4.MessageTypeAck)
	r.lease(hw(0x500), "bios-pxe")
	r.lease(hw(0x501), "bios-pxe")
}

// Made-up MACs that decline each offer and answer the leader's probe
// themselves (from another MAC) get each address quarantined. A
// quarantine a stranger brought about counts against the share as its
// hold did: four rounds of 10 strangers against a 10-address pool left it
// locked up for the quarantine's 10 minutes, registered machines
// included, when it did not (found by a review).
func TestStrangersDecliningCannotLockUpThePool(t *testing.T) {
	registered := benchMAC(9999)
	s, relay, _ := fakeServerWith(t, Options{Leases: testfakes.NewLeases(), Prober: fakeProber{inUse: true},
		Known:  knownMACs{registered.String(): true},
		Limits: config.DHCP{NewClientsPerSecond: 1000, NewClientsBurst: 1000, DeclineQuarantine: 10 * time.Minute, DeclineProbeTimeout: 100 * time.Millisecond}})
	pc := config.Pool{Subnet: netip.MustParsePrefix("127.0.0.0/8"), Range: config.Range{Start: addr("127.1.0.1"), End: addr("127.1.0.10")}, LeaseTime: time.Hour}
	p := newPool(pc)
	p.capStrangers(config.DefaultUnregisteredShare)
	s.term.Store(&term{fence: s.term.Load().fence, pools: []*pool{p}})
	mac := 1
	for range 4 {
		for range 10 {
			m := benchMAC(mac)
			mac++
			if offer := sendRelayed(t, s, relay, dhcpv4.MessageTypeDiscover, m, nil); offer != nil {
				sendRelayed(t, s, relay, dhcpv4.MessageTypeDecline, m, offer.YourIPAddr)
			}
		}
		s.probing.Wait()
		time.Sleep(strangerRecount + 50*time.Millisecond)
	}
	if got := counter(t, s.metrics.declines, "quarantined"); got != 5 {
		t.Errorf("%v addresses quarantined, want the strangers' share of 5", got)
	}
	if offer := sendRelayed(t, s, relay, dhcpv4.MessageTypeDiscover, registered, nil); offer == nil {
		t.Fatal("a registered machine gets nothing: the strangers' declines locked up the pool")
	}
}

// A client's previous lease, while its key is deleted from etcd, is no
// other client's, whatever the client sends meanwhile: it was kept by a
// hold, which the client's next packet (a retransmitted REQUEST) dropped
// once a client had one hold (found by a review).
func TestAddressGivenUpStaysOutWhileDeleted(t *testing.T) {
	p := testPool()
	now := time.Now()
	a, b, mac := addr("10.0.0.100"), addr("10.0.0.101"), macN(1)
	p.load(leaseFor(mac, a.String(), now.Add(time.Hour)))
	if err := p.reserve(mac, b, now); err != nil {
		t.Fatal(err)
	}
	if !p.holdToGiveUp(mac, a, now) {
		t.Fatal("the previous lease may not be given up")
	}
	p.commit(leaseFor(mac, b.String(), now.Add(time.Hour)))
	if err := p.reserve(mac, b, now); err != nil { // the retransmitted REQUEST
		t.Fatal(err)
	}
	p.mu.Lock()
	free := p.freeFor(a, macN(2), now)
	p.mu.Unlock()
	if free {
		t.Fatalf("%s, being deleted from etcd, is free for another client", a)
	}
	p.gaveUp(mac, a)
	p.mu.Lock()
	free = p.freeFor(a, macN(2), now)
	p.mu.Unlock()
	if !free {
		t.Fatalf("%s stays taken after its delete ended", a)
	}
}

// What the strangers keep from everyone is counted once per address,
// whichever way they keep it, and only while they are strangers (pool
// level; a review found each case wrong once).
func TestStrangersCountedOncePerAddress(t *testing.T) {
	p := smallPool() // 8 addresses
	p.capStrangers(50)
	now := time.Now()
	known := map[string]bool{}
	registered := func(mac string) bool { return known[mac] }
	count := func() int {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.countStrangersLocked(now, registered)
	}

	// A DECLINE while the client's lease write is in flight: the write
	// commits after the decline; lease and quarantine are one address.
	a := mustOffer(t, p, macN(1), netip.Addr{}, now)
	if err := p.reserve(macN(1), a, now); err != nil {
		t.Fatal(err)
	}
	p.decline(macN(1), a, now.Add(time.Minute))
	p.commit(lease.Lease{IP: a, MAC: macN(1), Expiry: now.Add(time.Hour)})
	if n := count(); n != 1 {
		t.Fatalf("one address counted %d times", n)
	}
	// Its machine registers: the quarantine no longer counts either.
	known[macN(1)] = true
	if n := count(); n != 0 {
		t.Fatalf("a registered machine's address and quarantine counted: %d", n)
	}

	// A write etcd never answered keeps its address for the client: with
	// the share full, the client is still let back to it, by DISCOVER and
	// by REQUEST, and it is offered that address.
	b := mustOffer(t, p, macN(2), netip.Addr{}, now)
	if err := p.reserve(macN(2), b, now); err != nil {
		t.Fatal(err)
	}
	p.unhold(b, macN(2)) // as acknowledge does when the outcome is unknown
	for i := 3; count() < p.strangers.limit; i++ {
		mustOffer(t, p, macN(i), netip.Addr{}, now)
	}
	p.strangers.next = time.Time{} // recount now
	if !p.admitStranger(now, macN(2), netip.Addr{}, registered) || !p.admitStranger(now, macN(2), b, registered) {
		t.Fatal("the client of a write in flight is refused its own address with the share full")
	}
	if got := mustOffer(t, p, macN(2), netip.Addr{}, now); got != b {
		t.Fatalf("offered %s, its write in flight is on %s", got, b)
	}
	if p.admitStranger(now, macN(99), netip.Addr{}, registered) {
		t.Fatal("a new stranger admitted with the share full")
	}
}

// A client's previous lease whose delete etcd did not answer stays out of
// the pool (the delete may still land, and would take the lease of
// whoever had the address meanwhile) until a retry is answered, then
// comes back.
func TestUnansweredGiveUpIsTriedAgain(t *testing.T) {
	s, leases, x, old := movedClient(t)
	leases.RemoveTimeouts = 2
	p := x.pool
	free := func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.freeFor(old, benchMAC(2).String(), time.Now())
	}
	s.giveUp(x, old)
	if free() {
		t.Fatalf("%s is free while its delete may still land", old)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !free() {
		if time.Now().After(deadline) {
			t.Fatalf("%s never came back after etcd answered a retry", old)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if leases.RemoveTimeouts != 0 {
		t.Fatalf("%d timeouts left: the address came back before a delete was answered", leases.RemoveTimeouts)
	}
}

// A client that takes its previous address back while the delete of its
// old lease there is being tried again keeps its new lease: the retries
// stop (a key-only delete would take it, found by a review).
func TestGiveUpRetryLeavesAnAddressTakenBack(t *testing.T) {
	s, leases, x, old := movedClient(t)
	p, tm, mac, now := x.pool, x.term, x.mac, time.Now()
	leases.RemoveTimeouts = 1
	s.giveUp(x, old)

	// The client comes back to its old address (a REQUEST naming it).
	back := lease.Lease{IP: old, MAC: mac, Expiry: now.Add(time.Hour)}
	if err := p.reserve(mac, old, now); err != nil {
		t.Fatal(err)
	}
	if err := leases.Put(context.Background(), tm.fence, back); err != nil {
		t.Fatal(err)
	}
	p.commit(back)
	time.Sleep(2500 * time.Millisecond) // two retries' time
	ls, _ := leases.List(context.Background())
	for _, l := range ls {
		if l.IP == old {
			return
		}
	}
	t.Fatalf("the client's new lease on %s was deleted by a retry of the old one's delete", old)
}

// movedClient is a leader whose client has just moved from its lease on
// old to the next address: its lease there committed, old being given up
// (holdToGiveUp), as acknowledge leaves them before giveUp.
func movedClient(t *testing.T) (*Server, *testfakes.Leases, *exchange, netip.Addr) {
	t.Helper()
	leases := testfakes.NewLeases()
	s, _, _ := fakeServerWith(t, Options{Leases: leases})
	tm := s.term.Load()
	p := tm.pools[0]
	now := time.Now()
	mac := benchMAC(1).String()
	old := p.cfg.Range.Start
	p.load(lease.Lease{IP: old, MAC: mac, Expiry: now.Add(time.Hour)})
	if err := p.reserve(mac, old.Next(), now); err != nil {
		t.Fatal(err)
	}
	if !p.holdToGiveUp(mac, old, now) {
		t.Fatal("the previous lease may not be given up")
	}
	p.commit(lease.Lease{IP: old.Next(), MAC: mac, Expiry: now.Add(time.Hour)})
	return s, leases, &exchange{ctx: context.Background(), term: tm, pool: p, mac: mac, log: s.o.Log}, old
}
