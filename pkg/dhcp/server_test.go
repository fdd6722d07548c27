package dhcp

// The whole server on loopback, against a real embedded etcd, with real
// leadership. The test acts as a DHCP relay agent: it sends from
// 127.0.0.1:<port> with giaddr 127.0.0.1, and the server answers the
// relay at that port. Never port 67, never a real interface.

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
	"github.com/mayu-boot/mayu/pkg/state"
)

const (
	prefix    = "/mayu/"
	scriptURL = "http://127.0.0.1:4081/boot.ipxe"
	// How long to wait for an answer that must not come.
	silence = time.Second
	// How long to wait for an answer that must come.
	answerWait = 5 * time.Second
)

var loopback = net.IPv4(127, 0, 0, 1).To4()

func loPool() config.Pool {
	return config.Pool{
		Subnet:    netip.MustParsePrefix("127.0.0.0/24"),
		Range:     config.Range{Start: addr("127.0.0.100"), End: addr("127.0.0.150")},
		Router:    addr("127.0.0.1"),
		DNS:       []netip.Addr{addr("127.0.0.53")},
		LeaseTime: 10 * time.Minute,
	}
}

// testLog logs through t until the test ends; what goroutines log after
// that is dropped.
type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Short() {
		return slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	w := &testLog{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func freeUDPPort(t testing.TB) int {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().(*net.UDPAddr).Port
}

// startServer starts a DHCP server on lo at a free high port; it answers
// only once it leads.
func startServer(t *testing.T, cli *clientv3.Client, o Options) *Server {
	t.Helper()
	o.Interface = "lo"
	o.Port = freeUDPPort(t)
	o.ServerIP = addr("127.0.0.1")
	o.Advertise = addr("127.0.0.1")
	if o.Pools == nil {
		o.Pools = []config.Pool{loPool()}
	}
	if o.Policy == (Policy{}) {
		o.Policy = Policy{BIOS: "undionly.kpxe", EFI64: "ipxe.efi", ScriptURL: scriptURL,
			HTTPBase: "http://127.0.0.1:4081/tftp/"}
	}
	if o.Replica == "" {
		o.Replica = "t"
	}
	if o.Leases == nil {
		o.Leases = lease.NewStore(cli, state.Keys{Prefix: prefix}, 3*time.Second)
	}
	o.Log = testLogger(t).With("server", o.Replica)
	srv := New(o)
	if err := srv.Listen(); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.ENODEV) {
			t.Skipf("cannot bind a DHCP socket to lo here: %v", err)
		}
		t.Fatal(err)
	}
	if got := srv.Addr().(*net.UDPAddr).Port; got != o.Port {
		t.Fatalf("bound port %d, want %d", got, o.Port)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after its context ended")
		}
	})
	return srv
}

// campaign runs a real election for srv until the returned stop is called
// (or the test ends); stop resigns and waits for Run to return.
func campaign(t *testing.T, cli *clientv3.Client, srv *Server, name string) (*election.Election, func()) {
	t.Helper()
	el := election.New(cli, prefix, name, 2*time.Second, testLogger(t).With("election", name), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		el.Run(ctx, srv.Lead)
	}()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("election %s: Run did not return", name)
			}
		})
	}
	t.Cleanup(stop)
	return el, stop
}

// waitFor polls cond until it holds or within passes.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// leadingServer starts a server and makes it the leader; stop ends its
// campaign (resigning).
func leadingServer(t *testing.T, cli *clientv3.Client, o Options) (srv *Server, stop func()) {
	t.Helper()
	srv = startServer(t, cli, o)
	_, stop = campaign(t, cli, srv, srv.o.Replica)
	waitFor(t, 15*time.Second, "server leads", srv.Leading)
	return srv, stop
}

// relay is the test's DHCP relay agent on 127.0.0.1.
type relay struct {
	t      *testing.T
	conn   *net.UDPConn
	server *net.UDPAddr
}

func newRelay(t *testing.T, srv *Server) *relay {
	t.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &relay{t: t, conn: conn, server: &net.UDPAddr{IP: loopback, Port: srv.Addr().(*net.UDPAddr).Port}}
}

func (r *relay) sendRaw(data []byte) {
	r.t.Helper()
	if _, err := r.conn.WriteToUDP(data, r.server); err != nil {
		r.t.Fatal(err)
	}
}

// relayed marks a client's packet as forwarded by this relay.
func relayed(d *dhcpv4.DHCPv4) *dhcpv4.DHCPv4 {
	d.GatewayIPAddr = loopback
	d.HopCount = 1
	return d
}

// receive waits for the answer to xid; nil if none came within wait.
func (r *relay) receive(xid dhcpv4.TransactionID, wait time.Duration) *dhcpv4.DHCPv4 {
	r.t.Helper()
	deadline := time.Now().Add(wait)
	buf := make([]byte, 4096)
	for {
		r.conn.SetReadDeadline(deadline)
		n, from, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil
			}
			r.t.Fatal(err)
		}
		resp, err := dhcpv4.FromBytes(buf[:n])
		if err != nil {
			r.t.Fatalf("undecodable answer from %s: %v", from, err)
		}
		if resp.TransactionID != xid {
			r.t.Logf("ignoring a late answer %s", resp.Summary())
			continue
		}
		if resp.OpCode != dhcpv4.OpcodeBootReply {
			r.t.Fatalf("answer is not a BOOTREPLY: %s", resp.Summary())
		}
		return resp
	}
}

// exchange sends a relayed request and returns the answer, nil if none.
func (r *relay) exchange(req *dhcpv4.DHCPv4, wait time.Duration) *dhcpv4.DHCPv4 {
	r.t.Helper()
	relayed(req)
	r.sendRaw(req.ToBytes())
	return r.receive(req.TransactionID, wait)
}

// expect is exchange for an answer of type typ.
func (r *relay) expect(req *dhcpv4.DHCPv4, typ dhcpv4.MessageType) *dhcpv4.DHCPv4 {
	r.t.Helper()
	resp := r.exchange(req, answerWait)
	if resp == nil {
		r.t.Fatalf("no answer to %s from %s", req.MessageType(), req.ClientHWAddr)
	}
	if resp.MessageType() != typ {
		r.t.Fatalf("answer to %s from %s: %s, want %s (%q)", req.MessageType(), req.ClientHWAddr, resp.MessageType(), typ, resp.Message())
	}
	if resp.ClientHWAddr.String() != req.ClientHWAddr.String() || !resp.GatewayIPAddr.Equal(loopback) {
		r.t.Fatalf("answer is for %s via %s", resp.ClientHWAddr, resp.GatewayIPAddr)
	}
	return resp
}

// expectNone sends a relayed request that must not be answered.
func (r *relay) expectNone(req *dhcpv4.DHCPv4, why string) {
	r.t.Helper()
	if resp := r.exchange(req, silence); resp != nil {
		r.t.Fatalf("%s: answered %s", why, resp.Summary())
	}
}

// noAnswerAtAll reads for wait and fails on any packet at all.
func (r *relay) noAnswerAtAll(wait time.Duration, why string) {
	r.t.Helper()
	r.conn.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4096)
	if n, _, err := r.conn.ReadFromUDP(buf); err == nil {
		r.t.Fatalf("%s: got a %d-byte answer", why, n)
	}
}

func hw(i int) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, 0x00, 0xaa, byte(i >> 8), byte(i)}
}

func newPacket(t *testing.T, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	d, err := dhcpv4.New(mods...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// discover is what a client of firmware kind broadcasts first.
func discover(t *testing.T, mac net.HardwareAddr, kind string, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	all := append(append([]dhcpv4.Modifier{}, firmware[kind]...), mods...)
	d, err := dhcpv4.NewDiscovery(mac, all...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// requestFor is a REQUEST (SELECTING with a server id, INIT-REBOOT without).
func requestFor(t *testing.T, mac net.HardwareAddr, ip, serverID net.IP, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	base := []dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip))}
	if serverID != nil {
		base = append(base, dhcpv4.WithOption(dhcpv4.OptServerIdentifier(serverID)))
	}
	return newPacket(t, append(base, mods...)...)
}

// lease runs DISCOVER, OFFER, REQUEST, ACK for mac.
func (r *relay) lease(mac net.HardwareAddr, kind string) (offer, ack *dhcpv4.DHCPv4) {
	r.t.Helper()
	offer = r.expect(discover(r.t, mac, kind), dhcpv4.MessageTypeOffer)
	req, err := dhcpv4.NewRequestFromOffer(offer, firmware[kind]...)
	if err != nil {
		r.t.Fatal(err)
	}
	ack = r.expect(req, dhcpv4.MessageTypeAck)
	if !ack.YourIPAddr.Equal(offer.YourIPAddr) {
		r.t.Fatalf("ACK for %s, OFFER was %s", ack.YourIPAddr, offer.YourIPAddr)
	}
	return offer, ack
}

func inRange(p config.Pool, ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip.To4())
	return ok && p.Range.Contains(a)
}

// storedLease reads <prefix>leases/<ip>; ok is false if there is none.
func storedLease(t *testing.T, cli *clientv3.Client, ip net.IP) (l lease.Lease, modRev int64, ok bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix+"leases/"+ip.String())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return lease.Lease{}, 0, false
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &l); err != nil {
		t.Fatalf("lease %s is not JSON: %v: %s", ip, err, resp.Kvs[0].Value)
	}
	return l, resp.Kvs[0].ModRevision, true
}

func leaseCount(t *testing.T, cli *clientv3.Client) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix+"leases/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// installMachine registers a machine with mac and takes it through an
// install, as the HTTP side would.
func installMachine(t *testing.T, reg *registry.Registry, id string, mac net.HardwareAddr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := reg.Register(ctx, registry.Registration{ID: id, MACs: []string{mac.String()}}); err != nil {
		t.Fatal(err)
	}
	for _, step := range []func(*machine.Machine) error{
		func(m *machine.Machine) error { return m.StartInstall("t", time.Now()) },
		func(m *machine.Machine) error { return m.MarkInstalled("t", time.Now()) },
	} {
		if _, err := reg.Update(ctx, id, step); err != nil {
			t.Fatal(err)
		}
	}
}

func TestServerExchanges(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reg := registry.New(cli, registry.Options{Prefix: prefix, Replica: "t", Cluster: config.Cluster{
		Static: config.Static{Subnet: netip.MustParsePrefix("10.50.0.0/24"),
			Range: config.Range{Start: addr("10.50.0.10"), End: addr("10.50.0.20")}},
	}})
	installedMAC := hw(0xff)
	installMachine(t, reg, "installed-1", installedMAC)
	installed := registry.NewInstalled()
	go reg.FollowInstalled(ctx, installed, testLogger(t))
	waitFor(t, 10*time.Second, "installed MAC known", func() bool { return installed.Has(installedMAC.String()) })

	// On lo nothing can be probed: the declined address below is found
	// in use (the probes themselves are tested in flood_test.go).
	srv, _ := leadingServer(t, cli, Options{Installed: installed, Prober: fakeProber{inUse: true}})
	if srv.ServerIP() != addr("127.0.0.1") {
		t.Fatalf("ServerIP %s", srv.ServerIP())
	}
	r := newRelay(t, srv)
	pool := loPool()
	sid := loopback

	var ack1 *dhcpv4.DHCPv4 // mac 1's lease, for the subtests that follow
	t.Run("discover gets an offer with a boot file", func(t *testing.T) {
		r.t = t
		req := discover(t, hw(1), "bios-pxe")
		offer := r.expect(req, dhcpv4.MessageTypeOffer)
		if !inRange(pool, offer.YourIPAddr) {
			t.Fatalf("offered %s, outside %s", offer.YourIPAddr, pool.Range)
		}
		if offer.TransactionID != req.TransactionID {
			t.Fatal("xid not echoed")
		}
		if got := offer.ServerIdentifier(); !got.Equal(sid) {
			t.Errorf("server id %s", got)
		}
		if got := net.IP(offer.SubnetMask()).String(); got != "255.255.255.0" {
			t.Errorf("netmask %s", got)
		}
		if got := offer.IPAddressLeaseTime(0); got != 10*time.Minute {
			t.Errorf("lease time %s", got)
		}
		if got := offer.Router(); len(got) != 1 || !got[0].Equal(loopback) {
			t.Errorf("router %v", got)
		}
		if got := offer.DNS(); len(got) != 1 || got[0].String() != "127.0.0.53" {
			t.Errorf("dns %v", got)
		}
		if !offer.ServerIPAddr.Equal(loopback) || offer.BootFileName != "undionly.kpxe" || offer.BootFileNameOption() != "undionly.kpxe" {
			t.Errorf("boot: siaddr %s file %q option 67 %q", offer.ServerIPAddr, offer.BootFileName, offer.BootFileNameOption())
		}
		if offer.Options.Has(optIPXE) {
			t.Error("option 175 sent to PXE firmware")
		}
		if _, _, ok := storedLease(t, cli, offer.YourIPAddr); ok {
			t.Error("an OFFER wrote a lease to etcd")
		}
	})
	t.Run("ipxe gets the script URL", func(t *testing.T) {
		r.t = t
		offer := r.expect(discover(t, hw(2), "ipxe-bios-rom"), dhcpv4.MessageTypeOffer)
		if offer.BootFileName != scriptURL || offer.BootFileNameOption() != scriptURL {
			t.Errorf("boot file %q / %q", offer.BootFileName, offer.BootFileNameOption())
		}
		if got := offer.GetOneOption(optIPXE); string(got) != "\xb0\x01\x01" {
			t.Errorf("option 175 = %x, want b00101", got)
		}
		if !offer.ServerIPAddr.IsUnspecified() {
			t.Errorf("siaddr %s for iPXE", offer.ServerIPAddr)
		}
	})
	t.Run("http boot gets a URL and HTTPClient", func(t *testing.T) {
		r.t = t
		offer := r.expect(discover(t, hw(3), "http-x64"), dhcpv4.MessageTypeOffer)
		if offer.BootFileNameOption() != "http://127.0.0.1:4081/tftp/ipxe.efi" || offer.ClassIdentifier() != "HTTPClient" {
			t.Errorf("boot file %q, vendor class %q", offer.BootFileNameOption(), offer.ClassIdentifier())
		}
	})
	t.Run("request is acknowledged and the lease is in etcd", func(t *testing.T) {
		r.t = t
		before := time.Now()
		offer, ack := r.lease(hw(1), "bios-pxe")
		ack1 = ack
		if !ack.ServerIdentifier().Equal(sid) || ack.IPAddressLeaseTime(0) != 10*time.Minute || ack.BootFileName != "undionly.kpxe" {
			t.Errorf("ACK: %s", ack.Summary())
		}
		l, _, ok := storedLease(t, cli, ack.YourIPAddr)
		if !ok {
			t.Fatalf("no lease in etcd at %sleases/%s", prefix, ack.YourIPAddr)
		}
		if l.MAC != hw(1).String() || l.IP.String() != offer.YourIPAddr.String() || l.Leader != "t" {
			t.Errorf("stored lease %+v", l)
		}
		if l.Expiry.Before(before.Add(10*time.Minute-time.Second)) || l.Expiry.After(time.Now().Add(10*time.Minute+time.Second)) {
			t.Errorf("lease expiry %s, want about 10m from now", l.Expiry)
		}
		// The same client asking again gets the same address.
		again := r.expect(discover(t, hw(1), "bios-pxe"), dhcpv4.MessageTypeOffer)
		if !again.YourIPAddr.Equal(ack.YourIPAddr) {
			t.Errorf("second DISCOVER offered %s, lease is %s", again.YourIPAddr, ack.YourIPAddr)
		}
	})
	if ack1 == nil {
		t.Fatal("no lease to continue with")
	}
	t.Run("renew is acknowledged", func(t *testing.T) {
		r.t = t
		_, rev0, _ := storedLease(t, cli, ack1.YourIPAddr)
		renew, err := dhcpv4.NewRenewFromAck(ack1)
		if err != nil {
			t.Fatal(err)
		}
		if renew.Options.Has(dhcpv4.OptionRequestedIPAddress) || renew.ClientIPAddr.IsUnspecified() {
			t.Fatalf("not a RENEW: %s", renew.Summary())
		}
		ack := r.expect(renew, dhcpv4.MessageTypeAck)
		if !ack.YourIPAddr.Equal(ack1.YourIPAddr) {
			t.Fatalf("renewed %s, lease is %s", ack.YourIPAddr, ack1.YourIPAddr)
		}
		l, rev, ok := storedLease(t, cli, ack1.YourIPAddr)
		if !ok || rev <= rev0 || l.MAC != hw(1).String() {
			t.Fatalf("lease after renew: %+v rev %d (was %d) %v", l, rev, rev0, ok)
		}
	})
	t.Run("request outside the pool is refused", func(t *testing.T) {
		r.t = t
		for _, ip := range []string{"127.0.0.200", "127.0.0.99", "10.9.9.9"} {
			nak := r.expect(requestFor(t, hw(4), net.ParseIP(ip), sid), dhcpv4.MessageTypeNak)
			if !nak.YourIPAddr.IsUnspecified() || !nak.ServerIdentifier().Equal(sid) {
				t.Errorf("NAK for %s: %s", ip, nak.Summary())
			}
			if _, _, ok := storedLease(t, cli, net.ParseIP(ip)); ok {
				t.Errorf("lease for %s written", ip)
			}
		}
	})
	t.Run("request for another client's address is refused", func(t *testing.T) {
		r.t = t
		r.expect(requestFor(t, hw(5), ack1.YourIPAddr, sid), dhcpv4.MessageTypeNak)
		// INIT-REBOOT from a client with no lease: silence (RFC 2131 4.3.2).
		r.expectNone(requestFor(t, hw(5), ack1.YourIPAddr, nil), "INIT-REBOOT of an unknown client")
		if l, _, ok := storedLease(t, cli, ack1.YourIPAddr); !ok || l.MAC != hw(1).String() {
			t.Fatalf("lease after the refused request: %+v %v", l, ok)
		}
	})
	t.Run("request to another server is ignored", func(t *testing.T) {
		r.t = t
		offer := r.expect(discover(t, hw(6), "bios-pxe"), dhcpv4.MessageTypeOffer)
		r.expectNone(requestFor(t, hw(6), offer.YourIPAddr, net.IPv4(127, 0, 0, 2)), "REQUEST for another server")
		if _, _, ok := storedLease(t, cli, offer.YourIPAddr); ok {
			t.Fatal("lease written for a client that chose another server")
		}
		// The offer's hold was dropped: another client may have it now.
		other := r.expect(discover(t, hw(7), "plain",
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr))), dhcpv4.MessageTypeOffer)
		if !other.YourIPAddr.Equal(offer.YourIPAddr) {
			t.Fatalf("address given up by %s not offered to %s: got %s", hw(6), hw(7), other.YourIPAddr)
		}
	})
	t.Run("release removes the lease", func(t *testing.T) {
		r.t = t
		_, ack := r.lease(hw(8), "plain")
		if _, _, ok := storedLease(t, cli, ack.YourIPAddr); !ok {
			t.Fatal("no lease")
		}
		rel, err := dhcpv4.NewReleaseFromACK(ack)
		if err != nil {
			t.Fatal(err)
		}
		relayed(rel)
		r.sendRaw(rel.ToBytes())
		waitFor(t, 5*time.Second, "released lease gone from etcd", func() bool {
			_, _, ok := storedLease(t, cli, ack.YourIPAddr)
			return !ok
		})
		// A RELEASE by another MAC for someone else's lease does nothing.
		forged, _ := dhcpv4.NewReleaseFromACK(ack1, dhcpv4.WithHwAddr(hw(9)))
		relayed(forged)
		r.sendRaw(forged.ToBytes())
		time.Sleep(200 * time.Millisecond)
		if _, _, ok := storedLease(t, cli, ack1.YourIPAddr); !ok {
			t.Fatal("a forged RELEASE removed another client's lease")
		}
	})
	t.Run("declined address is not offered again", func(t *testing.T) {
		r.t = t
		_, ack := r.lease(hw(10), "plain")
		declined := ack.YourIPAddr
		dec := newPacket(t, dhcpv4.WithHwAddr(hw(10)), dhcpv4.WithMessageType(dhcpv4.MessageTypeDecline),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(declined)), dhcpv4.WithOption(dhcpv4.OptServerIdentifier(sid)))
		relayed(dec)
		r.sendRaw(dec.ToBytes())
		waitFor(t, 5*time.Second, "declined lease gone from etcd", func() bool {
			_, _, ok := storedLease(t, cli, declined)
			return !ok
		})
		// The server takes the decline in memory a moment after etcd
		// shows the delete.
		dAddr, _ := netip.AddrFromSlice(declined.To4())
		waitFor(t, 5*time.Second, "the decline taken in memory", func() bool {
			pl := srv.term.Load().pools[0]
			pl.mu.Lock()
			defer pl.mu.Unlock()
			return !pl.freeFor(dAddr, hw(10).String(), time.Now())
		})
		for _, mac := range []net.HardwareAddr{hw(10), hw(11), hw(12)} {
			offer := r.expect(discover(t, mac, "plain", dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(declined))), dhcpv4.MessageTypeOffer)
			if offer.YourIPAddr.Equal(declined) {
				t.Fatalf("declined %s offered again to %s", declined, mac)
			}
		}
		r.expect(requestFor(t, hw(11), declined, sid), dhcpv4.MessageTypeNak)
	})
	t.Run("inform is acknowledged without an address", func(t *testing.T) {
		r.t = t
		inform, err := dhcpv4.NewInform(hw(13), net.IPv4(127, 0, 0, 20))
		if err != nil {
			t.Fatal(err)
		}
		ack := r.expect(inform, dhcpv4.MessageTypeAck)
		if !ack.YourIPAddr.IsUnspecified() || ack.Options.Has(dhcpv4.OptionIPAddressLeaseTime) || !ack.ServerIdentifier().Equal(sid) {
			t.Fatalf("INFORM answer: %s", ack.Summary())
		}
		if _, _, ok := storedLease(t, cli, net.IPv4(127, 0, 0, 20)); ok {
			t.Fatal("INFORM wrote a lease")
		}
	})
	t.Run("installed machines get no answer", func(t *testing.T) {
		r.t = t
		for _, kind := range []string{"bios-pxe", "edk2-pxe-x64", "http-x64", "ipxe-bios-rom", "ipxe-efi", "plain"} {
			d := relayed(discover(t, installedMAC, kind))
			r.sendRaw(d.ToBytes())
		}
		r.sendRaw(relayed(requestFor(t, installedMAC, net.IPv4(127, 0, 0, 140), sid)).ToBytes())
		r.noAnswerAtAll(silence, "installed machine")
	})
	t.Run("malformed packets get no answer and do no harm", func(t *testing.T) {
		r.t = t
		rng := rand.New(rand.NewPCG(1, 2))
		for i := 0; i < 50; i++ {
			b := make([]byte, rng.IntN(600))
			for j := range b {
				b[j] = byte(rng.Uint32())
			}
			r.sendRaw(b)
		}
		good := relayed(discover(t, hw(14), "bios-pxe")).ToBytes()
		r.sendRaw(good[:100])                         // truncated header
		r.sendRaw(good[:240])                         // header and cookie, no options
		r.sendRaw(good[:len(good)-10])                // options cut off
		r.sendRaw(append(good[:236:236], 1, 2, 3, 4)) // wrong magic cookie
		r.sendRaw([]byte{})
		reply := relayed(discover(t, hw(14), "bios-pxe"))
		reply.OpCode = dhcpv4.OpcodeBootReply // a server's packet, not a client's
		r.sendRaw(reply.ToBytes())
		long := relayed(discover(t, hw(14), "bios-pxe"))
		long.ClientHWAddr = make(net.HardwareAddr, 16) // not Ethernet
		r.sendRaw(long.ToBytes())
		r.noAnswerAtAll(silence, "malformed packets")
		// Still working.
		offer := r.expect(discover(t, hw(15), "bios-pxe"), dhcpv4.MessageTypeOffer)
		if !inRange(pool, offer.YourIPAddr) {
			t.Fatalf("after garbage: %s", offer.Summary())
		}
	})
}

// With boot.answer_installed_ipxe, an installed machine's iPXE gets the
// script URL (which hands it a local-boot script); its firmware PXE is
// still ignored, so it boots from disk.
func TestServerAnswersInstalledIPXE(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reg := registry.New(cli, registry.Options{Prefix: prefix, Replica: "t", Cluster: config.Cluster{
		Static: config.Static{Subnet: netip.MustParsePrefix("10.50.0.0/24"),
			Range: config.Range{Start: addr("10.50.0.10"), End: addr("10.50.0.20")}},
	}})
	mac := hw(0xfe)
	installMachine(t, reg, "installed-2", mac)
	installed := registry.NewInstalled()
	go reg.FollowInstalled(ctx, installed, testLogger(t))
	srv, _ := leadingServer(t, cli, Options{Installed: installed, Policy: Policy{
		BIOS: "undionly.kpxe", EFI64: "ipxe.efi", ScriptURL: scriptURL, AnswerInstalledIPXE: true}})
	if !installed.Has(mac.String()) {
		t.Fatal("the leader answers before it knows the installed machines")
	}
	r := newRelay(t, srv)
	for _, kind := range []string{"ipxe-bios-rom", "ipxe-efi"} {
		offer := r.expect(discover(t, mac, kind), dhcpv4.MessageTypeOffer)
		if offer.BootFileNameOption() != scriptURL {
			t.Fatalf("%s of an installed machine: boot file %q", kind, offer.BootFileNameOption())
		}
	}
	for _, kind := range []string{"bios-pxe", "edk2-pxe-x64", "http-x64", "plain"} {
		r.sendRaw(relayed(discover(t, mac, kind)).ToBytes())
	}
	r.noAnswerAtAll(silence, "firmware of an installed machine")
}

func TestServerExhaustedPoolIsSilent(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	small := loPool()
	small.Range = config.Range{Start: addr("127.0.0.200"), End: addr("127.0.0.207")} // eight, a /29
	srv, _ := leadingServer(t, cli, Options{Pools: []config.Pool{small}})
	r := newRelay(t, srv)
	seen := map[string]bool{}
	for i := 0; i < 8; i++ {
		_, ack := r.lease(hw(i), "bios-pxe")
		if !inRange(small, ack.YourIPAddr) || seen[ack.YourIPAddr.String()] {
			t.Fatalf("client %d: %s", i, ack.YourIPAddr)
		}
		seen[ack.YourIPAddr.String()] = true
	}
	r.expectNone(discover(t, hw(8), "bios-pxe"), "DISCOVER in an exhausted pool")
	if n := leaseCount(t, cli); n != 8 {
		t.Fatalf("%d leases in etcd, want 8", n)
	}
	// The clients that have leases keep being answered.
	if offer := r.expect(discover(t, hw(3), "bios-pxe"), dhcpv4.MessageTypeOffer); !seen[offer.YourIPAddr.String()] {
		t.Fatalf("lease holder got %s", offer.YourIPAddr)
	}
}

// electionKeys returns the keys of the candidates, oldest first.
func electionKeys(t *testing.T, cli *clientv3.Client) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, prefix+"election", clientv3.WithPrefix(),
		clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend))
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, kv := range resp.Kvs {
		keys = append(keys, string(kv.Key))
	}
	return keys
}

// TestServerFencing deletes the leader's election key behind its back
// (etcdctl del): its session lives on, but its term is over. The REQUEST
// that follows gets no ACK and writes no lease, whichever the server
// notices first (its fenced lease write refused by etcd, or the election
// watching its key); it stops answering, then campaigns again and answers
// under a new term.
func TestServerFencing(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	srv, _ := leadingServer(t, cli, Options{})
	r := newRelay(t, srv)
	_, ack := r.lease(hw(1), "bios-pxe")
	if _, _, ok := storedLease(t, cli, ack.YourIPAddr); !ok {
		t.Fatal("no lease before the fence test")
	}
	offer := r.expect(discover(t, hw(2), "bios-pxe"), dhcpv4.MessageTypeOffer)
	req, err := dhcpv4.NewRequestFromOffer(offer, firmware["bios-pxe"]...)
	if err != nil {
		t.Fatal(err)
	}
	keys := electionKeys(t, cli)
	if len(keys) != 1 {
		t.Fatalf("election keys %v, want the leader's only", keys)
	}
	old, _ := cli.Get(context.Background(), keys[0])

	// Watch Leading() from before the deletion: it must turn false.
	stoppedLeading := make(chan struct{})
	go func() {
		deadline := time.Now().Add(3 * time.Second)
		for time.Now().Before(deadline) {
			if !srv.Leading() {
				close(stoppedLeading)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	if _, err := cli.Delete(context.Background(), keys[0]); err != nil {
		t.Fatal(err)
	}
	// The REQUEST right away: the term has just ended, and the next one
	// cannot have started yet (the election waits a second before
	// campaigning again).
	relayed(req)
	r.sendRaw(req.ToBytes())
	if resp := r.receive(req.TransactionID, 500*time.Millisecond); resp != nil {
		t.Fatalf("a deposed leader answered: %s", resp.Summary())
	}
	if _, _, ok := storedLease(t, cli, offer.YourIPAddr); ok {
		t.Fatal("a deposed leader wrote a lease")
	}
	if n := leaseCount(t, cli); n != 1 {
		t.Fatalf("%d leases in etcd, want the one from before", n)
	}
	select {
	case <-stoppedLeading:
	case <-time.After(3 * time.Second):
		t.Fatal("srv.Leading() stayed true after the leader key was deleted")
	}

	// A new term: the server answers again, with what it had.
	waitFor(t, 10*time.Second, "server leads again", srv.Leading)
	keys = electionKeys(t, cli)
	if now, _ := cli.Get(context.Background(), keys[0]); len(keys) != 1 || now.Kvs[0].CreateRevision <= old.Kvs[0].CreateRevision {
		t.Fatalf("election keys after the new campaign: %v", keys)
	}
	if again := r.expect(discover(t, hw(1), "bios-pxe"), dhcpv4.MessageTypeOffer); !again.YourIPAddr.Equal(ack.YourIPAddr) {
		t.Fatalf("after the new term %s got %s, its lease is %s", hw(1), again.YourIPAddr, ack.YourIPAddr)
	}
	_, ack2 := r.lease(hw(2), "bios-pxe")
	if l, _, ok := storedLease(t, cli, ack2.YourIPAddr); !ok || l.MAC != hw(2).String() {
		t.Fatalf("lease in the new term: %+v %v", l, ok)
	}
}

// TestServerStaleFenceRefused is the fencing path without the race above:
// the server holds a term etcd no longer knows (as a leader frozen past
// its session would), so its lease write is refused, it sends no ACK and
// stops answering at once.
func TestServerStaleFenceRefused(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	srv, _ := leadingServer(t, cli, Options{})
	r := newRelay(t, srv)
	offer := r.expect(discover(t, hw(1), "bios-pxe"), dhcpv4.MessageTypeOffer)

	cur := srv.term.Load()
	stale := &term{fence: election.Fence{Key: cur.fence.Key, Rev: cur.fence.Rev - 1}, pools: cur.pools}
	srv.term.Store(stale)
	req, err := dhcpv4.NewRequestFromOffer(offer, firmware["bios-pxe"]...)
	if err != nil {
		t.Fatal(err)
	}
	r.expectNone(req, "REQUEST under a stale fence")
	if n := leaseCount(t, cli); n != 0 {
		t.Fatalf("%d leases written under a stale fence", n)
	}
	// It stops once the refused transaction has returned, which a slow
	// etcd may make later than the silence above.
	waitFor(t, 5*time.Second, "leading stopped after etcd refused the fenced write", func() bool { return !srv.Leading() })
	r.expectNone(discover(t, hw(2), "bios-pxe"), "DISCOVER after the refused write")
}

func TestServerFollowerSilentAndHandover(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	a, stopA := leadingServer(t, cli, Options{Replica: "a"})
	ra := newRelay(t, a)
	leases := map[string]string{} // mac → ip
	for i := 0; i < 4; i++ {
		_, ack := ra.lease(hw(i), []string{"bios-pxe", "ipxe-efi", "plain", "edk2-pxe-x64"}[i])
		leases[hw(i).String()] = ack.YourIPAddr.String()
	}

	// b campaigns but a leads: b says nothing, whatever it is asked.
	b := startServer(t, cli, Options{Replica: "b"})
	_, stopB := campaign(t, cli, b, "b")
	rb := newRelay(t, b)
	waitFor(t, 5*time.Second, "b campaigns", func() bool { return len(electionKeys(t, cli)) == 2 })
	if leader, err := election.Leader(context.Background(), cli, state.Keys{Prefix: prefix}); err != nil || leader != "a" {
		t.Fatalf("leader %q, %v; want a", leader, err)
	}
	rb.sendRaw(relayed(discover(t, hw(10), "bios-pxe")).ToBytes())
	rb.sendRaw(relayed(requestFor(t, hw(0), net.ParseIP(leases[hw(0).String()]), loopback)).ToBytes())
	rb.sendRaw(relayed(requestFor(t, hw(11), net.IPv4(127, 0, 0, 130), nil)).ToBytes())
	rb.noAnswerAtAll(silence, "follower")
	if b.Leading() {
		t.Fatal("follower thinks it leads")
	}

	// a stops: b takes over, loads the leases and gives every MAC its
	// own address back.
	stopped := time.Now()
	stopA()
	if a.Leading() {
		t.Fatal("a still answers after its campaign ended")
	}
	waitFor(t, 5*time.Second, "b leads", b.Leading)
	t.Logf("takeover in %s", time.Since(stopped).Round(time.Millisecond))
	ra.expectNone(discover(t, hw(12), "bios-pxe"), "DISCOVER to the old leader")
	for i := 0; i < 4; i++ {
		mac := hw(i)
		offer := rb.expect(discover(t, mac, "plain"), dhcpv4.MessageTypeOffer)
		if offer.YourIPAddr.String() != leases[mac.String()] {
			t.Errorf("%s: new leader offered %s, its lease is %s", mac, offer.YourIPAddr, leases[mac.String()])
		}
	}
	// INIT-REBOOT: a client that kept its address through the handover.
	rb.expect(requestFor(t, hw(0), net.ParseIP(leases[hw(0).String()]), nil), dhcpv4.MessageTypeAck)
	// Nobody else gets a leased address.
	_, ack := rb.lease(hw(20), "plain")
	for mac, ip := range leases {
		if ack.YourIPAddr.String() == ip {
			t.Fatalf("new client got %s, leased to %s", ip, mac)
		}
	}
	if l, _, ok := storedLease(t, cli, ack.YourIPAddr); !ok || l.Leader != "b" {
		t.Fatalf("lease granted by b: %+v %v", l, ok)
	}
	leases[hw(20).String()] = ack.YourIPAddr.String()

	// b stops; a new election for a (same server) leads again and knows
	// the lease b granted.
	stopB()
	campaign(t, cli, a, "a")
	waitFor(t, 10*time.Second, "a leads again", a.Leading)
	for mac, ip := range leases {
		hwaddr, _ := net.ParseMAC(mac)
		offer := ra.expect(discover(t, hwaddr, "plain"), dhcpv4.MessageTypeOffer)
		if offer.YourIPAddr.String() != ip {
			t.Errorf("%s: offered %s after the second handover, lease is %s", mac, offer.YourIPAddr, ip)
		}
	}
}

// A client's hostname (option 12) is its own text: the lease keeps it
// escaped, so that mayuctl leases, etcdctl and logs never print its raw
// bytes (an ESC sequence would drive the operator's terminal).
func TestServerStoresHostnameEscaped(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	srv, _ := leadingServer(t, cli, Options{})
	r := newRelay(t, srv)
	const evil = "node\x1b]0;pwned\x07\x1b[2J" + "-and-a-very-long-tail-that-goes-on-and-on-past-what-any-dns-label-holds"
	mac := hw(0x31)
	offer := r.expect(discover(t, mac, "bios-pxe"), dhcpv4.MessageTypeOffer)
	req, err := dhcpv4.NewRequestFromOffer(offer, append(firmware["bios-pxe"], dhcpv4.WithOption(dhcpv4.OptHostName(evil)))...)
	if err != nil {
		t.Fatal(err)
	}
	ack := r.expect(req, dhcpv4.MessageTypeAck)
	l, _, ok := storedLease(t, cli, ack.YourIPAddr)
	if !ok {
		t.Fatal("no lease stored")
	}
	if strings.ContainsAny(l.Hostname, "\x1b\x07") || !strings.HasPrefix(l.Hostname, `node\x1b]0;pwned\x07\x1b[2J-and`) ||
		len(l.Hostname) > lease.MaxHostname+3 {
		t.Fatalf("stored hostname %q", l.Hostname)
	}
}

// A corrupt record of an installed machine does not send it back to PXE:
// the leader stays silent to its MACs until the record is deleted.
func TestServerSilentToCorruptInstalledRecord(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reg := registry.New(cli, registry.Options{Prefix: prefix, Replica: "t", Cluster: config.Cluster{
		Static: config.Static{Subnet: netip.MustParsePrefix("10.50.0.0/24"),
			Range: config.Range{Start: addr("10.50.0.10"), End: addr("10.50.0.20")}},
	}})
	mac := hw(0xfd)
	installMachine(t, reg, "installed-3", mac)
	if _, err := cli.Put(ctx, prefix+"machines/installed-3", `{"id":"installed-3","state":`); err != nil {
		t.Fatal(err)
	}
	installed := registry.NewInstalled()
	go reg.FollowInstalled(ctx, installed, testLogger(t))
	srv, _ := leadingServer(t, cli, Options{Installed: installed})
	r := newRelay(t, srv)
	r.expectNone(discover(t, mac, "bios-pxe"), "PXE firmware of an installed machine with a corrupt record")
	if _, err := cli.Delete(ctx, prefix+"machines/installed-3"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "deleted record un-silenced", func() bool { return !installed.Has(mac.String()) })
	r.expect(discover(t, mac, "bios-pxe"), dhcpv4.MessageTypeOffer)
}
