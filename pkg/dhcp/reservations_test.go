package dhcp

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/registry"
)

// reservedPool is testPool with 10.0.0.50 reserved for macN(900).
func reservedPool() *pool {
	cfg := testPool().cfg
	cfg.Reservations = []config.Reservation{{MAC: macN(900), Address: addr("10.0.0.50")}}
	return newPool(cfg)
}

func TestPoolReservation(t *testing.T) {
	p := reservedPool()
	owner := macN(900)
	if ip, err := p.offer(owner, addr("10.0.0.120"), t0); err != nil || ip != addr("10.0.0.50") {
		t.Fatalf("offer to the reserved MAC: %s %v", ip, err)
	}
	ack(t, p, owner, addr("10.0.0.50"), t0)
	// Nobody else gets it, asked for or not, while the range lasts.
	for i := range 51 {
		ip, err := p.offer(macN(i), addr("10.0.0.50"), t0)
		if err != nil || ip == addr("10.0.0.50") || !p.cfg.Range.Contains(ip) {
			t.Fatalf("offer to %s: %s %v", macN(i), ip, err)
		}
	}
	if err := p.reserve(macN(1), addr("10.0.0.50"), t0); err == nil {
		t.Fatal("another MAC reserved the reserved address")
	}
	// The reserved MAC gets no dynamic address.
	if err := p.reserve(owner, addr("10.0.0.149"), t0); err == nil {
		t.Fatal("the reserved MAC took a dynamic address")
	}
	// The reserved lease is not counted against the dynamic range
	// (the offers above are holds, not leases).
	if active, free := p.stats(t0); active != 1 || free != 51 {
		t.Errorf("stats: %d active, %d free; want 1, 51", active, free)
	}
}

// A reserved address held by another MAC (a lease from before the
// reservation) or quarantined is not replaced by a dynamic one.
func TestPoolReservationTaken(t *testing.T) {
	p := reservedPool()
	p.load(leaseFor(macN(1), "10.0.0.50", t0.Add(time.Hour)))
	if _, err := p.offer(macN(900), netip.Addr{}, t0); !errors.Is(err, ErrReservationTaken) {
		t.Fatalf("offer while another MAC holds it: %v", err)
	}
	if ip, err := p.offer(macN(900), netip.Addr{}, t0.Add(2*time.Hour)); err != nil || ip != addr("10.0.0.50") {
		t.Fatalf("offer once that lease expired: %s %v", ip, err)
	}
	q := reservedPool()
	q.decline(macN(900), addr("10.0.0.50"), t0.Add(time.Minute))
	if _, err := q.offer(macN(900), netip.Addr{}, t0); !errors.Is(err, ErrReservationTaken) {
		t.Fatalf("offer while quarantined: %v", err)
	}
}

// Reservations against a real etcd, on the leader's real path.
func TestReservationsServed(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	reg := registry.New(cli, registry.Options{Prefix: prefix, Replica: "t", Cluster: config.Cluster{
		Static: config.Static{Subnet: netip.MustParsePrefix("10.50.0.0/24"),
			Range: config.Range{Start: addr("10.50.0.10"), End: addr("10.50.0.20")}},
	}})
	installedMAC := hw(0x50)
	installMachine(t, reg, "installed-reserved", installedMAC)
	installed := registry.NewInstalled()
	go reg.FollowInstalled(ctx, installed, testLogger(t))
	waitFor(t, 10*time.Second, "installed MAC known", func() bool { return installed.Has(installedMAC.String()) })

	// First without reservations: mac 3 gets a dynamic lease.
	plain := loPool()
	first, stopFirst := leadingServer(t, cli, Options{Pools: []config.Pool{plain}, Installed: installed, Replica: "first"})
	_, oldAck := newRelay(t, first).lease(hw(3), "plain")
	stopFirst()

	pc := loPool()
	pc.Reservations = []config.Reservation{
		{MAC: hw(1).String(), Address: addr("127.0.0.60")},
		{MAC: hw(3).String(), Address: addr("127.0.0.63")},
		{MAC: installedMAC.String(), Address: addr("127.0.0.64")},
		{MAC: hw(0x60).String(), Address: addr("127.0.0.62")},
	}
	srv, _ := leadingServer(t, cli, Options{Pools: []config.Pool{pc}, Installed: installed, Replica: "second"})
	r := newRelay(t, srv)
	sid := loopback

	t.Run("the reserved MAC gets its address, durably", func(t *testing.T) {
		r.t = t
		offer, ack := r.lease(hw(1), "bios-pxe")
		if offer.YourIPAddr.String() != "127.0.0.60" || ack.BootFileName != "undionly.kpxe" {
			t.Fatalf("offer %s, ack %s", offer.Summary(), ack.Summary())
		}
		if l, _, ok := storedLease(t, cli, ack.YourIPAddr); !ok || l.MAC != hw(1).String() {
			t.Fatalf("lease in etcd: %+v %v", l, ok)
		}
	})
	t.Run("another MAC asking for it is NAKed, and offered another", func(t *testing.T) {
		r.t = t
		offer := r.expect(discover(t, hw(2), "plain", dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(net.IPv4(127, 0, 0, 60)))), dhcpv4.MessageTypeOffer)
		if offer.YourIPAddr.String() == "127.0.0.60" || !inRange(pc, offer.YourIPAddr) {
			t.Fatalf("offered %s", offer.YourIPAddr)
		}
		before := counter(t, srv.metrics.naks, "reserved")
		r.expect(requestFor(t, hw(2), net.IPv4(127, 0, 0, 60), sid), dhcpv4.MessageTypeNak)
		if got := counter(t, srv.metrics.naks, "reserved") - before; got != 1 {
			t.Errorf("naks{reserved} rose by %v", got)
		}
		if l, _, _ := storedLease(t, cli, net.IPv4(127, 0, 0, 60)); l.MAC != hw(1).String() {
			t.Fatalf("the reserved lease now names %s", l.MAC)
		}
	})
	t.Run("a reserved MAC's old dynamic lease is given up", func(t *testing.T) {
		r.t = t
		old := oldAck.YourIPAddr
		if _, _, ok := storedLease(t, cli, old); !ok {
			t.Fatal("the dynamic lease is not in etcd to begin with")
		}
		// Its INIT-REBOOT for the old address: NAK, start over.
		r.expect(requestFor(t, hw(3), old, nil), dhcpv4.MessageTypeNak)
		if got := counter(t, srv.metrics.naks, "has_reservation"); got != 1 {
			t.Errorf("naks{has_reservation} = %v", got)
		}
		offer, ack := r.lease(hw(3), "plain")
		if offer.YourIPAddr.String() != "127.0.0.63" || ack.YourIPAddr.String() != "127.0.0.63" {
			t.Fatalf("offer %s, ack %s", offer.YourIPAddr, ack.YourIPAddr)
		}
		if l, _, ok := storedLease(t, cli, ack.YourIPAddr); !ok || l.MAC != hw(3).String() {
			t.Fatalf("reserved lease in etcd: %+v %v", l, ok)
		}
		waitFor(t, 5*time.Second, "old lease removed from etcd", func() bool {
			_, _, ok := storedLease(t, cli, old)
			return !ok
		})
		// The delete is visible in etcd a moment before the server
		// hears it ended and gives the address back to its pool.
		oldAddr, _ := netip.AddrFromSlice(old.To4())
		waitFor(t, 5*time.Second, "old address back in the pool", func() bool {
			pl := srv.term.Load().pools[0]
			pl.mu.Lock()
			defer pl.mu.Unlock()
			return pl.freeFor(oldAddr, hw(4).String(), time.Now())
		})
		// The old address is free for others again.
		other := r.expect(discover(t, hw(4), "plain", dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(old))), dhcpv4.MessageTypeOffer)
		if !other.YourIPAddr.Equal(old) {
			t.Errorf("the given-up address %s was not offered to another client: %s", old, other.YourIPAddr)
		}
	})
	t.Run("an installed machine with a reservation still gets no answer", func(t *testing.T) {
		r.t = t
		r.expectNone(discover(t, installedMAC, "bios-pxe"), "installed machine")
		r.expectNone(requestFor(t, installedMAC, net.IPv4(127, 0, 0, 64), sid), "installed machine")
		if _, _, ok := storedLease(t, cli, net.IPv4(127, 0, 0, 64)); ok {
			t.Fatal("a lease was written for an installed machine")
		}
	})
	t.Run("MACs racing for a reserved address", func(t *testing.T) {
		r.t = t
		const spoofers = 8
		owner, target := hw(0x60), net.IPv4(127, 0, 0, 62)
		var wg sync.WaitGroup
		results := make(chan string, 3*spoofers+1)
		reservedNAKs := counter(t, srv.metrics.naks, "reserved")
		for i := range spoofers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rr := newRelay(t, srv)
				mac := hw(0x70 + i)
				// Known to the server (it holds an offer), asking for
				// the reserved address in its DISCOVER first.
				offer := rr.exchange(discover(t, mac, "plain", dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(target))), answerWait)
				if offer == nil || offer.YourIPAddr.Equal(target) {
					results <- "bad offer"
				}
				// SELECTING (naming this server) and INIT-REBOOT.
				for _, id := range []net.IP{sid, nil} {
					if resp := rr.exchange(requestFor(t, mac, target, id), answerWait); resp == nil {
						results <- "none"
					} else {
						results <- resp.MessageType().String() + " " + resp.YourIPAddr.String()
					}
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rr := newRelay(t, srv)
			offer := rr.exchange(discover(t, owner, "plain"), answerWait)
			if offer == nil {
				results <- "owner: no offer"
				return
			}
			req, err := dhcpv4.NewRequestFromOffer(offer)
			if err != nil {
				results <- "owner: " + err.Error()
				return
			}
			if ack := rr.exchange(req, answerWait); ack == nil {
				results <- "owner: no ack"
			} else {
				results <- "owner: " + ack.MessageType().String() + " " + ack.YourIPAddr.String()
			}
		}()
		wg.Wait()
		close(results)
		naks := 0
		for res := range results {
			switch res {
			case "owner: ACK 127.0.0.62":
			case "NAK 0.0.0.0":
				naks++
			default:
				t.Errorf("answer %q", res)
			}
		}
		if naks != 2*spoofers {
			t.Errorf("%d NAKs to %d spoofed REQUESTs", naks, 2*spoofers)
		}
		if got := counter(t, srv.metrics.naks, "reserved") - reservedNAKs; got != 2*spoofers {
			t.Errorf("naks{reserved} rose by %v, want %d", got, 2*spoofers)
		}
		if l, _, ok := storedLease(t, cli, target); !ok || l.MAC != owner.String() {
			t.Fatalf("the reserved lease names %+v (%v)", l, ok)
		}
	})
}

func leaseFor(mac, ip string, expiry time.Time) lease.Lease {
	return lease.Lease{IP: addr(ip), MAC: mac, Expiry: expiry, Leader: "t"}
}
