package dhcp

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/lease"
)

// A packet on port 67 that is not relayed and names a ciaddr other than
// its source would have its answer sent to that third host (RFC 2131
// unicasts to ciaddr): reflection, amplified by the pool's options in an
// INFORM's ACK. It is dropped, in full and in proxy pools.
func TestCiaddrOfAnotherHostIgnored(t *testing.T) {
	full, _, _ := fakeServer(t, testfakes.NewLeases(), testfakes.NewInstalled())
	proxy, _, _ := fakeProxyServer(t, Options{})
	attacker := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: dhcpv4.ClientPort}
	for name, c := range map[string]struct {
		s   *Server
		typ dhcpv4.MessageType
	}{
		"full inform":    {full, dhcpv4.MessageTypeInform},
		"full request":   {full, dhcpv4.MessageTypeRequest},
		"proxy discover": {proxy, dhcpv4.MessageTypeDiscover},
		"proxy inform":   {proxy, dhcpv4.MessageTypeInform},
	} {
		t.Run(name, func(t *testing.T) {
			req := discover(t, benchMAC(3), "pxe-bios", dhcpv4.WithMessageType(c.typ))
			req.ClientIPAddr = net.IPv4(127, 0, 0, 77) // the victim
			before := testutil.ToFloat64(c.s.metrics.ignored.WithLabelValues("ciaddr_mismatch"))
			c.s.handle(context.Background(), packet{data: req.ToBytes(), peer: attacker})
			if got := testutil.ToFloat64(c.s.metrics.ignored.WithLabelValues("ciaddr_mismatch")) - before; got != 1 {
				t.Errorf("ciaddr_mismatch counted %v times, want 1", got)
			}
			for _, typ := range []string{"offer", "ack"} {
				if v := testutil.ToFloat64(c.s.metrics.answered.WithLabelValues(typ)); v != 0 {
					t.Errorf("%v %s answers sent", v, typ)
				}
			}
		})
	}
	// A client that has its address asks from it: answered.
	req := discover(t, benchMAC(4), "pxe-bios", dhcpv4.WithMessageType(dhcpv4.MessageTypeInform))
	req.ClientIPAddr = net.IPv4(127, 0, 0, 1)
	full.handle(context.Background(), packet{data: req.ToBytes(), peer: attacker})
	if v := testutil.ToFloat64(full.metrics.answered.WithLabelValues("ack")); v != 1 {
		t.Errorf("an INFORM from its own ciaddr: %v ACKs, want 1", v)
	}
}

// An INFORM from a client the leader does not know pays from the
// new-client budget, as a DISCOVER does: its ACK, with the pool's
// options, is bigger than the request.
func TestInformChargedToTheBudget(t *testing.T) {
	s, _, _ := fakeServerWith(t, Options{Leases: testfakes.NewLeases(), Installed: testfakes.NewInstalled(),
		Limits: config.DHCP{NewClientsPerSecond: 0.001, NewClientsBurst: 2}})
	from := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: dhcpv4.ClientPort}
	for i := range 10 {
		req := discover(t, benchMAC(100+i), "pxe-bios", dhcpv4.WithMessageType(dhcpv4.MessageTypeInform))
		req.ClientIPAddr = net.IPv4(127, 0, 0, 1)
		s.handle(context.Background(), packet{data: req.ToBytes(), peer: from})
	}
	if v := testutil.ToFloat64(s.metrics.answered.WithLabelValues("ack")); v != 2 {
		t.Errorf("%v INFORMs from new clients answered, want the budget's 2", v)
	}
	if v := testutil.ToFloat64(s.metrics.ignored.WithLabelValues("new_client_budget")); v != 8 {
		t.Errorf("new_client_budget counted %v, want 8", v)
	}
}

// Older busybox udhcpc rebinds from 0.0.0.0 with its ciaddr set: let
// through when ciaddr is that MAC's own unexpired lease (the answer goes
// to the lease's holder), not otherwise.
func TestRebindFromZeroSourceAllowedForItsOwnLease(t *testing.T) {
	s, _, _ := fakeServer(t, testfakes.NewLeases(), testfakes.NewInstalled())
	ip := benchIP(7)
	s.term.Load().pools[0].load(lease.Lease{IP: ip, MAC: benchMAC(7).String(), Expiry: time.Now().Add(time.Hour)})
	zero := &net.UDPAddr{IP: net.IPv4zero, Port: dhcpv4.ClientPort}
	send := func(mac net.HardwareAddr) {
		req := discover(t, mac, "pxe-bios", dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest))
		req.ClientIPAddr = ip.AsSlice()
		s.handle(context.Background(), packet{data: req.ToBytes(), peer: zero})
	}
	send(benchMAC(7))
	if v := testutil.ToFloat64(s.metrics.ignored.WithLabelValues("ciaddr_mismatch")); v != 0 {
		t.Errorf("the lease's own MAC rebinding from 0.0.0.0 was dropped")
	}
	send(benchMAC(8))
	if v := testutil.ToFloat64(s.metrics.ignored.WithLabelValues("ciaddr_mismatch")); v != 1 {
		t.Errorf("another MAC naming that lease from 0.0.0.0: ciaddr_mismatch %v, want 1", v)
	}
}
