package dhcp

import (
	"bytes"
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/lease"
)

// proxyLoPool is the fakes' 127.0.0.0/8 as a proxy pool.
func proxyLoPool() config.Pool {
	return config.Pool{Subnet: netip.MustParsePrefix("127.0.0.0/8"), Mode: config.PoolProxy}
}

// fakeProxyServer is fakeServerWith whose one pool is in proxy mode. The
// advertise address (127.0.0.2) differs from the server identifier
// (127.0.0.1), so that an answer shows which one it names.
func fakeProxyServer(t testing.TB, o Options) (*Server, *net.UDPConn, *testfakes.Leases) {
	t.Helper()
	leases := testfakes.NewLeases()
	o.Leases = leases
	if o.Installed == nil {
		o.Installed = testfakes.NewInstalled()
	}
	s, relay, f := fakeServerWith(t, o)
	s.o.Pools = []config.Pool{proxyLoPool()}
	s.o.Advertise = addr("127.0.0.2")
	s.term.Store(&term{fence: f, pools: []*pool{newPool(proxyLoPool())}})
	return s, relay, leases
}

// Options an answer to a boot client in a proxy pool must not carry:
// they are the site's DHCP server's to give.
var addressOptions = []dhcpv4.OptionCode{dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainNameServer,
	dhcpv4.OptionIPAddressLeaseTime, dhcpv4.OptionRenewTimeValue, dhcpv4.OptionRebindingTimeValue}

// Every kind of boot client gets an OFFER with boot options only: no
// address, no address options, no 175.176; the vendor class, server
// identifier and boot file of a proxyDHCP server; option 43 "bypass
// discovery" only where the firmware boots from the offer itself (BIOS
// PXE, iPXE), and siaddr the leader's own address where UEFI PXE asks
// port 4011 next.
func TestProxyOfferBootOptionsOnly(t *testing.T) {
	for _, tc := range []struct {
		kind, file, class, siaddr string
		opt43                     bool
	}{
		{"bios-pxe", "undionly.kpxe", "PXEClient", "127.0.0.2", true},
		{"bios-pxe-no-arch", "undionly.kpxe", "PXEClient", "127.0.0.2", true},
		{"edk2-pxe-x64", "ipxe.efi", "PXEClient", "127.0.0.1", false},
		{"efi-bc-pxe", "ipxe.efi", "PXEClient", "127.0.0.1", false},
		{"http-x64", "http://127.0.0.1:4081/tftp/ipxe.efi", "HTTPClient", "0.0.0.0", false},
		// iPXE: siaddr set, or it drops the boot file (dhcp_has_pxeopts).
		{"ipxe-bios-rom", scriptURL, "PXEClient", "127.0.0.2", true},
		{"ipxe-efi", scriptURL, "PXEClient", "127.0.0.2", true},
	} {
		t.Run(tc.kind, func(t *testing.T) {
			s, relay, leases := fakeProxyServer(t, Options{})
			mac := benchMAC(1)
			offer := handleRelayed(t, s, relay, discover(t, mac, tc.kind))
			if offer == nil || offer.MessageType() != dhcpv4.MessageTypeOffer {
				t.Fatalf("answer %v, want an OFFER", offer)
			}
			if !offer.YourIPAddr.IsUnspecified() {
				t.Errorf("yiaddr %s in a proxy offer", offer.YourIPAddr)
			}
			for _, code := range addressOptions {
				if offer.Options.Has(code) {
					t.Errorf("option %s in a proxy offer", code)
				}
			}
			if offer.Options.Has(optIPXE) {
				t.Error("option 175 (176: skip the proxyDHCP wait) in a proxy offer")
			}
			if got := offer.ClassIdentifier(); got != tc.class {
				t.Errorf("option 60 %q, want %q", got, tc.class)
			}
			if got := offer.ServerIdentifier(); !got.Equal(loopback) {
				t.Errorf("option 54 %v, want 127.0.0.1", got)
			}
			if got := offer.BootFileNameOption(); got != tc.file {
				t.Errorf("option 67 %q, want %q", got, tc.file)
			}
			if offer.BootFileName != tc.file {
				t.Errorf("file %q, want %q", offer.BootFileName, tc.file)
			}
			if got := offer.ServerIPAddr.String(); got != tc.siaddr {
				t.Errorf("siaddr %s, want %s", got, tc.siaddr)
			}
			if got := offer.GetOneOption(dhcpv4.OptionVendorSpecificInformation); tc.opt43 != (got != nil) ||
				(tc.opt43 && !bytes.Equal(got, pxeBypassDiscovery)) {
				t.Errorf("option 43 %x (want it: %v)", got, tc.opt43)
			}
			if tc.kind == "edk2-pxe-x64" && !bytes.Equal(offer.GetOneOption(optClientGUID), edk2UUID) {
				t.Errorf("option 97 %x not echoed", offer.GetOneOption(optClientGUID))
			}
			// A REQUEST naming this server gets an ACK, also without an
			// address, and nothing is leased.
			req := requestFor(t, mac, nil, loopback, firmware[tc.kind]...)
			if ack := handleRelayed(t, s, relay, req); ack == nil || ack.MessageType() != dhcpv4.MessageTypeAck ||
				!ack.YourIPAddr.IsUnspecified() || ack.BootFileName != tc.file {
				t.Fatalf("REQUEST naming the proxy: %v", ack)
			}
			if leases.Puts != 0 {
				t.Fatalf("%d leases written in a proxy pool", leases.Puts)
			}
			fw := Classify(discover(t, mac, tc.kind)).Firmware.String()
			if got := testutil.ToFloat64(s.metrics.proxyAnswered.WithLabelValues("67", fw)); got != 2 {
				t.Errorf("mayu_dhcp_proxy_answers_total{port=67,firmware=%s} = %v, want 2", fw, got)
			}
		})
	}
}

// What is not a proxy's to answer gets nothing: a client without boot
// options, a firmware without a boot file, an installed machine, the
// client's exchange with the site's server, a follower.
func TestProxySilence(t *testing.T) {
	installed := benchMAC(9)
	site := net.IPv4(127, 0, 0, 254).To4()
	for _, tc := range []struct {
		name   string
		req    func(t *testing.T) *dhcpv4.DHCPv4
		reason string
	}{
		{"plain client", func(t *testing.T) *dhcpv4.DHCPv4 { return discover(t, benchMAC(1), "plain") }, "not_boot_client"},
		{"installer's udhcpc", func(t *testing.T) *dhcpv4.DHCPv4 { return discover(t, benchMAC(1), "initrd-udhcpc") }, "not_boot_client"},
		{"no build for IA32", func(t *testing.T) *dhcpv4.DHCPv4 { return discover(t, benchMAC(1), "efi-ia32-pxe") }, "no_boot_file"},
		{"installed", func(t *testing.T) *dhcpv4.DHCPv4 { return discover(t, installed, "bios-pxe") }, "installed"},
		{"REQUEST to the site's server", func(t *testing.T) *dhcpv4.DHCPv4 {
			return requestFor(t, benchMAC(1), net.IPv4(127, 0, 0, 50), site, firmware["bios-pxe"]...)
		}, "other_server"},
		{"INIT-REBOOT", func(t *testing.T) *dhcpv4.DHCPv4 {
			return requestFor(t, benchMAC(1), net.IPv4(127, 0, 0, 50), nil, firmware["bios-pxe"]...)
		}, "other_server"},
		{"RELEASE", func(t *testing.T) *dhcpv4.DHCPv4 {
			return newPacket(t, append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(benchMAC(1)), dhcpv4.WithMessageType(dhcpv4.MessageTypeRelease),
				dhcpv4.WithOption(dhcpv4.OptServerIdentifier(site))}, firmware["bios-pxe"]...)...)
		}, "other_server"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, relay, _ := fakeProxyServer(t, Options{Installed: testfakes.NewInstalled(installed.String())})
			if got := handleRelayed(t, s, relay, tc.req(t)); got != nil {
				t.Fatalf("answered %s", got.Summary())
			}
			if got := counter(t, s.metrics.ignored, tc.reason); got != 1 {
				t.Fatalf("ignored{reason=%s} = %v", tc.reason, got)
			}
		})
	}
	t.Run("follower", func(t *testing.T) {
		s, relay, _ := fakeProxyServer(t, Options{})
		s.term.Store(nil)
		if got := handleRelayed(t, s, relay, discover(t, benchMAC(1), "bios-pxe")); got != nil {
			t.Fatalf("a follower answered %s", got.Summary())
		}
	})
}

// The new-client budget holds in proxy pools: a flood of made-up MACs
// gets no more answers than the bucket holds, while a client already
// answered goes on with its boot (its next DHCP, its 4011 request)
// without paying again.
func TestProxyBudget(t *testing.T) {
	s, relay, _ := fakeProxyServer(t, Options{Limits: config.DHCP{NewClientsPerSecond: 0.001, NewClientsBurst: 2}})
	for i := 1; i <= 2; i++ {
		if handleRelayed(t, s, relay, discover(t, benchMAC(i), "edk2-pxe-x64")) == nil {
			t.Fatalf("client %d not answered within the burst", i)
		}
	}
	if got := handleRelayed(t, s, relay, discover(t, benchMAC(3), "edk2-pxe-x64")); got != nil {
		t.Fatal("a third new client answered past a burst of 2")
	}
	if got := counter(t, s.metrics.ignored, "new_client_budget"); got != 1 {
		t.Fatalf("new_client_budget = %v", got)
	}
	if handleRelayed(t, s, relay, discover(t, benchMAC(1), "ipxe-efi")) == nil {
		t.Fatal("an answered client's iPXE was charged again")
	}
	x := bootServerRequest(t, s, benchMAC(2), "edk2-pxe-x64", "127.0.0.20", BootServerPort)
	if resp, _, outcome := s.bootServer(x, s.term.Load()); resp == nil {
		t.Fatalf("an answered client's 4011 request: %s", outcome)
	}
	x = bootServerRequest(t, s, benchMAC(4), "edk2-pxe-x64", "127.0.0.21", BootServerPort)
	if _, _, outcome := s.bootServer(x, s.term.Load()); outcome != "new_client_budget" {
		t.Fatalf("a new client's 4011 request past the budget: %s", outcome)
	}
}

// bootServerRequest is the exchange of a REQUEST to port 4011 as kind
// sends it from ci, source port port.
func bootServerRequest(t *testing.T, s *Server, mac net.HardwareAddr, kind, ci string, port int) *exchange {
	t.Helper()
	req := newPacket(t, append([]dhcpv4.Modifier{dhcpv4.WithHwAddr(mac), dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(net.ParseIP(ci))}, firmware[kind]...)...)
	return &exchange{ctx: context.Background(), log: s.o.Log, term: s.term.Load(), req: req, mac: mac.String(), now: time.Now(),
		peer: &net.UDPAddr{IP: net.ParseIP(ci), Port: port}}
}

// The boot-server port: EDK2 asks from 4011 and gets its ACK there, iPXE
// from 68; the ACK has the boot file and the advertise address as
// siaddr (TFTP from any replica), no address, no 43. Anything else is
// refused with its reason.
func TestBootServerRequests(t *testing.T) {
	s, _, _ := fakeProxyServer(t, Options{Installed: testfakes.NewInstalled(benchMAC(9).String())})
	t.Run("edk2 from 4011", func(t *testing.T) {
		x := bootServerRequest(t, s, benchMAC(1), "edk2-pxe-x64", "127.0.0.9", BootServerPort)
		resp, dst, outcome := s.bootServer(x, s.term.Load())
		if resp == nil {
			t.Fatalf("not answered: %s", outcome)
		}
		if dst.String() != "127.0.0.9:4011" {
			t.Errorf("answer to %s, want 127.0.0.9:4011", dst)
		}
		if resp.MessageType() != dhcpv4.MessageTypeAck || !resp.YourIPAddr.IsUnspecified() || resp.BootFileName != "ipxe.efi" ||
			resp.ServerIPAddr.String() != "127.0.0.2" || resp.ClassIdentifier() != "PXEClient" ||
			!resp.ServerIdentifier().Equal(loopback) || resp.ClientIPAddr.String() != "127.0.0.9" {
			t.Errorf("answer %s", resp.Summary())
		}
		for _, code := range append(addressOptions, dhcpv4.OptionVendorSpecificInformation, optIPXE) {
			if resp.Options.Has(code) {
				t.Errorf("option %s in a boot-server ACK", code)
			}
		}
	})
	t.Run("ipxe from 68", func(t *testing.T) {
		x := bootServerRequest(t, s, benchMAC(2), "ipxe-efi", "127.0.0.10", dhcpv4.ClientPort)
		resp, dst, outcome := s.bootServer(x, s.term.Load())
		// siaddr set: iPXE drops a ProxyDHCP ACK without one.
		if resp == nil || resp.BootFileName != scriptURL || dst.String() != "127.0.0.10:68" || resp.Options.Has(optIPXE) ||
			resp.ServerIPAddr.IsUnspecified() {
			t.Fatalf("answer %v to %v (%s)", resp, dst, outcome)
		}
	})
	for _, tc := range []struct {
		name, kind, ci string
		peer           *net.UDPAddr
		mac            net.HardwareAddr
		want           string
	}{
		{"ciaddr is not the sender", "edk2-pxe-x64", "127.0.0.9", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 8), Port: 4011}, benchMAC(1), "bad_source"},
		{"no ciaddr", "edk2-pxe-x64", "0.0.0.0", &net.UDPAddr{IP: net.IPv4zero, Port: 4011}, benchMAC(1), "bad_source"},
		// Where rp_filter lets a spoofed source in, an answer to the
		// subnet's broadcast or network address would reach every host.
		{"the subnet's broadcast address", "edk2-pxe-x64", "127.255.255.255", &net.UDPAddr{IP: net.IPv4(127, 255, 255, 255), Port: 4011}, benchMAC(1), "bad_source"},
		{"the subnet's network address", "edk2-pxe-x64", "127.0.0.0", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 0), Port: 4011}, benchMAC(1), "bad_source"},
		{"another port", "edk2-pxe-x64", "127.0.0.9", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 9), Port: 53}, benchMAC(1), "bad_source"},
		{"installed", "edk2-pxe-x64", "127.0.0.9", nil, benchMAC(9), "installed"},
		{"plain client", "plain", "127.0.0.9", nil, benchMAC(1), "not_boot_client"},
		{"no build for IA32", "efi-ia32-pxe", "127.0.0.9", nil, benchMAC(1), "no_boot_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := bootServerRequest(t, s, tc.mac, tc.kind, tc.ci, BootServerPort)
			if tc.peer != nil {
				x.peer = tc.peer
			}
			if resp, _, outcome := s.bootServer(x, s.term.Load()); resp != nil || outcome != tc.want {
				t.Fatalf("answer %v, outcome %s, want %s", resp, outcome, tc.want)
			}
		})
	}
	t.Run("full pool", func(t *testing.T) {
		full, _, _ := fakeServer(t, testfakes.NewLeases(), testfakes.NewInstalled())
		x := bootServerRequest(t, full, benchMAC(1), "edk2-pxe-x64", "127.0.0.9", BootServerPort)
		if resp, _, outcome := full.bootServer(x, full.term.Load()); resp != nil || outcome != "no_pool" {
			t.Fatalf("a full pool's client answered on 4011: %v %s", resp, outcome)
		}
	})
}

// A lease left in etcd from when a pool was in full mode is not loaded
// into it once it is a proxy pool: the site's server owns those
// addresses now.
func TestProxyPoolLoadsNoLeases(t *testing.T) {
	leases := testfakes.NewLeases()
	f := election.Fence{Key: "/mayu/election/fake", Rev: 7}
	if err := leases.Put(context.Background(), f, lease.Lease{IP: addr("127.0.0.5"), MAC: benchMAC(1).String(),
		Expiry: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	s := New(Options{Pools: []config.Pool{proxyLoPool()}, Leases: leases, Installed: testfakes.NewInstalled(), Log: testLogger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Lead(ctx, f)
	waitFor(t, 5*time.Second, "leads", s.Leading)
	if active, _ := s.term.Load().pools[0].stats(time.Now()); active != 0 {
		t.Fatalf("%d leases loaded into a proxy pool", active)
	}
}
