package dhcp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/server4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/hostile"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/state"
)

// LeaseStore makes leases durable. Every write carries the fence of the
// term it is made in and is refused (lease.ErrDeposed) once that term is
// over. lease.Store keeps them in etcd.
type LeaseStore interface {
	// Load returns every lease, and the corrupt ones it skipped.
	Load(ctx context.Context) ([]lease.Lease, []error, error)
	// Put returns once l is durable, or refused.
	Put(ctx context.Context, f election.Fence, l lease.Lease) error
	Remove(ctx context.Context, f election.Fence, ip netip.Addr) error
}

// leadAware is a LeaseStore that follows the leases for a later term
// (lease.Store): told when this replica leads, it stops following, since
// the leader's own table is the truth then.
type leadAware interface{ Leading(bool) }

// InstalledMACs is the set of MACs of installed or running machines, which
// DHCP stays silent to; registry.Installed follows it in etcd.
type InstalledMACs interface {
	Has(mac string) bool
	// Ready is closed once the set was first loaded: until then a leader
	// does not answer, since it cannot tell whom to ignore.
	Ready() <-chan struct{}
}

// KnownMACs is the set of MACs of registered machines (any state):
// registry.Known follows it in etcd. Their clients are not charged against
// the new-client budget and may ask for an address without an offer.
type KnownMACs interface {
	Has(mac string) bool
}

// Options configure a Server.
type Options struct {
	Interface string // where DHCP listens (SO_BINDTODEVICE)
	Port      int    // 67 in production
	// BootServerPort is where the leader answers the PXE boot-server
	// requests of clients in proxy pools (4011 in production); opened
	// only if a pool is in proxy mode. 0: not at all.
	BootServerPort int
	// ServerIP is the server identifier: this replica's own address on the
	// interface. Zero means the interface's first IPv4 address.
	ServerIP  netip.Addr
	Advertise netip.Addr // next-server: where TFTP and HTTP are reached
	Pools     []config.Pool
	Policy    Policy
	Replica   string

	Leases    LeaseStore
	Installed InstalledMACs // MACs to stay silent to; nil: none
	Known     KnownMACs     // MACs of registered machines; nil: none

	// Limits are cluster.dhcp: the relay list, the new-client budget and
	// the decline probes. Zero values take config's defaults.
	Limits config.DHCP
	// Prober checks declined addresses; nil: ARP and ICMP from Interface.
	Prober Prober

	Workers int // concurrent packet handlers; default 64
	Queue   int // packets waiting for a worker; default 1024
	// PendingACKs bounds the REQUESTs whose lease is being made durable
	// aside from the workers, once half the workers wait for theirs;
	// default 1024. Beyond it a worker waits itself.
	PendingACKs int
	Log         *slog.Logger
	// Registerer is where the server's metrics go (nil: nowhere).
	Registerer prometheus.Registerer
}

// Server answers DHCP while this replica leads.
type Server struct {
	o        Options
	serverIP netip.Addr
	conn     *net.UDPConn
	bsConn   *net.UDPConn // the boot-server port (4011), for proxy pools; nil: none
	metrics  *metrics

	// term is set while leading: the fence and the leases it loaded.
	term atomic.Pointer[term]

	dropped atomic.Uint64 // packets dropped because the queue was full

	relays  map[netip.Addr]bool // cluster.dhcp.relays; empty: any
	budget  *budget
	prober  Prober
	opened  *netProber    // the prober Listen opened, closed by Serve
	probes  chan struct{} // a slot per decline probe in flight
	probing sync.WaitGroup
	acking  chan struct{} // a slot per ACK waiting aside for its lease (aside)
	acks    sync.WaitGroup
	waiting atomic.Int32 // workers waiting for a lease themselves (aside)
}

type term struct {
	fence election.Fence
	pools []*pool
}

type packet struct {
	data []byte
	peer *net.UDPAddr
	// bootServer: the packet came to the boot-server port (4011).
	bootServer bool
	// aside: its ACK may wait for the lease aside from the worker
	// (Serve's packets); false, handle returns after the ACK (tests).
	aside bool
}

// New prepares a server; Serve opens the socket.
func New(o Options) *Server {
	if o.Workers <= 0 {
		o.Workers = 64
	}
	if o.Queue <= 0 {
		o.Queue = 1024
	}
	if o.PendingACKs <= 0 {
		o.PendingACKs = 1024
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	l := &o.Limits
	if l.NewClientsPerSecond <= 0 {
		l.NewClientsPerSecond = 20
	}
	if l.NewClientsBurst <= 0 {
		l.NewClientsBurst = 200
	}
	if l.DeclineProbeTimeout <= 0 {
		l.DeclineProbeTimeout = time.Second
	}
	if l.DeclineProbes <= 0 {
		l.DeclineProbes = 16
	}
	if l.DeclineQuarantine <= 0 {
		l.DeclineQuarantine = 10 * time.Minute
	}
	s := &Server{o: o, budget: newBudget(l.NewClientsPerSecond, l.NewClientsBurst), prober: o.Prober,
		probes: make(chan struct{}, l.DeclineProbes), acking: make(chan struct{}, o.PendingACKs)}
	if len(l.Relays) > 0 {
		s.relays = map[netip.Addr]bool{}
		for _, a := range l.Relays {
			s.relays[a] = true
		}
	}
	s.metrics = newMetrics(o.Registerer, s)
	return s
}

// Listen opens the DHCP socket on the interface.
func (s *Server) Listen() error {
	s.serverIP = s.o.ServerIP
	if !s.serverIP.IsValid() {
		ip, err := interfaceIPv4(s.o.Interface, s.o.Pools)
		if err != nil {
			return err
		}
		s.serverIP = ip
	}
	conn, err := server4.NewIPv4UDPConn(s.o.Interface, &net.UDPAddr{Port: s.o.Port})
	if err != nil {
		return fmt.Errorf("node.interface %s, node.ports.dhcp %d: %w", s.o.Interface, s.o.Port, err)
	}
	s.conn = conn
	if w := BootServerWarning(s.o.Pools, s.o.BootServerPort); w != "" {
		s.o.Log.Warn(w)
	}
	if s.o.BootServerPort > 0 && hasProxyPool(s.o.Pools) {
		bs, err := server4.NewIPv4UDPConn(s.o.Interface, &net.UDPAddr{Port: s.o.BootServerPort})
		if err != nil {
			conn.Close()
			return fmt.Errorf("node.interface %s, node.ports.proxy_dhcp %d: %w", s.o.Interface, s.o.BootServerPort, err)
		}
		s.bsConn = bs
	}
	if s.prober == nil {
		// Opened here, with the DHCP socket: in the same network
		// namespace, and once for every probe.
		s.opened = openProber(s.o.Interface, s.serverIP)
		s.prober = s.opened
	}
	return nil
}

// Addr is the bound socket address.
func (s *Server) Addr() net.Addr { return s.conn.LocalAddr() }

// BootServerAddr is the bound boot-server (4011) socket address, nil if
// none is open.
func (s *Server) BootServerAddr() net.Addr {
	if s.bsConn == nil {
		return nil
	}
	return s.bsConn.LocalAddr()
}

// BootServerWarning is what goes wrong, if anything, with the boot-server
// port bootServerPort (node.ports.proxy_dhcp) for pools: a proxy pool
// without it leaves UEFI PXE firmware, which asks for its boot file on
// port 4011 only, without one. Listen logs it and mayu -check prints it:
// one condition, said the same way in both.
func BootServerWarning(pools []config.Pool, bootServerPort int) string {
	if bootServerPort > 0 || !hasProxyPool(pools) {
		return ""
	}
	return "a pool is in proxy mode but node.ports.proxy_dhcp is 0: UEFI PXE firmware cannot get its boot file there"
}

func hasProxyPool(pools []config.Pool) bool {
	for _, p := range pools {
		if p.Proxy() {
			return true
		}
	}
	return false
}

// ServerIP is the server identifier this replica answers with.
func (s *Server) ServerIP() netip.Addr { return s.serverIP }

// interfaceIPv4 picks the interface's IPv4 address inside one of the
// pools' subnets (the one local clients reach), else its first one.
func interfaceIPv4(name string, pools []config.Pool) (netip.Addr, error) {
	ifc, err := net.InterfaceByName(name)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("node.interface %q: %w", name, err)
	}
	addrs, err := ifc.Addrs()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("node.interface %q: %w", name, err)
	}
	var first netip.Addr
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(n.IP); ok && ip.Unmap().Is4() {
				ip = ip.Unmap()
				for _, p := range pools {
					if p.Subnet.Contains(ip) {
						return ip, nil
					}
				}
				if !first.IsValid() {
					first = ip
				}
			}
		}
	}
	if first.IsValid() {
		return first, nil
	}
	return netip.Addr{}, fmt.Errorf("node.interface %q has no IPv4 address (DHCP answers from it)", name)
}

// Serve reads packets until ctx ends, handing them to a bounded pool of
// workers: a flood cannot grow memory, it only drops packets.
func (s *Server) Serve(ctx context.Context) error {
	// Ended when a socket fails too, not only by the caller: what runs
	// aside (a give-up's delete tried again) stops with Serve.
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	queue := make(chan packet, s.o.Queue)
	var wg sync.WaitGroup
	for i := 0; i < s.o.Workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range queue {
				p.aside = true
				s.handle(ctx, p)
			}
		}()
	}
	go func() {
		<-ctx.Done()
		s.conn.Close()
		if s.bsConn != nil {
			s.bsConn.Close()
		}
	}()
	// The first socket to fail stops the other; Serve returns its error.
	var err error
	var failed sync.Once
	fail := func(e error) {
		if e != nil {
			failed.Do(func() {
				err = e
				stop()
				s.conn.Close()
				if s.bsConn != nil {
					s.bsConn.Close()
				}
			})
		}
	}
	var readers sync.WaitGroup
	if s.bsConn != nil {
		readers.Add(1)
		go func() {
			defer readers.Done()
			fail(s.read(ctx, s.bsConn, true, queue))
		}()
	}
	fail(s.read(ctx, s.conn, false, queue))
	readers.Wait()
	close(queue)
	wg.Wait()
	s.acks.Wait()
	s.probing.Wait()
	if s.opened != nil {
		s.opened.Close()
	}
	return err
}

// read queues the packets of conn until it is closed; the error is nil
// if ctx ended.
func (s *Server) read(ctx context.Context, conn *net.UDPConn, bootServer bool, queue chan<- packet) error {
	for {
		buf := make([]byte, 1500)
		n, peer, err := conn.ReadFromUDP(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("dhcp read (%s): %w", conn.LocalAddr(), err)
		}
		select {
		case queue <- packet{data: buf[:n], peer: peer, bootServer: bootServer}:
		default:
			s.dropped.Add(1)
			if bootServer {
				s.metrics.bootServer.WithLabelValues("queue_full").Inc()
			} else {
				s.metrics.ignored.WithLabelValues("queue_full").Inc()
			}
		}
	}
}

// Lead runs while this replica leads: it loads every lease from etcd before
// the first answer, then answers until ctx ends.
func (s *Server) Lead(ctx context.Context, f election.Fence) {
	won := time.Now()
	if s.o.Installed != nil && !s.waitLoaded(ctx, s.o.Installed.Ready(), "the installed machines") {
		return
	}
	// Until the registered MACs are loaded every machine would be a
	// stranger (cluster.dhcp.unregistered_share).
	if k, ok := s.o.Known.(interface{ Ready() <-chan struct{} }); ok && !s.waitLoaded(ctx, k.Ready(), "the registered machines") {
		return
	}
	var leases []lease.Lease
	if state.Retry(ctx, time.Second, func(err error) {
		s.o.Log.Warn("DHCP leader cannot load leases yet; not answering", "err", err)
	}, func(ctx context.Context) error {
		var bad []error
		var err error
		leases, bad, err = s.o.Leases.Load(ctx)
		for _, b := range bad {
			s.o.Log.Warn("ignoring a lease", "err", b)
		}
		return err
	}) != nil {
		return
	}
	t := &term{fence: f}
	for _, pc := range s.o.Pools {
		t.pools = append(t.pools, s.leaderPool(pc))
	}
	// The tables sized for what they are about to hold: growing two maps
	// per pool to 100,000 entries rehashed them some twenty times, in
	// the way of the first answer.
	held := make(map[*pool]int, len(t.pools))
	for _, l := range leases {
		if p := t.poolOf(l.IP); p != nil && !p.cfg.Proxy() {
			held[p]++
		}
	}
	for p, n := range held {
		p.makeRoom(n)
	}
	n := 0
	var stale []netip.Addr
	for _, l := range leases {
		switch p := t.poolOf(l.IP); {
		case p != nil && !p.cfg.Proxy():
			p.load(l)
			n++
		case won.After(l.Expiry.Add(staleGrace)):
			// A proxy pool leases nothing: a lease there is left from
			// when the pool was in full mode, and the site's server
			// owns the address now; a lease in no pool is left from a
			// pool since removed. Nothing renews it, and once expired
			// nobody holds it: it goes (below), or `mayuctl leases`
			// would list it for ever.
			stale = append(stale, l.IP)
		}
		// Such a lease not expired yet is only skipped: its client may
		// still use the address, were the pool put back in full mode.
		// A later leader deletes it.
	}
	s.term.Store(t)
	if l, ok := s.o.Leases.(leadAware); ok {
		l.Leading(true)
		defer l.Leading(false)
	}
	ready := time.Since(won)
	s.metrics.leaderReady.Set(ready.Seconds())
	s.o.Log.Info("answering DHCP", "replica", s.o.Replica, "term", f.Rev, "leases", n, "server_ip", s.serverIP,
		"ready_ms", ready.Milliseconds())
	removed := make(chan struct{})
	go func() { defer close(removed); s.removeStale(ctx, f, stale) }() // not in the way of the first answer
	<-ctx.Done()
	<-removed
	s.term.CompareAndSwap(t, nil)
	s.o.Log.Info("stopped answering DHCP", "replica", s.o.Replica, "term", f.Rev)
}

// waitLoaded waits until ready is closed (false: ctx ended first), and
// says so in the log when that takes a while: the leader does not answer
// meanwhile.
func (s *Server) waitLoaded(ctx context.Context, ready <-chan struct{}, what string) bool {
	slow := time.NewTimer(5 * time.Second)
	defer slow.Stop()
	for {
		select {
		case <-ready:
			return true
		case <-ctx.Done():
			return false
		case <-slow.C:
			s.o.Log.Warn("DHCP leader waits for "+what+" to load from etcd; not answering yet", "replica", s.o.Replica)
		}
	}
}

// staleGrace is how long past its expiry a lease no pool loads is kept:
// the expiry is the old leader's clock, and the replicas' clocks need not
// agree; an hour (the default lease time) covers any skew worth having.
const staleGrace = time.Hour

// removeStale deletes the leases of ips, expired and in no full pool, each
// under the term's fence: a deposed leader deletes nothing. What it cannot
// delete (etcd busy, the term over) is left to the next leader.
func (s *Server) removeStale(ctx context.Context, f election.Fence, ips []netip.Addr) {
	removed := 0
	for _, ip := range ips {
		if err := s.o.Leases.Remove(ctx, f, ip); err != nil {
			if ctx.Err() == nil {
				s.o.Log.Warn("cannot delete a lease no pool holds; the next leader tries again", "ip", ip, "err", err)
			}
			break
		}
		s.metrics.staleRemoved.Inc()
		removed++
	}
	if removed > 0 {
		s.o.Log.Info("deleted expired leases that no full-mode pool holds (pool in proxy mode, or removed)", "leases", removed)
	}
}

// leaderPool is the empty lease table of pool pc, as the leader starts
// it (and as mayu -check previews it: the same call, so the preview
// cannot drift from what the leader answers).
func (s *Server) leaderPool(pc config.Pool) *pool {
	p := newPool(pc)
	// Whatever the configuration, never lease this replica's own address
	// nor the one machines reach mayu at.
	p.own = map[netip.Addr]bool{s.serverIP: true, s.o.Advertise: true}
	if s.o.Known != nil { // without the registry's MACs, everyone would be a stranger
		p.capStrangers(s.o.Limits.UnregisteredShare)
	}
	return p
}

// Leading reports whether the server is answering now.
func (s *Server) Leading() bool { return s.term.Load() != nil }

func (t *term) poolOf(ip netip.Addr) *pool {
	for _, p := range t.pools {
		if p.cfg.Subnet.Contains(ip) {
			return p
		}
	}
	return nil
}

// poolFor matches a request to its pool: by relay address if relayed,
// else by the subnet of the receiving interface.
func (s *Server) poolFor(t *term, req *dhcpv4.DHCPv4, peer *net.UDPAddr) *pool {
	if gi, ok := netip.AddrFromSlice(req.GatewayIPAddr.To4()); ok && !gi.IsUnspecified() {
		return t.poolOf(gi)
	}
	// A renewing (or releasing, or informing) client of a relayed network
	// unicasts to us directly, without giaddr: its own address names its
	// pool. Only then: ciaddr is whatever a packet says, and a DISCOVER
	// naming one would reach another network's pool (and budget) from
	// this segment; so it must also be the address the packet came from.
	switch req.MessageType() {
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeInform:
		if ci, ok := netip.AddrFromSlice(req.ClientIPAddr.To4()); ok && !ci.IsUnspecified() && peer != nil {
			if from, ok := netip.AddrFromSlice(peer.IP.To4()); ok && from == ci {
				if p := t.poolOf(ci); p != nil {
					return p
				}
			}
		}
	}
	return t.poolOf(s.serverIP)
}

// exchange is one request on its way to an answer: what it is, where it
// came from, the pool and term it is answered in, and the boot decision.
type exchange struct {
	ctx  context.Context
	log  *slog.Logger
	term *term
	pool *pool
	req  *dhcpv4.DHCPv4
	peer *net.UDPAddr
	mac  string
	dec  Decision
	now  time.Time
	// aside: the wait for the lease may leave the worker (packet.aside).
	aside bool
}

// parseRequest decodes a datagram a client sent: a BOOTREQUEST with an
// Ethernet MAC. Anything else (a BOOTREPLY, an unknown opcode, another
// hardware type's address) is refused before any rule looks at it.
func parseRequest(data []byte) (*dhcpv4.DHCPv4, error) {
	req, err := dhcpv4.FromBytes(data)
	switch {
	case err != nil:
		return nil, err
	case req.OpCode != dhcpv4.OpcodeBootRequest:
		return nil, fmt.Errorf("opcode %s is not a request", req.OpCode)
	case len(req.ClientHWAddr) != 6:
		return nil, fmt.Errorf("hardware address of %d bytes, not an Ethernet MAC", len(req.ClientHWAddr))
	}
	return req, nil
}

func (s *Server) handle(ctx context.Context, p packet) {
	if p.bootServer {
		s.handleBootServer(ctx, p)
		return
	}
	req, err := parseRequest(p.data)
	if err != nil {
		s.metrics.received.WithLabelValues("malformed").Inc()
		s.metrics.ignored.WithLabelValues("malformed").Inc()
		s.o.Log.Debug("dhcp: malformed packet ignored", "from", p.peer, "err", err)
		return
	}
	s.metrics.received.WithLabelValues(typeLabel(req.MessageType())).Inc()
	t := s.term.Load()
	if t == nil {
		s.metrics.ignored.WithLabelValues("not_leader").Inc()
		s.o.Log.Debug("dhcp: not leader, ignoring", "mac", req.ClientHWAddr.String(), "type", req.MessageType())
		return
	}
	if gi, ok := netip.AddrFromSlice(req.GatewayIPAddr.To4()); ok && !gi.IsUnspecified() && s.relays != nil && !s.relays[gi] {
		// A relay that is not on the list, or a client on the boot
		// network posing as one.
		s.metrics.ignored.WithLabelValues("unlisted_relay").Inc()
		s.o.Log.Debug("dhcp: giaddr not in cluster.dhcp.relays, ignoring", "giaddr", gi, "from", p.peer)
		return
	}
	if ci, ok := netip.AddrFromSlice(req.ClientIPAddr.To4()); ok && !ci.IsUnspecified() && req.GatewayIPAddr.IsUnspecified() &&
		!fromAddr(p.peer, ci) && !(fromAddr(p.peer, netip.IPv4Unspecified()) && t.holds(req.ClientHWAddr.String(), ci)) {
		// An answer to a packet with ciaddr goes to ciaddr (RFC 2131
		// 4.1). A client that has an address sends from it; a packet
		// naming another one would aim the answer at a third host
		// (reflection, and with the pool's options an amplified one).
		// Older busybox udhcpc rebinds from 0.0.0.0: let that through
		// when ciaddr is the MAC's own lease, where the answer goes to
		// the lease's holder anyway.
		s.metrics.ignored.WithLabelValues("ciaddr_mismatch").Inc()
		s.o.Log.Debug("dhcp: ciaddr is not the sender's address, ignoring", "ciaddr", ci, "from", p.peer)
		return
	}
	x := &exchange{ctx: ctx, term: t, req: req, peer: p.peer, mac: req.ClientHWAddr.String(), now: time.Now(), aside: p.aside}
	client := Classify(req)
	installed := s.o.Installed != nil && s.o.Installed.Has(x.mac)
	x.dec = Decide(client, installed, s.o.Policy)
	x.log = lazyWith(s.o.Log, "mac", x.mac, "type", req.MessageType().String(), "firmware", client.Firmware.String())
	if x.dec.Ignore {
		s.metrics.ignored.WithLabelValues(x.dec.Reason).Inc()
		x.log.Debug("dhcp: ignored", "reason", x.dec.Reason)
		return
	}
	if x.pool = s.poolFor(t, req, p.peer); x.pool == nil {
		s.metrics.ignored.WithLabelValues("no_pool").Inc()
		x.log.Debug("dhcp: no pool for this request", "giaddr", req.GatewayIPAddr)
		return
	}
	if x.pool.cfg.Proxy() {
		s.proxy(x, client)
		return
	}
	switch req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		s.discover(x)
	case dhcpv4.MessageTypeRequest:
		s.request(x)
	case dhcpv4.MessageTypeRelease:
		s.release(x)
	case dhcpv4.MessageTypeDecline:
		s.decline(x)
	case dhcpv4.MessageTypeInform:
		// The client has its address; it wants only the options. Its
		// answer can be far bigger than the request: a client the
		// leader does not know pays from the new-client budget, like a
		// DISCOVER.
		if !s.known(x) && !s.budget.allow(s.source(x), x.now) {
			s.metrics.ignored.WithLabelValues("new_client_budget").Inc()
			return
		}
		s.reply(x, s.answer(x, dhcpv4.MessageTypeAck, netip.Addr{}))
	}
}

// handleBootServer answers a request to the boot-server port (4011), if
// this replica leads.
func (s *Server) handleBootServer(ctx context.Context, p packet) {
	req, err := parseRequest(p.data)
	if err != nil || p.peer == nil {
		s.metrics.bootServer.WithLabelValues("malformed").Inc()
		return
	}
	t := s.term.Load()
	if t == nil {
		s.metrics.bootServer.WithLabelValues("not_leader").Inc()
		return
	}
	x := &exchange{ctx: ctx, term: t, req: req, peer: p.peer, mac: req.ClientHWAddr.String(), now: time.Now()}
	x.log = lazyWith(s.o.Log, "mac", x.mac, "type", req.MessageType().String(), "port", s.o.BootServerPort)
	resp, dst, outcome := s.bootServer(x, t)
	if resp == nil {
		s.metrics.bootServer.WithLabelValues(outcome).Inc()
		x.log.Debug("dhcp: boot-server request not answered", "reason", outcome, "from", p.peer)
		return
	}
	if _, err := s.bsConn.WriteToUDP(resp.ToBytes(), dst); err != nil {
		s.metrics.bootServer.WithLabelValues("send_failed").Inc()
		x.log.Debug("dhcp: send failed", "to", dst, "err", err)
		return
	}
	s.metrics.bootServer.WithLabelValues(outcome).Inc()
	// The label names the protocol's port, whatever node.ports.proxy_dhcp
	// is (firmware asks on 4011 only): dashboards keep their queries.
	s.metrics.proxyAnswered.WithLabelValues("4011", Classify(req).Firmware.String()).Inc()
	x.log.Debug("dhcp: boot-server ack", "to", dst, "boot", x.dec.Reason)
}

// known reports whether the client is one the leader knows: it has a
// lease or an offer in the pool, or its MAC belongs to a registered
// machine.
func (s *Server) known(x *exchange) bool {
	return x.pool.knows(x.mac, x.now) || s.registered(x.mac)
}

// registered reports whether mac belongs to a registered machine.
func (s *Server) registered(mac string) bool { return s.o.Known != nil && s.o.Known.Has(mac) }

// admitted reports whether x's client may take ip (any address of its
// pool, if not valid) under cluster.dhcp.unregistered_share: the budget slows made-up MACs
// down, this caps what they can hold, however patient. A registered
// machine, a MAC with a reservation (outside the range, and its own) and
// a client that holds a counted address already are always admitted;
// any other, known or not (a MAC whose lease expired is one the pool
// still knows), only while the strangers hold less than their share.
func (s *Server) admitted(x *exchange, ip netip.Addr) bool {
	if s.registered(x.mac) {
		return true
	}
	if _, reserved := x.pool.reservationOf(x.mac); reserved || x.pool.admitStranger(x.now, x.mac, ip, s.registered) {
		return true
	}
	s.metrics.ignored.WithLabelValues("unregistered_share").Inc()
	x.log.Debug("dhcp: unregistered clients hold their share of the pool, ignoring", "pool", x.pool.cfg.Subnet)
	return false
}

// source names whose new-client budget a request is charged to. A giaddr
// is whatever the packet says: any host on a segment can write one, and a
// bucket per giaddr would give it a fresh bucket per address it names. So
// a giaddr is a source of its own only when cluster.dhcp.relays lists it
// (and unlisted ones never get this far); otherwise everything that lands
// in a pool, relayed or not, shares that pool's bucket.
func (s *Server) source(x *exchange) string {
	if gi, ok := netip.AddrFromSlice(x.req.GatewayIPAddr.To4()); ok && !gi.IsUnspecified() && s.relays[gi] {
		return "relay " + gi.String()
	}
	return "pool " + x.pool.cfg.Subnet.String()
}

// discover offers an address: held in memory only, nothing durable yet. A
// client the leader does not know is charged against its relay's budget
// first.
func (s *Server) discover(x *exchange) {
	if !s.known(x) {
		if !s.budget.allow(s.source(x), x.now) {
			// Debug: a flood would flood the log too; the metric counts it.
			s.metrics.ignored.WithLabelValues("new_client_budget").Inc()
			x.log.Debug("dhcp: new-client budget of this relay spent, ignoring", "source", s.source(x))
			return
		}
	}
	if !s.admitted(x, netip.Addr{}) {
		return
	}
	requested, _ := netip.AddrFromSlice(x.req.RequestedIPAddress().To4())
	ip, err := x.pool.offer(x.mac, requested, x.now)
	if errors.Is(err, ErrReservationTaken) {
		s.metrics.ignored.WithLabelValues("reservation_unavailable").Inc()
		// Debug: a client retrying would flood the log; the metric
		// counts it.
		x.log.Debug("dhcp: this client's reserved address is held by another client or quarantined; no other address is offered",
			"pool", x.pool.cfg.Subnet)
		return
	}
	if err != nil {
		// Debug, not warn: a storm of clients would flood the log;
		// mayu_dhcp_addresses_free and its alert tell the operator.
		s.metrics.ignored.WithLabelValues("pool_exhausted").Inc()
		x.log.Debug("dhcp: no address to offer", "pool", x.pool.cfg.Subnet, "err", err)
		return
	}
	x.log.Debug("dhcp: offer", "ip", ip, "boot", x.dec.Reason)
	s.reply(x, s.answer(x, dhcpv4.MessageTypeOffer, ip))
}

// request handles SELECTING, INIT-REBOOT, RENEWING and REBINDING: the one
// durable write of an exchange happens here, fenced, before the ACK.
func (s *Server) request(x *exchange) {
	pl := x.pool
	ip, _ := netip.AddrFromSlice(x.req.RequestedIPAddress().To4())
	if !s.ours(x.req) {
		// The client chose another server's offer.
		if ip.IsValid() {
			pl.unhold(ip, x.mac)
		}
		s.metrics.ignored.WithLabelValues("other_server").Inc()
		return
	}
	if !ip.IsValid() {
		ip, _ = netip.AddrFromSlice(x.req.ClientIPAddr.To4()) // renewing or rebinding
	}
	if !ip.IsValid() || ip.IsUnspecified() {
		return
	}
	nak := func(reason, why string) {
		s.metrics.naks.WithLabelValues(reason).Inc()
		x.log.Debug("dhcp: nak", "ip", ip, "why", why)
		s.reply(x, s.nak(x.req, why))
	}
	if !pl.cfg.Subnet.Contains(ip) || !pl.leasable(ip) {
		nak("outside_pool", "address not in this network's pool")
		return
	}
	if owner, ok := pl.reservedTo(ip); ok && owner != x.mac {
		nak("reserved", "address reserved for another client")
		return
	}
	if reserved, ok := pl.reservationOf(x.mac); ok && reserved != ip {
		// Its old dynamic address, say: it starts over and gets its own.
		nak("has_reservation", "this client has a reserved address; start over with DISCOVER")
		return
	}
	if !s.known(x) {
		// A REQUEST without an OFFER from a client nobody knows: a
		// spoofed one naming an address would otherwise get it for the
		// whole lease time, past the new-client budget.
		if x.req.ServerIdentifier() == nil && (x.req.ClientIPAddr == nil || x.req.ClientIPAddr.IsUnspecified()) {
			// INIT-REBOOT: RFC 2131 4.3.2, "If the DHCP server has
			// no record of this client, then it MUST remain silent";
			// the client falls back to DISCOVER.
			s.metrics.ignored.WithLabelValues("unknown_client").Inc()
			x.log.Debug("dhcp: INIT-REBOOT from a client with no lease, ignoring", "ip", ip)
			return
		}
		// SELECTING without our offer, RENEWING or REBINDING without a
		// lease: NAK, and the client starts over with DISCOVER (4.3.2
		// lets a server NAK a request it cannot honour).
		nak("unknown_client", "no offer or lease for this client; start over with DISCOVER")
		return
	}
	if !s.admitted(x, ip) {
		// Its lease expired, or it asks for an address other than the
		// one it holds, and the strangers hold their share: silence,
		// and its DISCOVER is refused alike until there is room.
		return
	}
	if err := pl.reserve(x.mac, ip, x.now); err != nil {
		nak("in_use", "address in use by another client")
		return
	}
	// The hostname (option 12) is the client's text: stored escaped and
	// bounded, so etcdctl, mayuctl and logs never print its raw bytes.
	l := lease.Lease{IP: ip, MAC: x.mac, Expiry: x.now.Add(pl.cfg.LeaseTime), Hostname: hostile.Text(x.req.HostName(), lease.MaxHostname), Leader: s.o.Replica}
	s.aside(x, func() { s.acknowledge(x, l) })
}

// aside runs write, which waits until a lease is durable. While fewer
// than half the workers wait so, the worker waits itself (a goroutine per
// ACK costs the leader CPU that a light load need not pay). Beyond that,
// write runs in a goroutine of its own while a slot of
// Options.PendingACKs is free, and the worker goes on to the next packet:
// were every worker to wait for etcd, the workers would bound the leases
// in flight, and so the groups the store can write in one transaction,
// and the DISCOVERs behind them would wait too. With every slot taken the
// worker waits itself: memory stays bounded, and the packets behind it
// wait in the queue, as before.
func (s *Server) aside(x *exchange, write func()) {
	if x.aside && int(s.waiting.Load()) >= max(s.o.Workers/2, 1) {
		select {
		case s.acking <- struct{}{}:
			s.acks.Add(1)
			go func() {
				defer func() {
					<-s.acking
					s.acks.Done()
				}()
				write()
			}()
			return
		default:
		}
	}
	s.waiting.Add(1)
	defer s.waiting.Add(-1)
	write()
}

// acknowledge makes l durable, fenced, and then ACKs it. It ends the
// write that request's reserve began (commit or failed).
func (s *Server) acknowledge(x *exchange, l lease.Lease) {
	pl, ip := x.pool, l.IP
	old, hadOld := pl.leaseOfMAC(x.mac)
	start := time.Now()
	err := s.o.Leases.Put(x.ctx, x.term.fence, l)
	s.metrics.leaseWriteDuration.WithLabelValues().Observe(time.Since(start).Seconds())
	if err != nil {
		if errors.Is(err, lease.ErrDeposed) {
			pl.failed(ip, x.mac) // refused by etcd: nothing was written
		} else {
			// The write may still land (a member that applies it after
			// the call gave up): the address stays this client's for
			// the rest of the term (its write never ends), or etcd
			// could name it as the lease's owner while another client
			// is ACKed the address.
			pl.unhold(ip, x.mac)
		}
		if errors.Is(err, lease.ErrDeposed) {
			s.metrics.ignored.WithLabelValues("deposed").Inc()
			s.term.CompareAndSwap(x.term, nil) // stop at once; the election notices too
			x.log.Warn("dhcp: deposed, lease refused by etcd; not acknowledging", "ip", ip)
			return
		}
		s.metrics.ignored.WithLabelValues("not_durable").Inc()
		x.log.Warn("dhcp: lease not durable, not acknowledging (the client will retry)", "ip", ip, "err", err)
		return
	}
	giveUp := hadOld && old.IP != ip && pl.holdToGiveUp(x.mac, old.IP, x.now)
	pl.commit(l)
	x.log.Debug("dhcp: ack", "ip", ip, "boot", x.dec.Reason)
	s.reply(x, s.answer(x, dhcpv4.MessageTypeAck, ip))
	if giveUp {
		// One address per client: its previous lease (a dynamic one,
		// before it got its reservation) is given up, durably, so that
		// etcd and mayuctl leases do not show it holding two.
		// (commit dropped it from the table already.)
		s.giveUp(x, old.IP)
	}
}

// giveUp deletes ip, x's client's previous lease, from etcd, under the
// term's fence, and then gives the address back to the pool. A delete
// etcd did not answer may still land (a member applying it after the
// call gave up), and would then take the lease of whoever had the
// address meanwhile: it is tried again, aside, until etcd answers or
// the term ends, and the address stays out until then.
func (s *Server) giveUp(x *exchange, ip netip.Addr) {
	err := s.o.Leases.Remove(x.ctx, x.term.fence, ip)
	if err == nil || errors.Is(err, lease.ErrDeposed) || x.ctx.Err() != nil {
		x.pool.gaveUp(x.mac, ip)
		return
	}
	x.log.Warn("dhcp: previous lease not given up in etcd yet; trying again", "ip", ip, "err", err)
	s.acks.Add(1)
	go func() {
		defer s.acks.Done()
		defer x.pool.gaveUp(x.mac, ip)
		for {
			select {
			case <-x.ctx.Done():
				return
			case <-time.After(time.Second):
			}
			if s.term.Load() != x.term {
				return // the term is over: its fence deletes nothing now
			}
			if x.pool.takenBack(x.mac, ip, time.Now()) {
				// The client has it again: another delete would take
				// its new lease.
				return
			}
			err := s.o.Leases.Remove(x.ctx, x.term.fence, ip)
			if err == nil || errors.Is(err, lease.ErrDeposed) {
				return
			}
		}
	}()
}

// release forgets the client's lease, durably first.
func (s *Server) release(x *exchange) {
	ip, _ := netip.AddrFromSlice(x.req.ClientIPAddr.To4())
	if _, ok := x.pool.leaseOf(x.mac, ip); ok {
		if err := s.o.Leases.Remove(x.ctx, x.term.fence, ip); err != nil {
			x.log.Warn("dhcp: release not recorded", "ip", ip, "err", err)
			return
		}
		x.pool.forget(x.mac, ip)
		x.log.Debug("dhcp: released", "ip", ip)
	}
}

// decline takes an address back from the client that found it in use, and
// quarantines it only once a probe finds another host answering on it:
// a client declining every address it gets cannot empty the pool. A host
// that answers the probe itself can, so a stranger's quarantine counts
// against the unregistered share (quarantine). The probe runs aside,
// bounded in number and time, so no worker waits.
func (s *Server) decline(x *exchange) {
	ip, _ := netip.AddrFromSlice(x.req.RequestedIPAddress().To4())
	if !ip.IsValid() {
		return
	}
	// Only the client the address was given to may decline it:
	// otherwise one host could quarantine the whole pool.
	if !s.ours(x.req) || !x.pool.heldBy(x.mac, ip, x.now) {
		s.metrics.declines.WithLabelValues("not_holder").Inc()
		x.log.Debug("dhcp: decline ignored: not this client's address", "ip", ip)
		return
	}
	if _, ok := x.pool.leaseOf(x.mac, ip); ok {
		if err := s.o.Leases.Remove(x.ctx, x.term.fence, ip); err != nil {
			x.log.Warn("dhcp: decline not recorded", "ip", ip, "err", err)
		}
	}
	lim := s.o.Limits
	// Not offered to anyone while the probe runs. A stranger's quarantine
	// counts against the unregistered share, as its hold on the address
	// did (quarantine).
	x.pool.decline(x.mac, ip, x.now.Add(lim.DeclineProbeTimeout+time.Second))
	select {
	case s.probes <- struct{}{}:
	default:
		x.pool.avoid(ip, time.Time{}, x.mac)
		s.metrics.declines.WithLabelValues("probe_busy").Inc()
		x.log.Debug("dhcp: decline not probed: too many probes in flight (cluster.dhcp.decline_probes)", "ip", ip)
		return
	}
	// Local segment: the pool is the one of the server's own address.
	local := x.pool.cfg.Subnet.Contains(s.serverIP)
	pl, hw, log, mac := x.pool, x.req.ClientHWAddr, x.log, x.mac
	s.probing.Add(1)
	go func() {
		defer s.probing.Done()
		defer func() { <-s.probes }()
		ctx, cancel := context.WithTimeout(context.Background(), lim.DeclineProbeTimeout)
		defer cancel()
		inUse, err := false, errors.New("no prober (the server was not opened with Listen)")
		if s.prober != nil {
			inUse, err = s.prober.InUse(ctx, ip, local, hw)
		}
		switch {
		case err != nil:
			pl.avoid(ip, time.Time{}, mac)
			s.metrics.declines.WithLabelValues("probe_failed").Inc()
			log.Warn("dhcp: declined address not probed, not quarantined", "ip", ip, "local", local, "err", err)
		case inUse:
			pl.avoid(ip, time.Now().Add(lim.DeclineQuarantine), mac)
			s.metrics.declines.WithLabelValues("quarantined").Inc()
			log.Warn("dhcp: declined address is in use by another host: quarantined", "ip", ip, "for", lim.DeclineQuarantine)
		default:
			pl.avoid(ip, time.Time{}, mac)
			s.metrics.declines.WithLabelValues("unconfirmed").Inc()
			log.Info("dhcp: declined address answers nobody: back in the pool", "ip", ip, "local", local)
		}
	}()
}

// ours reports whether a request names this server (or none) as its
// server identifier.
func (s *Server) ours(req *dhcpv4.DHCPv4) bool {
	sid := req.ServerIdentifier()
	if sid == nil || sid.IsUnspecified() {
		return true
	}
	a, _ := netip.AddrFromSlice(sid.To4())
	return a == s.serverIP
}

// answer builds an OFFER or ACK with the pool's options and the boot
// decision.
func (s *Server) answer(x *exchange, typ dhcpv4.MessageType, ip netip.Addr) *dhcpv4.DHCPv4 {
	pl, dec := x.pool, x.dec
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.serverIP.AsSlice())),
		dhcpv4.WithNetmask(net.CIDRMask(pl.cfg.Subnet.Bits(), 32)),
	}
	if ip.IsValid() {
		mods = append(mods, dhcpv4.WithYourIP(ip.AsSlice()),
			dhcpv4.WithLeaseTime(uint32(pl.cfg.LeaseTime/time.Second)))
	}
	if pl.cfg.Router.IsValid() {
		mods = append(mods, dhcpv4.WithRouter(pl.cfg.Router.AsSlice()))
	}
	if len(pl.cfg.DNS) > 0 {
		dns := make([]net.IP, len(pl.cfg.DNS))
		for i, d := range pl.cfg.DNS {
			dns[i] = d.AsSlice()
		}
		mods = append(mods, dhcpv4.WithDNS(dns...))
	}
	if dec.NextServer {
		mods = append(mods, dhcpv4.WithServerIP(s.o.Advertise.AsSlice()))
	}
	if dec.BootFile != "" {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptBootFileName(dec.BootFile)))
	}
	if dec.IPXEOptions {
		mods = append(mods, dhcpv4.WithGeneric(optIPXE, []byte{176, 1, 1}))
	}
	if dec.HTTPClient {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient")))
	}
	resp, err := dhcpv4.NewReplyFromRequest(x.req, mods...)
	if err != nil {
		return nil
	}
	if len(dec.BootFile) < 128 {
		resp.BootFileName = dec.BootFile // the BOOTP field, which PXE ROMs read
	}
	s.addPoolOptions(x, resp) // full mode only: proxyAnswer builds the proxy's
	return resp
}

func (s *Server) nak(req *dhcpv4.DHCPv4, why string) *dhcpv4.DHCPv4 {
	resp, err := dhcpv4.NewReplyFromRequest(req,
		dhcpv4.WithMessageType(dhcpv4.MessageTypeNak),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.serverIP.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptMessage(why)))
	if err != nil {
		return nil
	}
	if !req.GatewayIPAddr.IsUnspecified() {
		// RFC 2131 4.3.2: the relay must broadcast a NAK, since the
		// client has no usable address.
		resp.SetBroadcast()
	}
	return resp
}

// reply sends as RFC 2131 section 4.1 says: to the relay if relayed;
// NAKs broadcast; to ciaddr if the client has an address; broadcast if the
// client asked for it; else unicast to the new address and the client's
// MAC, which needs an ARP entry since the client cannot answer ARP yet.
// It reports whether the answer went out.
func (s *Server) reply(x *exchange, resp *dhcpv4.DHCPv4) bool {
	if resp == nil {
		return false
	}
	req, peer := x.req, x.peer
	data := resp.ToBytes()
	bcast := &net.UDPAddr{IP: net.IPv4bcast, Port: dhcpv4.ClientPort}
	var dst *net.UDPAddr
	switch {
	case !req.GatewayIPAddr.IsUnspecified() && req.GatewayIPAddr.To4() != nil:
		port := dhcpv4.ServerPort
		if peer != nil && peer.IP.Equal(req.GatewayIPAddr) {
			port = peer.Port
		}
		dst = &net.UDPAddr{IP: req.GatewayIPAddr, Port: port}
	case resp.MessageType() == dhcpv4.MessageTypeNak:
		dst = bcast
	case !req.ClientIPAddr.IsUnspecified() && req.ClientIPAddr.To4() != nil:
		dst = &net.UDPAddr{IP: req.ClientIPAddr, Port: dhcpv4.ClientPort}
	case req.IsBroadcast() || resp.YourIPAddr.IsUnspecified():
		dst = bcast
	default:
		dst = bcast
		if err := s.setARP(resp.YourIPAddr, req.ClientHWAddr); err == nil {
			dst = &net.UDPAddr{IP: resp.YourIPAddr, Port: dhcpv4.ClientPort}
		}
	}
	if _, err := s.conn.WriteToUDP(data, dst); err != nil {
		s.o.Log.Debug("dhcp: send failed", "to", dst, "err", err)
		return false
	}
	s.metrics.answered.WithLabelValues(typeLabel(resp.MessageType())).Inc()
	return true
}

// typeLabel is a message type as a metric label: "discover", "request", …
func typeLabel(t dhcpv4.MessageType) string {
	switch t {
	case dhcpv4.MessageTypeDiscover, dhcpv4.MessageTypeOffer, dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeDecline,
		dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak, dhcpv4.MessageTypeRelease, dhcpv4.MessageTypeInform:
		return strings.ToLower(t.String())
	}
	return "other"
}

// CheckInterface says whether DHCP could answer from the interface: it
// exists and has an IPv4 address (mayu -check).
func CheckInterface(name string, pools []config.Pool) error {
	_, err := interfaceIPv4(name, pools)
	return err
}

// fromAddr reports whether a packet came from the address a.
func fromAddr(peer *net.UDPAddr, a netip.Addr) bool {
	if peer == nil {
		return false
	}
	from, ok := netip.AddrFromSlice(peer.IP.To4())
	return ok && from == a
}

// holds reports whether mac holds an unexpired lease on ip in one of the
// term's pools.
func (t *term) holds(mac string, ip netip.Addr) bool {
	p := t.poolOf(ip)
	if p == nil {
		return false
	}
	l, ok := p.leaseOf(mac, ip)
	return ok && time.Now().Before(l.Expiry)
}
