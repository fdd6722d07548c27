package dhcp

import (
	"net/netip"
	"testing"

	"github.com/mayu-boot/mayu/pkg/lease"
)

// A boot storm: thousands of clients DISCOVER, none REQUESTs yet, each
// DISCOVERs again. Every client gets its own offer back, and the index of
// holds by MAC stays as small as the holds themselves.
func TestPoolStormOffers(t *testing.T) {
	p := newPool(benchPool())
	const clients = 5000
	first := map[string]netip.Addr{}
	seen := map[netip.Addr]string{}
	for round := 0; round < 3; round++ {
		for i := 0; i < clients; i++ {
			mac := benchMAC(i).String()
			ip := mustOffer(t, p, mac, netip.Addr{}, t0)
			if round == 0 {
				if other, dup := seen[ip]; dup {
					t.Fatalf("%s offered to %s and %s", ip, other, mac)
				}
				seen[ip], first[mac] = mac, ip
			} else if ip != first[mac] {
				t.Fatalf("round %d: %s offered %s, first %s", round, mac, ip, first[mac])
			}
		}
	}
	if len(p.held) != clients || len(p.heldMAC) != clients {
		t.Fatalf("%d holds, %d indexed by MAC; want %d", len(p.held), len(p.heldMAC), clients)
	}
	// The holds expire; a new client takes an expired hold's address, and
	// the index forgets the old holder.
	late := t0.Add(offerHold + 1)
	p.expireHolds(late)
	if len(p.held) != 0 || len(p.heldMAC) != 0 {
		t.Fatalf("after expiry: %d holds, %d indexed", len(p.held), len(p.heldMAC))
	}
	for i := 0; i < clients; i++ {
		mustOffer(t, p, benchMAC(clients+i).String(), netip.Addr{}, late)
	}
	if len(p.heldMAC) > len(p.held) {
		t.Fatalf("%d indexed holds for %d holds", len(p.heldMAC), len(p.held))
	}
}

// A hold overwritten by another client (after it expired) leaves no stale
// index entry behind.
func TestPoolHoldTakenOver(t *testing.T) {
	p := smallPool()
	a, b := macN(1), macN(2)
	ip := mustOffer(t, p, a, netip.Addr{}, t0)
	late := t0.Add(offerHold + 1)
	if got := mustOffer(t, p, b, ip, late); got != ip {
		t.Fatalf("b asked for the expired offer %s, got %s", ip, got)
	}
	if _, ok := p.heldMAC[a]; ok {
		t.Fatal("a is still indexed as holding an address it lost")
	}
	if got := mustOffer(t, p, a, netip.Addr{}, late); got == ip {
		t.Fatalf("a was offered %s, now b's", ip)
	}
	if err := p.reserve(b, ip, late); err != nil {
		t.Fatal(err)
	}
	p.commit(lease.Lease{IP: ip, MAC: b, Expiry: late.Add(p.cfg.LeaseTime)})
	if _, ok := p.heldMAC[b]; ok {
		t.Fatal("b's hold outlived its commit")
	}
}
