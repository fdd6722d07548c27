package dhcp

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/config"
)

// optionsPool is loPool with every kind of configured option.
func optionsPool() config.Pool {
	p := loPool()
	p.DomainName = "lab.example.com"
	p.DomainSearch = []string{"lab.example.com", "example.com"}
	p.NTP = []netip.Addr{addr("127.0.0.123")}
	p.MTU = 1400
	p.Options = []config.DHCPOption{
		{Code: 252, Type: config.OptionString, Value: config.OptionValue{"http://127.0.0.1/wpad.dat"}, Always: true},
		{Code: 224, Type: config.OptionHex, Value: config.OptionValue{"01:02:03"}},
	}
	return p
}

// requesting is a parameter request list (option 55) of codes.
func requesting(cs ...uint8) dhcpv4.Modifier {
	list := make([]dhcpv4.OptionCode, len(cs))
	for i, c := range cs {
		list[i] = dhcpv4.GenericOptionCode(c)
	}
	return dhcpv4.WithOption(dhcpv4.OptParameterRequestList(list...))
}

// noPRL removes option 55: a client that asks for nothing in particular.
func noPRL(d *dhcpv4.DHCPv4) { d.Options.Del(dhcpv4.OptionParameterRequestList) }

func has(resp *dhcpv4.DHCPv4, code uint8) bool {
	return resp.Options.Has(dhcpv4.GenericOptionCode(code))
}

// The pool's options reach a client in its OFFER and ACK when it asks for
// them (or, marked always, unasked), and not otherwise; a client with no
// request list gets them all.
func TestPoolOptionsInAnswers(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	srv, _ := leadingServer(t, cli, Options{Pools: []config.Pool{optionsPool()}})
	r := newRelay(t, srv)

	t.Run("requested ones, and the always-sent one", func(t *testing.T) {
		r.t = t
		req := discover(t, hw(1), "plain", requesting(1, 3, 6, 15, 42))
		offer := r.expect(req, dhcpv4.MessageTypeOffer)
		for _, resp := range []*dhcpv4.DHCPv4{offer, r.expect(mustRequest(t, offer, requesting(1, 3, 6, 15, 42)), dhcpv4.MessageTypeAck)} {
			if got := resp.DomainName(); got != "lab.example.com" {
				t.Errorf("%s: domain name %q", resp.MessageType(), got)
			}
			if got := resp.NTPServers(); len(got) != 1 || got[0].String() != "127.0.0.123" {
				t.Errorf("%s: NTP %v", resp.MessageType(), got)
			}
			if got := resp.GetOneOption(dhcpv4.GenericOptionCode(252)); string(got) != "http://127.0.0.1/wpad.dat" {
				t.Errorf("%s: option 252 (always) = %q", resp.MessageType(), got)
			}
			for _, c := range []uint8{26, 119, 224} {
				if has(resp, c) {
					t.Errorf("%s: option %d sent, not requested", resp.MessageType(), c)
				}
			}
		}
	})
	t.Run("the others when requested", func(t *testing.T) {
		r.t = t
		offer := r.expect(discover(t, hw(2), "plain", requesting(26, 119, 224)), dhcpv4.MessageTypeOffer)
		if got := offer.GetOneOption(dhcpv4.OptionInterfaceMTU); !bytes.Equal(got, []byte{0x05, 0x78}) {
			t.Errorf("MTU %x", got)
		}
		if got := offer.DomainSearch(); got == nil || strings.Join(got.Labels, " ") != "lab.example.com example.com" {
			t.Errorf("search %v", got)
		}
		if got := offer.GetOneOption(dhcpv4.GenericOptionCode(224)); !bytes.Equal(got, []byte{1, 2, 3}) {
			t.Errorf("option 224 %x", got)
		}
		if has(offer, 15) || has(offer, 42) {
			t.Error("unrequested 15 or 42 sent")
		}
	})
	t.Run("no request list: all of them", func(t *testing.T) {
		r.t = t
		offer := r.expect(discover(t, hw(3), "plain", noPRL), dhcpv4.MessageTypeOffer)
		for _, c := range []uint8{15, 26, 42, 119, 224, 252} {
			if !has(offer, c) {
				t.Errorf("option %d missing", c)
			}
		}
	})
	t.Run("an INFORM is answered with them", func(t *testing.T) {
		r.t = t
		inf := newPacket(t, dhcpv4.WithHwAddr(hw(5)), dhcpv4.WithMessageType(dhcpv4.MessageTypeInform),
			dhcpv4.WithClientIP(net.IPv4(127, 0, 0, 120)), requesting(42))
		ack := r.expect(inf, dhcpv4.MessageTypeAck)
		if got := ack.NTPServers(); len(got) != 1 || !ack.YourIPAddr.IsUnspecified() || has(ack, 15) {
			t.Errorf("ACK to INFORM: %s", ack.Summary())
		}
	})
	t.Run("a NAK carries none", func(t *testing.T) {
		r.t = t
		nak := r.expect(requestFor(t, hw(4), net.IPv4(127, 0, 0, 120), loopback, noPRL), dhcpv4.MessageTypeNak)
		for _, c := range []uint8{15, 26, 42, 119, 224, 252} {
			if has(nak, c) {
				t.Errorf("NAK carries option %d", c)
			}
		}
	})
}

func mustRequest(t *testing.T, offer *dhcpv4.DHCPv4, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	t.Helper()
	req, err := dhcpv4.NewRequestFromOffer(offer, mods...)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// receiveRaw waits for the answer to xid and returns its bytes as sent.
func (r *relay) receiveRaw(xid dhcpv4.TransactionID) []byte {
	r.t.Helper()
	deadline := time.Now().Add(answerWait)
	buf := make([]byte, 65536)
	for {
		r.conn.SetReadDeadline(deadline)
		n, _, err := r.conn.ReadFromUDP(buf)
		if err != nil {
			r.t.Fatalf("no answer: %v", err)
		}
		if resp, err := dhcpv4.FromBytes(buf[:n]); err == nil && resp.TransactionID == xid {
			return append([]byte(nil), buf[:n]...)
		}
	}
}

// An answer never exceeds what the client accepts: 576 bytes of IP
// datagram without option 57, else what it says (up to 1500). The
// configured options that do not fit are left out, last first, and
// counted; mayu's own (the boot file) always stay.
func TestPoolOptionsFitTheClient(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	p := loPool()
	// Six options of 200 bytes, always sent: 1212 bytes in all.
	for i := range 6 {
		p.Options = append(p.Options, config.DHCPOption{Code: 200 + i, Type: config.OptionHex,
			Value: config.OptionValue{strings.Repeat(string(rune('a'+i))+"0", 200)}, Always: true})
	}
	srv, _ := leadingServer(t, cli, Options{Pools: []config.Pool{p}})
	r := newRelay(t, srv)
	dropped := func() (n float64) {
		for i := range 6 {
			n += counter(t, srv.metrics.optionsDropped, strconv.Itoa(200+i))
		}
		return n
	}
	for _, tc := range []struct {
		name    string
		maxSize int // option 57; 0: none
		limit   int // largest DHCP message (UDP payload) allowed
		kept    int // options of the six that fit
	}{
		{"no option 57: 576-byte datagrams", 0, 548, 1},
		{"option 57 below the minimum counts as 576", 300, 548, 1},
		{"option 57 of 1000", 1000, 972, 3},
		{"option 57 of 1500", 1500, 1472, 5},
		{"option 57 above 1500 is capped: no fragments", 9000, 1472, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r.t = t
			mods := []dhcpv4.Modifier{noPRL}
			if tc.maxSize > 0 {
				mods = append(mods, dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(uint16(tc.maxSize))))
			}
			before := dropped()
			req := relayed(discover(t, hw(10+tc.maxSize%97), "bios-pxe", mods...))
			r.sendRaw(req.ToBytes())
			raw := r.receiveRaw(req.TransactionID)
			if len(raw) > tc.limit {
				t.Fatalf("a %d-byte answer; the client takes %d", len(raw), tc.limit)
			}
			offer, err := dhcpv4.FromBytes(raw)
			if err != nil {
				t.Fatal(err)
			}
			kept := 0
			for i := range 6 {
				if has(offer, uint8(200+i)) {
					kept++
					if i >= tc.kept {
						t.Errorf("option %d kept while an earlier one was dropped", 200+i)
					}
				}
			}
			if kept != tc.kept {
				t.Errorf("%d of the 6 options kept in %d bytes, want %d", kept, len(raw), tc.kept)
			}
			if got := dropped() - before; int(got) != 6-tc.kept {
				t.Errorf("mayu_dhcp_options_dropped_total rose by %v, want %d", got, 6-tc.kept)
			}
			if offer.BootFileName != "undionly.kpxe" || offer.MessageType() != dhcpv4.MessageTypeOffer {
				t.Errorf("mayu's own answer changed: %s", offer.Summary())
			}
		})
	}
}

// The pool's options encode as the RFCs say.
func TestPoolOptionsEncoding(t *testing.T) {
	opts := poolOptions(optionsPool())
	want := map[uint8][]byte{
		26:  {0x05, 0x78},
		15:  []byte("lab.example.com"),
		42:  {127, 0, 0, 123},
		119: append([]byte("\x03lab\x07example\x03com\x00"), "\x07example\x03com\x00"...),
		252: []byte("http://127.0.0.1/wpad.dat"),
		224: {1, 2, 3},
	}
	if len(opts) != len(want) {
		t.Fatalf("%d options, want %d", len(opts), len(want))
	}
	for _, o := range opts {
		if w := want[o.code.Code()]; !bytes.Equal(o.data, w) {
			t.Errorf("option %d = %q, want %q", o.code.Code(), o.data, w)
		}
	}
}
