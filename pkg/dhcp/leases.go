package dhcp

import (
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/lease"
)

// Errors of the lease table.
var (
	ErrPoolExhausted = errors.New("pool exhausted")
	ErrNotAvailable  = errors.New("address not available to this client")
	// ErrReservationTaken: the client's reserved address is held by
	// another client (a lease from before the reservation) or
	// quarantined after a DECLINE. It gets no other address.
	ErrReservationTaken = errors.New("the client's reserved address is not available")
)

// How long an offered address stays held for its client. (How long a
// declined one is avoided is cluster.dhcp.decline_quarantine.)
const offerHold = 30 * time.Second

type hold struct {
	mac   string
	until time.Time
}

// quarantine keeps a declined address from every client until then. mac
// declined it: while it is no registered machine's the address counts
// against cluster.dhcp.unregistered_share (else made-up MACs, declining
// each offer and answering the probe themselves, would lock up the whole
// range past the share).
type quarantine struct {
	until time.Time
	mac   string
}

// pool is the leader's in-memory view of one pool's leases. The DHCP hot
// path reads only this; etcd is written once per ACK.
type pool struct {
	cfg config.Pool

	mu       sync.Mutex
	byIP     map[netip.Addr]*lease.Lease
	byMAC    map[string]*lease.Lease
	held     map[netip.Addr]hold       // offers and ACKs in flight
	heldMAC  map[string]netip.Addr     // mac → its entry in held: no scan of held per DISCOVER
	declined map[netip.Addr]quarantine // addresses a DECLINE keeps from everyone, until when and for whom
	cursor   netip.Addr                // where the next free-address scan starts
	own      map[netip.Addr]bool       // never leased: the replicas' own addresses
	// writing are the addresses whose lease write is in flight, by MAC:
	// no one else's until every such write has ended, however long etcd
	// takes. A hold is not enough: it expires, and a failed write drops
	// it while a retransmitted REQUEST's write of the same lease may
	// still land (then another client offered the address meanwhile
	// would be ACKed it too).
	writing    map[netip.Addr]writer
	writingMAC map[string]netip.Addr // mac → an address in writing of its: no scan of writing per DISCOVER

	// cluster.pools[].reservations, read-only once built: the reserved
	// address of a MAC, and the MAC of a reserved address. Outside Range.
	reservationByMAC map[string]netip.Addr
	reservationByIP  map[netip.Addr]string
	// opts are the pool's configured options, encoded (options.go).
	opts []poolOption
	// answered are the clients a proxy pool answered lately, until when:
	// the rest of their boot (the 4011 request, iPXE's DHCP) is not
	// charged to the new-client budget again. Only clients that passed
	// the budget get in, so it holds at most about the budget's burst
	// plus its rate times proxyMemory (2,600 with the defaults); a budget
	// raised for a relay (64,000/s) could make that millions, hence
	// maxRemembered. Expired entries go at a sweep every proxyMemory/4
	// (nextSweep), not at every new client.
	answered  map[string]time.Time
	nextSweep time.Time

	// strangers caps what clients that are no registered machine's hold
	// (cluster.dhcp.unregistered_share): admitStranger.
	strangers strangerCap
}

// strangerCap is a pool's count of the addresses of its dynamic range
// kept from everyone else (countStrangersLocked) by MACs that belong to no
// registered machine, against its limit. Counting them exactly means a
// pass over the table, so it is recounted at the first stranger of the
// term, when it reaches the limit (at most every strangerRecount), and
// every strangerRefresh; each stranger admitted in between adds one: the
// count errs high (an offer never taken, a MAC registered since) until a
// recount puts it right.
type strangerCap struct {
	limit   int // 0: no cap
	counted int
	next    time.Time // the next recount at the limit
	refresh time.Time // the next recount in any case
}

// strangerRecount is how often a pool at its stranger cap recounts, and
// strangerRefresh how often it recounts in any case while strangers come
// (a MAC whose machine was deleted, say, is a stranger nobody counted).
const (
	strangerRecount = time.Second
	strangerRefresh = 30 * time.Second
)

func newPool(cfg config.Pool) *pool {
	p := &pool{cfg: cfg, byIP: map[netip.Addr]*lease.Lease{}, byMAC: map[string]*lease.Lease{},
		held: map[netip.Addr]hold{}, heldMAC: map[string]netip.Addr{}, writing: map[netip.Addr]writer{}, writingMAC: map[string]netip.Addr{}, declined: map[netip.Addr]quarantine{}, cursor: cfg.Range.Start,
		reservationByMAC: map[string]netip.Addr{}, reservationByIP: map[netip.Addr]string{}, opts: poolOptions(cfg), answered: map[string]time.Time{}}
	for _, r := range cfg.Reservations {
		if mac, err := config.ParseMAC(r.MAC); err == nil && r.Address.IsValid() {
			p.reservationByMAC[mac] = r.Address
			p.reservationByIP[r.Address] = mac
		}
	}
	return p
}

// reservedTo is the MAC ip is reserved for, if any.
func (p *pool) reservedTo(ip netip.Addr) (string, bool) {
	mac, ok := p.reservationByIP[ip]
	return mac, ok
}

// reservationOf is mac's reserved address, if it has one.
func (p *pool) reservationOf(mac string) (netip.Addr, bool) {
	ip, ok := p.reservationByMAC[mac]
	return ip, ok
}

// leasable reports whether ip is an address this pool hands out: in its
// dynamic range, or reserved for some MAC.
func (p *pool) leasable(ip netip.Addr) bool {
	_, reserved := p.reservationByIP[ip]
	return reserved || p.cfg.Range.Contains(ip)
}

// capStrangers limits the addresses of the dynamic range that clients no
// registered machine owns may hold to share percent (100: no cap).
func (p *pool) capStrangers(share int) {
	if share <= 0 || share >= 100 {
		return
	}
	p.strangers.limit = max(p.cfg.Range.Size()*share/100, 1)
}

// admitStranger reports whether mac, which no registered machine owns,
// may take ip (any address, if ip is not valid: a DISCOVER): it is
// counted already on that address (an unexpired lease, a live offer, or
// a lease write of its own still in flight, in the range), or the
// strangers hold less than their share, and then it is counted.
// registered tells the MACs of registered machines.
func (p *pool) admitStranger(now time.Time, mac string, ip netip.Addr, registered func(mac string) bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := &p.strangers
	if c.limit == 0 {
		return true
	}
	// Its own address, and one it may have now (a DISCOVER of a client
	// whose address was quarantined meanwhile is a new stranger).
	mine := func(a netip.Addr) bool {
		return p.cfg.Range.Contains(a) && (!ip.IsValid() || ip == a) && p.freeFor(a, mac, now)
	}
	if l := p.byMAC[mac]; l != nil && now.Before(l.Expiry) && mine(l.IP) {
		return true
	}
	if held, ok := p.heldMAC[mac]; ok && mine(held) {
		if h := p.held[held]; h.mac == mac && now.Before(h.until) {
			return true
		}
	}
	if w, ok := p.writingFor(mac); ok && mine(w) {
		return true // a write etcd never answered keeps the address its own
	}
	// The count errs high between recounts (but for the rare stranger
	// nobody counted: strangerRefresh), so it needs one at the limit, and
	// at the first stranger of the term, for the leases loaded: the
	// recount is a pass over the table under the pool's lock, tens of ms
	// with 100,000 leases.
	if !now.Before(c.refresh) || c.counted >= c.limit && !now.Before(c.next) {
		c.counted = p.countStrangersLocked(now, registered)
		c.next, c.refresh = now.Add(strangerRecount), now.Add(strangerRefresh)
	}
	if c.counted >= c.limit {
		return false
	}
	c.counted++
	return true
}

// writingFor is an address with a lease write of mac's in flight, if any.
func (p *pool) writingFor(mac string) (netip.Addr, bool) {
	ip, ok := p.writingMAC[mac]
	if w := p.writing[ip]; !ok || w.mac != mac {
		return netip.Addr{}, false
	}
	return ip, true
}

// countStrangersLocked counts the addresses of the dynamic range that
// MACs no registered machine owns keep from everyone else: leased or
// offered to them, unexpired; quarantined after their DECLINE; or with a
// lease write of theirs in flight (or whose outcome etcd never told: it
// keeps the address for the term). Each address counts once.
func (p *pool) countStrangersLocked(now time.Time, registered func(mac string) bool) int {
	stranger := func(ip netip.Addr) bool {
		if !p.cfg.Range.Contains(ip) {
			return false
		}
		if l := p.byIP[ip]; l != nil && now.Before(l.Expiry) && !registered(l.MAC) {
			return true
		}
		if h, ok := p.held[ip]; ok && now.Before(h.until) && !registered(h.mac) {
			return true
		}
		if q, ok := p.declined[ip]; ok && now.Before(q.until) && !registered(q.mac) {
			return true
		}
		if w, ok := p.writing[ip]; ok && !registered(w.mac) {
			return true
		}
		return false
	}
	// Every address is in one of these maps: the three small ones are
	// judged first, then each lease on an address none of them holds,
	// from its own value (the table may hold 100,000).
	n := 0
	for ip := range p.held {
		if stranger(ip) {
			n++
		}
	}
	for ip := range p.declined {
		if _, held := p.held[ip]; !held && stranger(ip) {
			n++
		}
	}
	for ip := range p.writing {
		_, held := p.held[ip]
		if _, declined := p.declined[ip]; !held && !declined && stranger(ip) {
			n++
		}
	}
	for ip, l := range p.byIP {
		if !now.Before(l.Expiry) || registered(l.MAC) || !p.cfg.Range.Contains(ip) {
			continue
		}
		_, held := p.held[ip]
		_, declined := p.declined[ip]
		if _, writing := p.writing[ip]; !held && !declined && !writing {
			n++
		}
	}
	return n
}

// makeRoom makes room in the empty table for n leases.
func (p *pool) makeRoom(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.byIP = make(map[netip.Addr]*lease.Lease, n)
	p.byMAC = make(map[string]*lease.Lease, n)
}

// load puts a lease read from etcd into the table.
func (p *pool) load(l lease.Lease) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setLocked(l)
}

func (p *pool) setLocked(l lease.Lease) {
	if old := p.byMAC[l.MAC]; old != nil && old.IP != l.IP {
		delete(p.byIP, old.IP)
	}
	if old := p.byIP[l.IP]; old != nil && old.MAC != l.MAC {
		delete(p.byMAC, old.MAC)
	}
	lc := l
	p.byIP[l.IP] = &lc
	p.byMAC[l.MAC] = &lc
}

// setHold holds ip for mac until then. heldMAC points each MAC at its
// latest hold, so a DISCOVER finds its offer without scanning every offer
// in flight (a boot storm made that quadratic); an entry goes with its
// hold, so heldMAC never has more entries than held, bounded by the range.
func (p *pool) setHold(ip netip.Addr, mac string, until time.Time) {
	if prev, ok := p.held[ip]; ok && prev.mac != mac && p.heldMAC[prev.mac] == ip {
		delete(p.heldMAC, prev.mac)
	}
	// One hold per MAC: a client that asks for another address gives up
	// the one it was offered (else a REQUEST naming a second free
	// address kept both, and made-up MACs holding their share of a pool
	// doubled it: cluster.dhcp.unregistered_share).
	if old, ok := p.heldMAC[mac]; ok && old != ip {
		if h := p.held[old]; h.mac == mac {
			delete(p.held, old)
		}
	}
	p.held[ip] = hold{mac: mac, until: until}
	p.heldMAC[mac] = ip
}

// dropHold forgets the hold on ip.
func (p *pool) dropHold(ip netip.Addr) {
	if h, ok := p.held[ip]; ok {
		if p.heldMAC[h.mac] == ip {
			delete(p.heldMAC, h.mac)
		}
		delete(p.held, ip)
	}
}

// freeFor reports whether ip may go to mac now.
func (p *pool) freeFor(ip netip.Addr, mac string, now time.Time) bool {
	// A reserved address goes to its MAC only, and a MAC with a
	// reservation gets nothing else.
	if owner, ok := p.reservationByIP[ip]; ok && owner != mac {
		return false
	}
	if reserved, ok := p.reservationByMAC[mac]; ok && reserved != ip {
		return false
	}
	if !p.leasable(ip) || p.own[ip] {
		return false
	}
	if q, ok := p.declined[ip]; ok {
		if now.Before(q.until) {
			return false
		}
		delete(p.declined, ip)
	}
	if h, ok := p.held[ip]; ok && h.mac != mac && now.Before(h.until) {
		return false
	}
	if w, ok := p.writing[ip]; ok && w.mac != mac {
		return false
	}
	if l := p.byIP[ip]; l != nil && l.MAC != mac && now.Before(l.Expiry) {
		return false
	}
	return true
}

// offer picks an address for mac and holds it for a while: the client's
// own lease (even expired, if nobody took it), else the address it asks
// for, else the next free one.
func (p *pool) offer(mac string, requested netip.Addr, now time.Time) (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	pick := func(ip netip.Addr) netip.Addr {
		p.setHold(ip, mac, now.Add(offerHold))
		return ip
	}
	if ip, ok := p.reservationByMAC[mac]; ok {
		if p.freeFor(ip, mac, now) {
			return pick(ip), nil
		}
		return netip.Addr{}, ErrReservationTaken
	}
	if l := p.byMAC[mac]; l != nil && p.freeFor(l.IP, mac, now) {
		return pick(l.IP), nil
	}
	if ip, ok := p.writingFor(mac); ok && p.freeFor(ip, mac, now) {
		// A write of its lease that etcd never answered: the address
		// is kept for it (and may be its lease in etcd).
		return pick(ip), nil
	}
	if ip, ok := p.heldMAC[mac]; ok {
		if h := p.held[ip]; h.mac == mac && now.Before(h.until) && p.freeFor(ip, mac, now) {
			return pick(ip), nil
		}
	}
	if requested.IsValid() && p.freeFor(requested, mac, now) {
		return pick(requested), nil
	}
	// Scan once round the range from the cursor, so that successive
	// clients get successive addresses without rescanning the start.
	r := p.cfg.Range
	ip := p.cursor
	for n := r.Size(); n > 0; n-- {
		if !r.Contains(ip) {
			ip = r.Start
		}
		if p.freeFor(ip, mac, now) {
			p.cursor = ip.Next()
			return pick(ip), nil
		}
		ip = ip.Next()
	}
	p.expireHolds(now)
	return netip.Addr{}, ErrPoolExhausted
}

// expireHolds forgets stale offers so the map cannot grow without bound.
func (p *pool) expireHolds(now time.Time) {
	for ip, h := range p.held {
		if !now.Before(h.until) {
			p.dropHold(ip)
		}
	}
}

// reserve checks that ip may be leased to mac and holds it while the
// lease is written to etcd, so two clients cannot both be ACKed it: the
// write begins here (writing) and ends with commit or failed.
func (p *pool) reserve(mac string, ip netip.Addr, now time.Time) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.freeFor(ip, mac, now) {
		return ErrNotAvailable
	}
	p.setHold(ip, mac, now.Add(offerHold))
	p.beginWriteLocked(ip, mac)
	return nil
}

// beginWriteLocked begins a write of ip by mac: endWriteLocked ends it.
func (p *pool) beginWriteLocked(ip netip.Addr, mac string) {
	w := p.writing[ip]
	w.mac, w.n = mac, w.n+1
	p.writing[ip] = w
	p.writingMAC[mac] = ip
}

// writer is who writes a lease on an address, and how many writes of it
// are in flight (a client's retransmitted REQUESTs).
type writer struct {
	mac string
	n   int
}

// endWriteLocked ends one write of ip by mac that reserve began.
func (p *pool) endWriteLocked(ip netip.Addr, mac string) {
	if w, ok := p.writing[ip]; ok && w.mac == mac {
		if w.n--; w.n > 0 {
			p.writing[ip] = w
		} else {
			delete(p.writing, ip)
			if p.writingMAC[mac] == ip {
				delete(p.writingMAC, mac)
			}
		}
	}
}

// commit records a lease that etcd accepted, and ends its write.
func (p *pool) commit(l lease.Lease) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.setLocked(l)
	if h, ok := p.held[l.IP]; ok && h.mac == l.MAC {
		p.dropHold(l.IP)
	}
	p.endWriteLocked(l.IP, l.MAC)
}

// failed ends a write that etcd did not take: the hold goes, and the
// address is free again once no other write of mac's is in flight.
func (p *pool) failed(ip netip.Addr, mac string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unholdLocked(ip, mac)
	p.endWriteLocked(ip, mac)
}

// unhold drops mac's hold on ip (the client chose another server, or
// gave the address up).
func (p *pool) unhold(ip netip.Addr, mac string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.unholdLocked(ip, mac)
}

func (p *pool) unholdLocked(ip netip.Addr, mac string) {
	if h, ok := p.held[ip]; ok && h.mac == mac {
		p.dropHold(ip)
	}
}

// leaseOf returns mac's lease on ip, if it holds one.
func (p *pool) leaseOf(mac string, ip netip.Addr) (lease.Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.byIP[ip]; l != nil && l.MAC == mac {
		return *l, true
	}
	return lease.Lease{}, false
}

// forget drops mac's lease on ip (release or decline).
func (p *pool) forget(mac string, ip netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forgetLocked(mac, ip)
}

// forgetLocked is forget; the caller holds p.mu.
func (p *pool) forgetLocked(mac string, ip netip.Addr) {
	if l := p.byIP[ip]; l != nil && l.MAC == mac {
		delete(p.byIP, ip)
		delete(p.byMAC, mac)
	}
	if h, ok := p.held[ip]; ok && h.mac == mac {
		p.dropHold(ip)
	}
}

// heldBy reports whether ip is mac's: leased to it or offered to it.
func (p *pool) heldBy(mac string, ip netip.Addr, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.byIP[ip]; l != nil && l.MAC == mac {
		return true
	}
	h, ok := p.held[ip]
	return ok && h.mac == mac && now.Before(h.until)
}

// knows reports whether mac is a client of this pool: it holds a lease
// (even an expired one nobody took) or an offer. A known client is not
// charged against the new-client budget, and may ask for an address
// without an offer.
func (p *pool) knows(mac string, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byMAC[mac] != nil {
		return true
	}
	if until, ok := p.answered[mac]; ok && now.Before(until) {
		return true
	}
	ip, ok := p.heldMAC[mac]
	if !ok {
		return false
	}
	h := p.held[ip]
	return h.mac == mac && now.Before(h.until)
}

// proxyMemory is how long a proxy pool remembers a client it answered:
// a whole PXE, 4011 and iPXE round, with the firmware's retries.
const proxyMemory = 2 * time.Minute

// maxRemembered bounds a proxy pool's memory of the clients it answered.
// A client it cannot remember is charged to the new-client budget again
// for the rest of its boot: slower under a flood, never wrong.
const maxRemembered = 1 << 16

// remember records that a proxy pool answered mac. Expired entries are
// swept at most every proxyMemory/4: sweeping whenever the map was big
// scanned all of it for every new client of a boot storm.
func (p *pool) remember(mac string, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !now.Before(p.nextSweep) {
		for m, until := range p.answered {
			if !now.Before(until) {
				delete(p.answered, m)
			}
		}
		p.nextSweep = now.Add(proxyMemory / 4)
	}
	if _, ok := p.answered[mac]; !ok && len(p.answered) >= maxRemembered {
		return
	}
	p.answered[mac] = now.Add(proxyMemory)
}

// decline forgets mac's hold on ip and avoids ip until then: something
// else may answer on it.
func (p *pool) decline(mac string, ip netip.Addr, until time.Time) {
	if !p.leasable(ip) {
		return // never offered; remembering it would let a flood grow the map
	}
	// Under one lock: between the two, the address would be free for
	// another client's DISCOVER.
	p.mu.Lock()
	defer p.mu.Unlock()
	p.forgetLocked(mac, ip)
	p.avoidLocked(ip, until, mac)
}

// avoid keeps ip from being offered until then, mac having declined it; a
// zero time gives it back at once.
func (p *pool) avoid(ip netip.Addr, until time.Time, mac string) {
	if !p.leasable(ip) {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.avoidLocked(ip, until, mac)
}

// avoidLocked is avoid for a leasable ip; the caller holds p.mu.
func (p *pool) avoidLocked(ip netip.Addr, until time.Time, mac string) {
	if until.IsZero() {
		delete(p.declined, ip)
		return
	}
	p.declined[ip] = quarantine{until: until, mac: mac}
}

// stats counts active leases and the free addresses of the dynamic
// range (reserved addresses lie outside it, and are nobody else's).
func (p *pool) stats(now time.Time) (active, free int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	inRange := 0
	for _, l := range p.byIP {
		if now.Before(l.Expiry) {
			active++
			if p.cfg.Range.Contains(l.IP) {
				inRange++
			}
		}
	}
	return active, p.cfg.Range.Size() - inRange
}

// leaseOfMAC is mac's lease in this pool, if it holds one.
func (p *pool) leaseOfMAC(mac string) (lease.Lease, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.byMAC[mac]; l != nil {
		return *l, true
	}
	return lease.Lease{}, false
}

// holdToGiveUp keeps ip, mac's previous lease, from every other client
// while its key is deleted from etcd, and reports whether it may be
// deleted: only while it is still mac's and nobody else holds it, so the
// delete never takes another client's lease. It is kept as a write in
// flight, not a hold (a client has one hold: its next packet would drop
// this one), until gaveUp.
func (p *pool) holdToGiveUp(mac string, ip netip.Addr, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.byIP[ip]; l == nil || l.MAC != mac {
		return false
	}
	if h, ok := p.held[ip]; ok && h.mac != mac && now.Before(h.until) {
		return false
	}
	if w, ok := p.writing[ip]; ok && w.mac != mac {
		return false
	}
	p.beginWriteLocked(ip, mac)
	return true
}

// takenBack reports whether mac holds ip again (leased, offered, or a
// write of its lease under way besides the give-up's own).
func (p *pool) takenBack(mac string, ip netip.Addr, now time.Time) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if l := p.byIP[ip]; l != nil && l.MAC == mac {
		return true
	}
	if h, ok := p.held[ip]; ok && h.mac == mac && now.Before(h.until) {
		return true
	}
	w := p.writing[ip]
	return w.mac == mac && w.n > 1
}

// gaveUp ends what holdToGiveUp began, once the delete has ended.
func (p *pool) gaveUp(mac string, ip netip.Addr) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.endWriteLocked(ip, mac)
}
