package dhcp

// Benchmarks at fleet scale (bench/fleet.sh, make bench; skipped unless
// MAYU_FLEET_BENCH=1, so that the run of every Go benchmark stays short):
// a new leader with FLEET_LEASES (default 100,000) leases in a real etcd,
// from winning to its first answer, and the DISCOVER path with that many
// leases in the table against none.

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/internal/fleet"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/state"
)

func fleetLeases(b *testing.B) int {
	if os.Getenv("MAYU_FLEET_BENCH") != "1" {
		b.Skip("a fleet benchmark: bench/fleet.sh runs it (MAYU_FLEET_BENCH=1)")
	}
	if v := os.Getenv("FLEET_LEASES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatalf("FLEET_LEASES=%q", v)
		}
		return n
	}
	return 100000
}

// fleetPool holds n leases from 127.1.0.1 and room for the new clients of
// a benchmark, on loopback (the benchmarks relay from 127.0.0.1).
func fleetPool(n int) config.Pool {
	p := benchPool()
	p.Range = config.Range{Start: addr("127.1.0.1"), End: fleetIP(n + 200000)}
	return p
}

// fleetIP is the i-th address from 127.1.0.1.
func fleetIP(i int) netip.Addr {
	a := addrNum(addr("127.1.0.1")) + uint32(i)
	return netip.AddrFrom4([4]byte{byte(a >> 24), byte(a >> 16), byte(a >> 8), byte(a)})
}

func addrNum(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

// BenchmarkFleetLeaderReady is a new leader with FLEET_LEASES leases in
// etcd: from the moment it won (Lead called) to its first OFFER on the
// wire. cold: it reads every lease from etcd (a replica without the
// followed copy); warm: as a replica runs, the lease store follows the
// leases all along (lease.Store.Follow) and Load only catches up.
// Reported: ms to the first answer, and the heap the loaded lease table
// takes per lease.
func BenchmarkFleetLeaderReady(b *testing.B) {
	n := fleetLeases(b)
	cli := etcdtest.Start(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	pool := fleetPool(n)
	start := time.Now()
	if err := fleet.Fill(ctx, cli, fleet.Options{Prefix: prefix, Cluster: fleet.Cluster(1), Leases: n,
		Pool: config.Range{Start: pool.Range.Start, End: fleetIP(n - 1)}}); err != nil {
		b.Fatal(err)
	}
	b.Logf("filled %d leases in %v", n, time.Since(start).Round(time.Millisecond))
	resp, err := cli.Put(ctx, prefix+"election/bench", "bench")
	if err != nil {
		b.Fatal(err)
	}
	f := election.Fence{Key: prefix + "election/bench", Rev: resp.Header.Revision}
	for _, warm := range []bool{false, true} {
		name := "cold"
		if warm {
			name = "warm"
		}
		b.Run(name, func(b *testing.B) { leaderReady(b, ctx, cli, pool, n, f, warm) })
	}
}

func leaderReady(b *testing.B, ctx context.Context, cli *clientv3.Client, pool config.Pool, n int, f election.Fence, warm bool) {
	st := lease.NewStore(cli, state.Keys{Prefix: prefix}, 30*time.Second)
	if warm {
		fctx, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); st.Follow(fctx, nil) }()
		defer func() { stop(); <-done }()
		// Followed for a while before it wins, as a replica is.
		if _, _, err := st.Load(ctx); err != nil {
			b.Fatal(err)
		}
		time.Sleep(time.Second)
	}

	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback})
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: loopback})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	peer := sink.LocalAddr().(*net.UDPAddr)
	buf := make([]byte, 2048)
	var total time.Duration
	var perLease float64
	i := 0
	for b.Loop() {
		s := New(Options{Policy: benchPolicy, Replica: "bench", Pools: []config.Pool{pool}, Leases: st,
			Limits: config.DHCP{NewClientsPerSecond: 1e9, NewClientsBurst: 1 << 30},
			Log:    slog.New(slog.NewTextHandler(io.Discard, nil))})
		s.conn, s.serverIP, s.o.Advertise = conn, addr("127.0.0.1"), addr("127.0.0.1")
		pkt := pxeDiscover(b, benchMAC(1<<20+i), loopback)
		i++
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		lctx, stop := context.WithCancel(ctx)
		led := make(chan struct{})
		won := time.Now()
		go func() { defer close(led); s.Lead(lctx, f) }()
		for !s.Leading() {
			time.Sleep(100 * time.Microsecond)
		}
		s.handle(ctx, packet{data: pkt, peer: peer})
		sink.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, _, err := sink.ReadFromUDP(buf); err != nil {
			b.Fatalf("no answer: %v", err)
		}
		total += time.Since(won)
		b.StopTimer()
		runtime.GC()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		perLease = float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / float64(n)
		stop()
		<-led
		runtime.KeepAlive(s)
		// The term over, the copy is loaded again (Store.Follow): a
		// replica follows for a while before it wins again.
		for warm && !st.Followed() {
			time.Sleep(10 * time.Millisecond)
		}
		if warm {
			time.Sleep(200 * time.Millisecond)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-to-first-answer")
	b.ReportMetric(perLease, "heap-bytes/lease")
}

// BenchmarkFleetHandleDiscover is BenchmarkHandleDiscover with
// FLEET_LEASES leases in the table and with none, the two servers
// alternating packet by packet so that a busy machine slows both alike.
// Reported: the rate of each and their ratio (target at least 0.9).
func BenchmarkFleetHandleDiscover(b *testing.B) {
	n := fleetLeases(b)
	var servers [2]*Server
	var peers [2]*net.UDPAddr
	for j, leases := range []int{0, n} {
		s, sink := benchServer(b, nil, election.Fence{})
		p := newPool(fleetPool(n))
		expiry := time.Now().Add(24 * time.Hour)
		for i := 0; i < leases; i++ {
			p.load(lease.Lease{IP: fleetIP(i), MAC: fleet.MAC(i), Expiry: expiry, Leader: "bench"})
		}
		s.term.Store(&term{pools: []*pool{p}})
		servers[j], peers[j] = s, sink.LocalAddr().(*net.UDPAddr)
	}
	pkts := make([][]byte, 4096)
	for i := range pkts {
		pkts[i] = pxeDiscover(b, benchMAC(1<<20+i), loopback)
	}
	ctx := context.Background()
	// The first offer steps a pool's cursor past the leases held: once,
	// not per packet.
	for j, s := range servers {
		s.handle(ctx, packet{data: pkts[0], peer: peers[j]})
	}
	var took [2]time.Duration
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		for j, s := range servers {
			start := time.Now()
			s.handle(ctx, packet{data: pkts[i%len(pkts)], peer: peers[j]})
			took[j] += time.Since(start)
		}
		i++
	}
	rate := func(d time.Duration) float64 { return float64(b.N) / d.Seconds() }
	b.ReportMetric(rate(took[0]), "discovers/s-none")
	b.ReportMetric(rate(took[1]), "discovers/s-fleet")
	b.ReportMetric(float64(took[0])/float64(took[1]), "rate-ratio")
}
