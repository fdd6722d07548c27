package dhcp

// Benchmarks of the DHCP hot path, run by `make bench` (bench/README.md):
// the boot decision, the lease table, answering a DISCOVER, and the one
// durable write of an exchange, a fenced lease transaction against a real
// embedded etcd (fsync on), alone and with as many in flight as the server
// has workers.

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/state"
)

var benchPolicy = Policy{BIOS: "undionly.kpxe", EFI64: "ipxe.efi", ScriptURL: scriptURL, HTTPBase: "http://127.0.0.1:4081/tftp/"}

// benchPool has ~65000 addresses like the /16 perfdhcp is benchmarked
// against, on loopback: the benchmarks relay from 127.0.0.1, so the pool
// is chosen by that giaddr and the answers go back to the relay's socket.
func benchPool() config.Pool {
	return config.Pool{
		Subnet:    netip.MustParsePrefix("127.0.0.0/8"),
		Range:     config.Range{Start: addr("127.1.0.1"), End: addr("127.1.255.250")},
		Router:    addr("127.0.0.1"),
		DNS:       []netip.Addr{addr("127.0.0.53")},
		LeaseTime: time.Hour,
	}
}

// benchIP is the i-th address of benchPool.
func benchIP(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{127, 1, byte(i / 250), byte(1 + i%250)})
}

func benchMAC(i int) net.HardwareAddr {
	return net.HardwareAddr{0x52, 0x54, 0x00, byte(i >> 16), byte(i >> 8), byte(i)}
}

// pxeDiscover is a relayed BIOS PXE DISCOVER, as bytes on the wire.
func pxeDiscover(b *testing.B, mac net.HardwareAddr, giaddr net.IP) []byte {
	b.Helper()
	d, err := dhcpv4.NewDiscovery(mac,
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)))
	if err != nil {
		b.Fatal(err)
	}
	d.GatewayIPAddr, d.HopCount = giaddr, 1
	return d.ToBytes()
}

// BenchmarkDecide is the boot decision alone.
func BenchmarkDecide(b *testing.B) {
	c := Client{Firmware: PXE, Arch: iana.EFI_X86_64, HasArch: true}
	b.ReportAllocs()
	for b.Loop() {
		if d := Decide(c, false, benchPolicy); d.BootFile != "ipxe.efi" {
			b.Fatal(d)
		}
	}
}

// BenchmarkClassifyDecide parses a PXE DISCOVER and decides: what every
// packet costs before the lease table.
func BenchmarkClassifyDecide(b *testing.B) {
	data := pxeDiscover(b, benchMAC(1), loopback)
	b.ReportAllocs()
	for b.Loop() {
		req, err := dhcpv4.FromBytes(data)
		if err != nil {
			b.Fatal(err)
		}
		if d := Decide(Classify(req), false, benchPolicy); d.BootFile != "undionly.kpxe" {
			b.Fatal(d)
		}
	}
}

// BenchmarkPoolOfferCommit is the lease table's side of one exchange:
// offer (DISCOVER), reserve (REQUEST) and commit (after the etcd write),
// for a stream of new clients in a /16 (wrapping round after 60000).
func BenchmarkPoolOfferCommit(b *testing.B) {
	p := newPool(benchPool())
	macs := make([]string, 60000)
	for i := range macs {
		macs[i] = benchMAC(i).String()
	}
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		mac := macs[i%len(macs)]
		i++
		ip, err := p.offer(mac, netip.Addr{}, now)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.reserve(mac, ip, now); err != nil {
			b.Fatal(err)
		}
		p.commit(lease.Lease{IP: ip, MAC: mac, Expiry: now.Add(time.Hour), Leader: "bench"})
	}
}

// benchServer is a server leading with fence f, answering relayed packets
// to a sink socket on loopback; no etcd unless f is used for a REQUEST.
func benchServer(b *testing.B, st LeaseStore, f election.Fence) (*Server, *net.UDPConn) {
	b.Helper()
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback})
	if err != nil {
		b.Fatal(err)
	}
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback})
	if err != nil {
		b.Fatal(err)
	}
	sink.SetReadBuffer(4 << 20)
	done := make(chan struct{})
	go func() { // drain the answers
		defer close(done)
		buf := make([]byte, 2048)
		for {
			if _, _, err := sink.ReadFromUDP(buf); err != nil {
				return
			}
		}
	}()
	b.Cleanup(func() {
		conn.Close()
		sink.Close()
		<-done
	})
	// Every client is new and comes from one relay, as with perfdhcp: a
	// budget above any rate measured, as the benchmarks' config has.
	s := New(Options{Policy: benchPolicy, Replica: "bench", Pools: []config.Pool{benchPool()}, Leases: st,
		Limits: config.DHCP{NewClientsPerSecond: 1e9, NewClientsBurst: 1 << 30},
		Log:    slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))})
	s.conn, s.serverIP, s.o.Advertise = conn, addr("127.0.0.1"), addr("127.0.0.1")
	s.term.Store(&term{fence: f, pools: []*pool{newPool(benchPool())}})
	return s, sink
}

// BenchmarkHandleDiscover is one DISCOVER through the server: parse,
// classify, decide, offer from the lease table, build and send the OFFER.
func BenchmarkHandleDiscover(b *testing.B) {
	s, sink := benchServer(b, nil, election.Fence{})
	giaddr := loopback
	peer := sink.LocalAddr().(*net.UDPAddr)
	pkts := make([][]byte, 4096)
	for i := range pkts {
		pkts[i] = pxeDiscover(b, benchMAC(i), giaddr)
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		s.handle(ctx, packet{data: pkts[i%len(pkts)], peer: peer})
		i++
	}
}

// benchEtcd starts an embedded etcd and returns a lease store on it and a
// fence that holds (a key standing for the leader key).
func benchEtcd(b *testing.B) (*lease.Store, election.Fence) {
	b.Helper()
	cli := etcdtest.Start(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Put(ctx, prefix+"election/bench", "bench")
	if err != nil {
		b.Fatal(err)
	}
	f := election.Fence{Key: prefix + "election/bench", Rev: resp.Header.Revision}
	return lease.NewStore(cli, state.Keys{Prefix: prefix}, 10*time.Second), f
}

// allKnown says every MAC is a registered machine's.
type allKnown struct{}

func (allKnown) Has(string) bool { return true }

// BenchmarkHandleRequest is one REQUEST through the server up to the ACK
// on the wire, including the fenced etcd write, with 64 in flight as under
// load: the whole cost of the second half of an exchange.
func BenchmarkHandleRequest(b *testing.B) {
	st, f := benchEtcd(b)
	s, sink := benchServer(b, st, f)
	// The REQUESTs come without their DISCOVERs: as registered machines,
	// which may (an unknown client without an offer gets a NAK).
	s.o.Known = allKnown{}
	peer := sink.LocalAddr().(*net.UDPAddr)
	const clients = 60000
	pkts := make([][]byte, clients)
	for i := range pkts {
		mac := benchMAC(i)
		ip := benchIP(i)
		req, err := dhcpv4.New(dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
			dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(ip.AsSlice())),
			dhcpv4.WithOption(dhcpv4.OptServerIdentifier(loopback)),
			dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
			dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)))
		if err != nil {
			b.Fatal(err)
		}
		req.GatewayIPAddr, req.HopCount = loopback, 1
		pkts[i] = req.ToBytes()
	}
	ctx := context.Background()
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32) // 64 goroutines with GOMAXPROCS 2, as the server's 64 workers
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1) - 1
			s.handle(ctx, packet{data: pkts[i%clients], peer: peer})
		}
	})
	b.StopTimer()
	if s.term.Load() == nil {
		b.Fatal("the server lost its term: a lease write was refused")
	}
	// Every REQUEST was a new lease (or a renewal once the clients wrap
	// round): all of them are in etcd.
	stored, err := st.List(ctx)
	if err != nil {
		b.Fatal(err)
	}
	if want := min(b.N, clients); len(stored) < want {
		b.Fatalf("%d leases in etcd after %d REQUESTs", len(stored), b.N)
	}
}
