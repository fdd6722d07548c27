package dhcp

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/lease"
)

// heldLeases holds every Put until released, counting the writes waiting
// at once: what the lease store could group into one transaction.
type heldLeases struct {
	*testfakes.Leases
	release chan struct{}

	mu            sync.Mutex
	waiting, most int
}

func (h *heldLeases) Put(ctx context.Context, f election.Fence, l lease.Lease) error {
	h.mu.Lock()
	h.waiting++
	h.most = max(h.most, h.waiting)
	h.mu.Unlock()
	<-h.release
	h.mu.Lock()
	h.waiting--
	h.mu.Unlock()
	return h.Leases.Put(ctx, f, l)
}

func (h *heldLeases) counts() (waiting, most int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.waiting, h.most
}

// pxeRelayed is pxeRequest's packet as a relay forwards it.
func pxeRelayed(t *testing.T, typ dhcpv4.MessageType, mac net.HardwareAddr, ip net.IP) []byte {
	t.Helper()
	req := pxeRequest(t, typ, mac, ip)
	req.GatewayIPAddr, req.HopCount = loopback, 1
	return req.ToBytes()
}

// readAnswers reads answers at relay until n came or wait passed, by MAC.
func readAnswers(t *testing.T, relay *net.UDPConn, n int, wait time.Duration) map[string]*dhcpv4.DHCPv4 {
	t.Helper()
	got := map[string]*dhcpv4.DHCPv4{}
	relay.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 1500)
	for len(got) < n {
		k, _, err := relay.ReadFromUDP(buf)
		if err != nil {
			break
		}
		d, err := dhcpv4.FromBytes(buf[:k])
		if err != nil {
			t.Fatal(err)
		}
		got[d.ClientHWAddr.String()] = d
	}
	return got
}

// REQUESTs waiting for their lease do not hold the workers: with two
// workers, one waits for its own ACK (half the workers may), and the
// other ten of twelve clients' leases wait aside, all together (one
// transaction for all, in lease.Store), up to PendingACKs aside; then the
// second worker waits itself. Every ACK still goes out only once its
// lease is durable. Before, each worker waited for its ACK: the workers
// bounded the leases etcd could group (64 in production), and the packets
// behind them waited.
func TestWaitingACKsDoNotHoldWorkers(t *testing.T) {
	for _, tc := range []struct {
		name          string
		pending, want int
	}{
		{"default", 0, 12},        // all twelve wait together
		{"bounded", 3, 1 + 3 + 1}, // a worker, three aside, the other worker
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &heldLeases{Leases: testfakes.NewLeases(), release: make(chan struct{})}
			s, relay, _ := fakeServerWith(t, Options{Leases: h, Installed: testfakes.NewInstalled(), Workers: 2, PendingACKs: tc.pending})
			ctx, cancel := context.WithCancel(context.Background())
			served := make(chan error, 1)
			go func() { served <- s.Serve(ctx) }()
			released := false
			defer func() {
				if !released {
					close(h.release)
				}
				cancel()
				if err := <-served; err != nil {
					t.Error(err)
				}
			}()
			to := s.conn.LocalAddr().(*net.UDPAddr)
			const clients = 12
			for i := range clients {
				relay.WriteToUDP(pxeRelayed(t, dhcpv4.MessageTypeDiscover, benchMAC(100+i), nil), to)
			}
			offers := readAnswers(t, relay, clients, 2*time.Second)
			if len(offers) != clients {
				t.Fatalf("%d offers for %d clients", len(offers), clients)
			}
			for mac, o := range offers {
				hw, _ := net.ParseMAC(mac)
				relay.WriteToUDP(pxeRelayed(t, dhcpv4.MessageTypeRequest, hw, o.YourIPAddr), to)
			}
			waitFor(t, 2*time.Second, "leases waiting together", func() bool {
				w, _ := h.counts()
				return w >= tc.want
			})
			time.Sleep(100 * time.Millisecond) // more would come now, if the bound let them
			if _, most := h.counts(); most != tc.want {
				t.Fatalf("%d leases waited at once, want %d", most, tc.want)
			}
			if early := readAnswers(t, relay, 1, 50*time.Millisecond); len(early) > 0 {
				t.Fatal("an ACK went out before its lease was durable")
			}
			close(h.release)
			released = true
			acks := readAnswers(t, relay, clients, 2*time.Second)
			for mac, o := range offers {
				a := acks[mac]
				if a == nil || a.MessageType() != dhcpv4.MessageTypeAck || !a.YourIPAddr.Equal(o.YourIPAddr) {
					t.Fatalf("%s: offered %s, answered %v", mac, o.YourIPAddr, a)
				}
			}
			if ls, _ := h.List(ctx); len(ls) != clients {
				t.Fatalf("%d leases durable, want %d", len(ls), clients)
			}
		})
	}
}
