package dhcp

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/lease"
)

// scriptedLeases holds every Put until the test says how it ends (nil:
// durable).
type scriptedLeases struct {
	*testfakes.Leases
	calls chan chan error
}

func (s *scriptedLeases) Put(ctx context.Context, f election.Fence, l lease.Lease) error {
	c := make(chan error)
	s.calls <- c
	if err := <-c; err != nil {
		return err
	}
	return s.Leases.Put(ctx, f, l)
}

// scriptedServer serves on loopback with scriptedLeases until the test
// ends; send sends a relayed PXE packet to it.
func scriptedServer(t *testing.T) (*scriptedLeases, *net.UDPConn, func(dhcpv4.MessageType, net.HardwareAddr, net.IP)) {
	sl := &scriptedLeases{Leases: testfakes.NewLeases(), calls: make(chan chan error, 8)}
	s, relay, _ := fakeServerWith(t, Options{Leases: sl, Installed: testfakes.NewInstalled(), Workers: 8})
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go s.Serve(ctx)
	to := s.conn.LocalAddr().(*net.UDPAddr)
	return sl, relay, func(typ dhcpv4.MessageType, mac net.HardwareAddr, ip net.IP) {
		t.Helper()
		if _, err := relay.WriteToUDP(pxeRelayed(t, typ, mac, ip), to); err != nil {
			t.Fatal(err)
		}
	}
}

// A client retransmits its REQUEST while the first one's lease write
// hangs (a silent etcd member); the first write then fails, the second
// is still on its way. The address stays the client's until that write
// has ended: another client asking meanwhile is offered another address,
// and no address is ever ACKed to two MACs. (It was: the failed write
// dropped the hold, the address was offered to the second client, and
// both writes landed.)
func TestRetransmittedRequestKeepsItsAddress(t *testing.T) {
	sl, relay, send := scriptedServer(t)
	next := func() chan error {
		t.Helper()
		select {
		case c := <-sl.calls:
			return c
		case <-time.After(5 * time.Second):
			t.Fatal("no lease write")
			return nil
		}
	}
	mac1, mac2 := benchMAC(1), benchMAC(2)
	send(dhcpv4.MessageTypeDiscover, mac1, nil)
	a := readAnswers(t, relay, 1, 5*time.Second)[mac1.String()].YourIPAddr
	send(dhcpv4.MessageTypeRequest, mac1, a) // its write hangs
	first := next()
	send(dhcpv4.MessageTypeRequest, mac1, a) // the client retransmits
	second := next()
	first <- errors.New("etcd: connection closed (member left out)")

	send(dhcpv4.MessageTypeDiscover, mac2, a) // asks for mac1's address
	o2 := readAnswers(t, relay, 1, 5*time.Second)[mac2.String()]
	if o2 == nil {
		t.Fatal("no offer to the second client")
	}
	if o2.YourIPAddr.Equal(a) {
		t.Fatalf("%s offered to %s while %s's write of it is in flight", a, mac2, mac1)
	}
	send(dhcpv4.MessageTypeRequest, mac2, a) // and insists on it
	nak := readAnswers(t, relay, 1, 5*time.Second)[mac2.String()]
	if nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("REQUEST of %s by %s while %s's write is in flight: %v, want a NAK", a, mac2, mac1, nak)
	}
	second <- nil
	ack := readAnswers(t, relay, 1, 5*time.Second)[mac1.String()]
	if ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck || !ack.YourIPAddr.Equal(a) {
		t.Fatalf("the retransmitted REQUEST's answer: %v, want an ACK of %s", ack, a)
	}
	// Once every write has ended, the address is the lease's owner's,
	// and another client still gets another one.
	send(dhcpv4.MessageTypeRequest, mac2, a)
	if nak := readAnswers(t, relay, 1, 5*time.Second)[mac2.String()]; nak == nil || nak.MessageType() != dhcpv4.MessageTypeNak {
		t.Fatalf("REQUEST of %s (leased to %s) by %s: %v, want a NAK", a, mac1, mac2, nak)
	}
}

// A lease write whose call failed without etcd refusing it (a timeout on
// a slow member) may still be applied: the address stays its client's for
// the rest of the term, and another client is offered another one.
func TestUncertainWriteKeepsItsAddress(t *testing.T) {
	sl, relay, send := scriptedServer(t)
	mac1, mac2 := benchMAC(1), benchMAC(2)
	send(dhcpv4.MessageTypeDiscover, mac1, nil)
	a := readAnswers(t, relay, 1, 5*time.Second)[mac1.String()].YourIPAddr
	send(dhcpv4.MessageTypeRequest, mac1, a)
	select {
	case c := <-sl.calls:
		c <- context.DeadlineExceeded // the call gave up; etcd may apply it later
	case <-time.After(5 * time.Second):
		t.Fatal("no lease write")
	}
	send(dhcpv4.MessageTypeDiscover, mac2, a)
	o2 := readAnswers(t, relay, 1, 5*time.Second)[mac2.String()]
	if o2 == nil || o2.YourIPAddr.Equal(a) {
		t.Fatalf("offer to %s after %s's uncertain write of %s: %v", mac2, mac1, a, o2)
	}
}
