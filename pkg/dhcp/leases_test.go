package dhcp

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/lease"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func addr(s string) netip.Addr { return netip.MustParseAddr(s) }

func macN(i int) string { return fmt.Sprintf("52:54:00:00:%02x:%02x", i>>8, i&0xff) }

// testPool is 10.0.0.0/24 leasing .100-.150 for ten minutes.
func testPool() *pool {
	return newPool(config.Pool{
		Subnet:    netip.MustParsePrefix("10.0.0.0/24"),
		Range:     config.Range{Start: addr("10.0.0.100"), End: addr("10.0.0.150")},
		LeaseTime: 10 * time.Minute,
	})
}

// smallPool has the eight addresses of a /29.
func smallPool() *pool {
	return newPool(config.Pool{
		Subnet:    netip.MustParsePrefix("10.0.1.0/24"),
		Range:     config.Range{Start: addr("10.0.1.8"), End: addr("10.0.1.15")},
		LeaseTime: 10 * time.Minute,
	})
}

func mustOffer(t *testing.T, p *pool, mac string, requested netip.Addr, now time.Time) netip.Addr {
	t.Helper()
	ip, err := p.offer(mac, requested, now)
	if err != nil {
		t.Fatalf("offer to %s: %v", mac, err)
	}
	if !p.cfg.Range.Contains(ip) {
		t.Fatalf("offer to %s: %s is outside the range %s", mac, ip, p.cfg.Range)
	}
	return ip
}

// ack reserves and commits ip for mac, as an ACK does.
func ack(t *testing.T, p *pool, mac string, ip netip.Addr, now time.Time) lease.Lease {
	t.Helper()
	if err := p.reserve(mac, ip, now); err != nil {
		t.Fatalf("reserve %s for %s: %v", ip, mac, err)
	}
	l := lease.Lease{IP: ip, MAC: mac, Expiry: now.Add(p.cfg.LeaseTime), Leader: "t"}
	p.commit(l)
	return l
}

func TestPoolSuccessiveAddresses(t *testing.T) {
	p := testPool()
	seen := map[netip.Addr]string{}
	want := addr("10.0.0.100")
	for i := 0; i < 20; i++ {
		mac := macN(i)
		ip := mustOffer(t, p, mac, netip.Addr{}, t0)
		if other, dup := seen[ip]; dup {
			t.Fatalf("%s offered to %s and %s", ip, other, mac)
		}
		seen[ip] = mac
		if ip != want {
			t.Errorf("client %d got %s, want %s", i, ip, want)
		}
		want = ip.Next()
	}
}

func TestPoolSameMACSameAddress(t *testing.T) {
	p := testPool()
	a := mustOffer(t, p, macN(1), netip.Addr{}, t0)
	b := mustOffer(t, p, macN(2), netip.Addr{}, t0)

	// A repeated DISCOVER (the client did not see the offer).
	if again := mustOffer(t, p, macN(1), netip.Addr{}, t0.Add(time.Second)); again != a {
		t.Fatalf("second offer %s, first %s", again, a)
	}
	// Asking for another free address does not move an outstanding offer.
	if again := mustOffer(t, p, macN(1), addr("10.0.0.140"), t0.Add(2*time.Second)); again != a {
		t.Fatalf("offer with a request: %s, want the held %s", again, a)
	}
	// After commit.
	ack(t, p, macN(1), a, t0.Add(3*time.Second))
	if again := mustOffer(t, p, macN(1), netip.Addr{}, t0.Add(time.Minute)); again != a {
		t.Fatalf("offer after commit %s, want %s", again, a)
	}
	if again := mustOffer(t, p, macN(1), addr("10.0.0.141"), t0.Add(time.Minute)); again != a {
		t.Fatalf("offer after commit, with a request: %s, want its lease %s", again, a)
	}
	// After its lease expired, if nobody took the address.
	late := t0.Add(time.Hour)
	if again := mustOffer(t, p, macN(1), netip.Addr{}, late); again != a {
		t.Fatalf("offer after expiry %s, want %s", again, a)
	}
	// b was only offered, long ago: it too comes back to its client while
	// free, but the cursor does not hand it to a new client first.
	if c := mustOffer(t, p, macN(3), netip.Addr{}, late); c == a || c == b {
		t.Fatalf("a new client got %s (a=%s b=%s)", c, a, b)
	}
}

func TestPoolExpiredLeaseTakenByAnother(t *testing.T) {
	p := smallPool()
	now := t0
	var first netip.Addr
	for i := 0; i < 8; i++ {
		ip := mustOffer(t, p, macN(i), netip.Addr{}, now)
		ack(t, p, macN(i), ip, now)
		if i == 0 {
			first = ip
		}
	}
	if _, err := p.offer(macN(100), netip.Addr{}, now); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("full pool: %v", err)
	}
	// All leases run out; a new client takes the first address.
	now = now.Add(11 * time.Minute)
	ip := mustOffer(t, p, macN(100), first, now)
	if ip != first {
		t.Fatalf("new client asked for expired %s, got %s", first, ip)
	}
	ack(t, p, macN(100), ip, now)
	// Its old owner comes back: a different address now.
	if back := mustOffer(t, p, macN(0), netip.Addr{}, now); back == first {
		t.Fatalf("old owner got %s back although %s holds it", back, macN(100))
	}
	if _, ok := p.leaseOf(macN(0), first); ok {
		t.Fatal("the old owner still has a lease on the address")
	}
	if l, ok := p.leaseOf(macN(100), first); !ok || l.MAC != macN(100) {
		t.Fatalf("new owner's lease: %+v %v", l, ok)
	}
}

func TestPoolRequestedAddress(t *testing.T) {
	p := testPool()
	want := addr("10.0.0.120")
	if ip := mustOffer(t, p, macN(1), want, t0); ip != want {
		t.Fatalf("requested free %s, got %s", want, ip)
	}
	// Held for macN(1): another client asking for it gets another.
	if ip := mustOffer(t, p, macN(2), want, t0); ip == want {
		t.Fatalf("requested address held by another client was offered again")
	}
	ack(t, p, macN(1), want, t0)
	if ip := mustOffer(t, p, macN(3), want, t0.Add(time.Minute)); ip == want {
		t.Fatalf("requested address leased to another client was offered")
	}
	// Outside the range, or outside the subnet: ignored.
	for _, req := range []string{"10.0.0.99", "10.0.0.151", "10.0.0.255", "192.168.1.5", "::1"} {
		ip := mustOffer(t, p, macN(4), addr(req), t0)
		if ip.String() == req {
			t.Fatalf("requested %s was offered", req)
		}
	}
}

func TestPoolReserve(t *testing.T) {
	p := testPool()
	ip := mustOffer(t, p, macN(1), netip.Addr{}, t0)
	// Held (offered) to macN(1).
	if err := p.reserve(macN(2), ip, t0); !errors.Is(err, ErrNotAvailable) {
		t.Fatalf("reserve of an address offered to another: %v", err)
	}
	// Nor one offered to another client that it did not ask for.
	free := mustOffer(t, p, macN(3), netip.Addr{}, t0)
	if err := p.reserve(macN(1), free, t0); !errors.Is(err, ErrNotAvailable) {
		t.Fatalf("reserve of an address held for another: %v", err)
	}
	ack(t, p, macN(1), ip, t0)
	if err := p.reserve(macN(2), ip, t0.Add(time.Minute)); !errors.Is(err, ErrNotAvailable) {
		t.Fatalf("reserve of an address leased to another: %v", err)
	}
	// Its owner renews.
	if err := p.reserve(macN(1), ip, t0.Add(time.Minute)); err != nil {
		t.Fatalf("owner renews: %v", err)
	}
	p.commit(lease.Lease{IP: ip, MAC: macN(1), Expiry: t0.Add(11 * time.Minute)})
	// Outside the range.
	for _, s := range []string{"10.0.0.1", "10.0.0.151", "10.9.9.9"} {
		if err := p.reserve(macN(1), addr(s), t0); !errors.Is(err, ErrNotAvailable) {
			t.Fatalf("reserve %s outside the range: %v", s, err)
		}
	}
	// A failed write drops only the writer's own hold.
	other := addr("10.0.0.130")
	if err := p.reserve(macN(5), other, t0); err != nil {
		t.Fatal(err)
	}
	p.unhold(other, macN(6))
	if err := p.reserve(macN(6), other, t0); !errors.Is(err, ErrNotAvailable) {
		t.Fatalf("unhold by another MAC dropped the hold: %v", err)
	}
	p.failed(other, macN(5))
	if err := p.reserve(macN(6), other, t0); err != nil {
		t.Fatalf("after unhold: %v", err)
	}
	// After the lease expired, anyone.
	if err := p.reserve(macN(2), ip, t0.Add(time.Hour)); err != nil {
		t.Fatalf("reserve of an expired lease: %v", err)
	}
}

func TestPoolReserveConcurrent(t *testing.T) {
	p := testPool()
	ip := addr("10.0.0.110")
	var wg sync.WaitGroup
	start := make(chan struct{})
	errs := make([]error, 16)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = p.reserve(macN(i), ip, t0)
		}()
	}
	close(start)
	wg.Wait()
	won := 0
	for i, err := range errs {
		switch {
		case err == nil:
			won++
		case !errors.Is(err, ErrNotAvailable):
			t.Errorf("client %d: %v", i, err)
		}
	}
	if won != 1 {
		t.Fatalf("%d clients reserved %s, want exactly 1", won, ip)
	}
}

func TestPoolExhaustion(t *testing.T) {
	p := smallPool()
	got := map[netip.Addr]bool{}
	for i := 0; i < 8; i++ {
		got[mustOffer(t, p, macN(i), netip.Addr{}, t0)] = true
	}
	if len(got) != 8 {
		t.Fatalf("8 clients got %d addresses", len(got))
	}
	for i := 8; i < 12; i++ {
		ip, err := p.offer(macN(i), netip.Addr{}, t0.Add(time.Second))
		if !errors.Is(err, ErrPoolExhausted) || ip.IsValid() {
			t.Fatalf("offer %d in a full pool: %s, %v", i, ip, err)
		}
	}
	// A client that already holds an offer still gets it.
	if ip, err := p.offer(macN(3), netip.Addr{}, t0.Add(time.Second)); err != nil || !got[ip] {
		t.Fatalf("holder in a full pool: %s, %v", ip, err)
	}
	// Offers not taken up lapse; the addresses come back.
	later := t0.Add(offerHold + time.Second)
	if ip := mustOffer(t, p, macN(20), netip.Addr{}, later); !got[ip] {
		t.Fatalf("after offers lapsed: %s", ip)
	}
	// Leases do not lapse until they expire.
	q := smallPool()
	for i := 0; i < 8; i++ {
		ack(t, q, macN(i), mustOffer(t, q, macN(i), netip.Addr{}, t0), t0)
	}
	if _, err := q.offer(macN(20), netip.Addr{}, t0.Add(offerHold+time.Second)); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("leased pool after the offer hold: %v", err)
	}
	// Once they expire, they do.
	mustOffer(t, q, macN(20), netip.Addr{}, t0.Add(10*time.Minute))
	// An empty range (start after end) is exhausted at once.
	e := newPool(config.Pool{Subnet: netip.MustParsePrefix("10.0.2.0/24"),
		Range: config.Range{Start: addr("10.0.2.9"), End: addr("10.0.2.8")}, LeaseTime: time.Minute})
	if _, err := e.offer(macN(1), netip.Addr{}, t0); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("empty range: %v", err)
	}
}

func TestPoolWrapsAround(t *testing.T) {
	p := smallPool()
	for i := 0; i < 8; i++ {
		ip := mustOffer(t, p, macN(i), netip.Addr{}, t0)
		if i < 2 {
			ack(t, p, macN(i), ip, t0) // .8 and .9 stay leased
		}
	}
	// The other offers lapse; the scan wraps round from the end of the
	// range and skips the two leases.
	later := t0.Add(offerHold + time.Second)
	if ip := mustOffer(t, p, macN(50), netip.Addr{}, later); ip != addr("10.0.1.10") {
		t.Fatalf("after wrapping: %s, want 10.0.1.10", ip)
	}
}

func TestPoolDecline(t *testing.T) {
	p := smallPool()
	ip := mustOffer(t, p, macN(1), netip.Addr{}, t0)
	ack(t, p, macN(1), ip, t0)
	const quarantine = 10 * time.Minute
	p.decline(macN(1), ip, t0.Add(time.Second+quarantine))
	if _, ok := p.leaseOf(macN(1), ip); ok {
		t.Fatal("declined lease still in the table")
	}
	// Nobody gets it during the quarantine, not even by asking for it,
	// and not the client that declined it.
	during := t0.Add(quarantine / 2)
	for i := 1; i < 8; i++ {
		if got := mustOffer(t, p, macN(i), ip, during); got == ip {
			t.Fatalf("declined %s offered to %s during the quarantine", ip, macN(i))
		}
	}
	if _, err := p.offer(macN(9), netip.Addr{}, during); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("7 free addresses for 8 clients: %v", err)
	}
	if err := p.reserve(macN(1), ip, during); !errors.Is(err, ErrNotAvailable) {
		t.Fatalf("reserve of a declined address: %v", err)
	}
	// After it, the address is free again.
	after := t0.Add(quarantine + 2*time.Second)
	if got := mustOffer(t, p, macN(10), ip, after); got != ip {
		t.Fatalf("after the quarantine: %s, want %s", got, ip)
	}
}

func TestPoolDeclineOutsideRangeRemembersNothing(t *testing.T) {
	p := smallPool()
	for i := 0; i < 1000; i++ {
		p.decline(macN(1), addr(fmt.Sprintf("192.168.%d.%d", i/256, i%256)), t0.Add(time.Hour))
	}
	if n := len(p.declined); n != 0 {
		t.Fatalf("%d declined addresses outside the range kept in memory", n)
	}
}

func TestPoolReleaseAndLoad(t *testing.T) {
	p := testPool()
	ip := mustOffer(t, p, macN(1), netip.Addr{}, t0)
	ack(t, p, macN(1), ip, t0)
	// Forgetting another MAC's lease does nothing.
	p.forget(macN(2), ip)
	if _, ok := p.leaseOf(macN(1), ip); !ok {
		t.Fatal("forget by another MAC dropped the lease")
	}
	p.forget(macN(1), ip)
	if _, ok := p.leaseOf(macN(1), ip); ok {
		t.Fatal("released lease still there")
	}
	if err := p.reserve(macN(2), ip, t0); err != nil {
		t.Fatalf("released address: %v", err)
	}

	// Loading leases from etcd: a MAC with a newer lease elsewhere keeps
	// only that one; an address given to another MAC drops the old owner.
	q := testPool()
	q.load(lease.Lease{IP: addr("10.0.0.101"), MAC: macN(1), Expiry: t0.Add(time.Minute)})
	q.load(lease.Lease{IP: addr("10.0.0.102"), MAC: macN(1), Expiry: t0.Add(time.Minute)})
	q.load(lease.Lease{IP: addr("10.0.0.103"), MAC: macN(2), Expiry: t0.Add(time.Minute)})
	q.load(lease.Lease{IP: addr("10.0.0.103"), MAC: macN(3), Expiry: t0.Add(time.Minute)})
	if len(q.byIP) != 2 || len(q.byMAC) != 2 {
		t.Fatalf("table after load: byIP %d byMAC %d, want 2 and 2", len(q.byIP), len(q.byMAC))
	}
	if ip := mustOffer(t, q, macN(1), netip.Addr{}, t0); ip != addr("10.0.0.102") {
		t.Fatalf("macN(1) offered %s, want its loaded 10.0.0.102", ip)
	}
	if ip := mustOffer(t, q, macN(3), netip.Addr{}, t0); ip != addr("10.0.0.103") {
		t.Fatalf("macN(3) offered %s, want its loaded 10.0.0.103", ip)
	}
	if ip := mustOffer(t, q, macN(2), addr("10.0.0.103"), t0); ip == addr("10.0.0.103") {
		t.Fatal("macN(2) got the address that now belongs to macN(3)")
	}
}

func TestPoolStats(t *testing.T) {
	p := testPool() // 51 addresses
	if a, f := p.stats(t0); a != 0 || f != 51 {
		t.Fatalf("empty: active %d free %d", a, f)
	}
	for i := 0; i < 5; i++ {
		ip := mustOffer(t, p, macN(i), netip.Addr{}, t0)
		if i < 3 {
			ack(t, p, macN(i), ip, t0.Add(time.Duration(i)*time.Minute))
		}
	}
	// Offers are not leases.
	if a, f := p.stats(t0); a != 3 || f != 48 {
		t.Fatalf("3 leases, 2 offers: active %d free %d", a, f)
	}
	// macN(0)'s lease ends first.
	if a, f := p.stats(t0.Add(10*time.Minute + time.Second)); a != 2 || f != 49 {
		t.Fatalf("one expired: active %d free %d", a, f)
	}
	if a, f := p.stats(t0.Add(time.Hour)); a != 0 || f != 51 {
		t.Fatalf("all expired: active %d free %d", a, f)
	}
}

func TestReservedAddressesAreNeverOffered(t *testing.T) {
	p := testPool()
	now := time.Now()
	first, err := p.offer("52:54:00:00:00:01", netip.Addr{}, now)
	if err != nil {
		t.Fatal(err)
	}
	p2 := testPool()
	p2.own = map[netip.Addr]bool{first: true}
	got, err := p2.offer("52:54:00:00:00:01", first, now)
	if err != nil || got == first {
		t.Fatalf("offered the reserved %s: %s %v", first, got, err)
	}
	if p2.reserve("52:54:00:00:00:02", first, now) == nil {
		t.Fatal("a reserved address was reserved for a client")
	}
}

func TestOnlyTheHolderMayDecline(t *testing.T) {
	p := testPool()
	now := time.Now()
	ip, _ := p.offer("52:54:00:00:00:01", netip.Addr{}, now)
	if p.heldBy("52:54:00:00:00:99", ip, now) {
		t.Fatal("a stranger holds another client's offer")
	}
	if !p.heldBy("52:54:00:00:00:01", ip, now) {
		t.Fatal("the client does not hold its own offer")
	}
	p.commit(lease.Lease{IP: ip, MAC: "52:54:00:00:00:01", Expiry: now.Add(time.Hour)})
	if !p.heldBy("52:54:00:00:00:01", ip, now) || p.heldBy("52:54:00:00:00:99", ip, now) {
		t.Fatal("lease holder check")
	}
}

// A proxy pool sweeps the clients it remembers at most every
// proxyMemory/4, not for every new client once it knows 1024 (a boot
// storm's every DISCOVER scanned the whole map), and remembers no more
// than maxRemembered.
func TestProxyMemorySweepsNowAndThen(t *testing.T) {
	p := newPool(config.Pool{Subnet: netip.MustParsePrefix("10.20.0.0/22"), Mode: config.PoolProxy})
	t0 := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	p.remember("02:00:00:00:00:00", t0) // the first sweep: the next is due at t0 + proxyMemory/4
	// 2000 clients whose memory ran out a while ago.
	for i := range 2000 {
		p.answered[fmt.Sprintf("expired-%d", i)] = t0.Add(-time.Second)
	}
	p.remember("02:00:00:00:00:01", t0.Add(time.Second))
	if n := len(p.answered); n != 2002 {
		t.Fatalf("%d clients remembered after a new one before the sweep is due, want 2002 (no sweep)", n)
	}
	if !p.knows("02:00:00:00:00:01", t0.Add(time.Second)) {
		t.Fatal("the client just answered is not known")
	}
	p.remember("02:00:00:00:00:02", t0.Add(proxyMemory/4))
	if n := len(p.answered); n != 3 {
		t.Fatalf("%d clients remembered after the sweep, want the 3 unexpired", n)
	}

	// At the cap a new client is not remembered; one already there is
	// remembered again.
	later := t0.Add(proxyMemory / 2)
	for i := len(p.answered); i < maxRemembered; i++ {
		p.answered[fmt.Sprintf("cap-%d", i)] = later.Add(proxyMemory)
	}
	p.remember("02:00:00:00:00:03", later)
	if len(p.answered) != maxRemembered || p.knows("02:00:00:00:00:03", later) {
		t.Errorf("%d remembered, new client known %v: want the cap %d and the new client not remembered",
			len(p.answered), p.knows("02:00:00:00:00:03", later), maxRemembered)
	}
	p.remember("02:00:00:00:00:01", later)
	if until := p.answered["02:00:00:00:00:01"]; !until.Equal(later.Add(proxyMemory)) {
		t.Errorf("a remembered client answered again is remembered until %v, want %v", until, later.Add(proxyMemory))
	}
}
