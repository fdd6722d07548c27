package dhcp

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/insomniacslk/dhcp/rfc1035label"

	"github.com/mayu-boot/mayu/pkg/config"
)

// sampleClient is a kind of boot client whose answer `mayu -check` shows:
// the DHCPDISCOVER its firmware broadcasts.
type sampleClient struct {
	Name     string
	Discover []dhcpv4.Modifier
}

func codes(cs ...uint8) dhcpv4.Modifier {
	list := make([]dhcpv4.OptionCode, len(cs))
	for i, c := range cs {
		list[i] = dhcpv4.GenericOptionCode(c)
	}
	return dhcpv4.WithOption(dhcpv4.OptParameterRequestList(list...))
}

// pxeServerOptions are the PXE-specific codes every PXE client lists.
var pxeServerOptions = []uint8{128, 129, 130, 131, 132, 133, 134, 135}

// sampleClients are four kinds of boot client, each with the parameter
// request list (option 55) and maximum message size (option 57) its
// firmware sends: Intel's BIOS PXE ROM, EDK2's (OVMF's) PXE and HTTP boot
// (PxeBcDhcp4.c, HttpBootDhcp4.c), and iPXE (net/udp/dhcp.c).
var sampleClients = []sampleClient{
	{"BIOS PXE (arch 0)", []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00000:UNDI:002001")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.INTEL_X86PC)),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(1260)),
		codes(append([]uint8{1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 43, 54, 60, 67}, pxeServerOptions...)...),
	}},
	{"UEFI x64 PXE (arch 7)", []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003000")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(1472)),
		codes(append([]uint8{1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60, 66, 67, 97},
			pxeServerOptions...)...),
	}},
	{"UEFI x64 HTTP boot (arch 16)", []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("HTTPClient:Arch:00016:UNDI:003000")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64_HTTP)),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(1472)),
		codes(1, 2, 3, 4, 5, 6, 12, 13, 15, 17, 18, 22, 23, 28, 40, 41, 42, 43, 50, 51, 54, 58, 59, 60, 67, 97),
	}},
	{"iPXE", []dhcpv4.Modifier{
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier("PXEClient:Arch:00007:UNDI:003010")),
		dhcpv4.WithOption(dhcpv4.OptClientArch(iana.EFI_X86_64)),
		dhcpv4.WithGeneric(dhcpv4.OptionUserClassInformation, []byte("iPXE")),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(1472)),
		codes(append(append([]uint8{1, 3, 6, 7, 12, 15, 17, 26, 43, 60, 66, 67, 119}, pxeServerOptions...), 175, 203)...),
	}},
}

// Preview is what one kind of client is offered in one pool.
type Preview struct {
	Client string
	// Offer is the OFFER, nil if none would be sent (Why says why).
	Offer *dhcpv4.DHCPv4
	Why   string
	// NotSent are the pool's configured options left out of the OFFER,
	// each with its reason.
	NotSent []string
}

// PreviewOffers builds, for each of the pools in o and each sample
// client, the OFFER the leader would send, through the code that answers
// live: Classify, Decide, the pool's offer, answer and its options.
// o.ServerIP stands in for the leader's own address, which only the
// running leader knows.
func PreviewOffers(o Options) [][]Preview {
	o.Registerer = nil
	s := New(o)
	s.serverIP = o.ServerIP
	var out [][]Preview
	for _, pc := range o.Pools {
		var pool []Preview
		for i, c := range sampleClients {
			pool = append(pool, s.preview(pc, c, i))
		}
		out = append(out, pool)
	}
	return out
}

func (s *Server) preview(pc config.Pool, c sampleClient, i int) Preview {
	pv := Preview{Client: c.Name}
	mac := net.HardwareAddr{0x02, 0, 0, 0, 0, byte(i)} // locally administered: no real machine's
	req, err := dhcpv4.NewDiscovery(mac, c.Discover...)
	if err == nil {
		req, err = dhcpv4.FromBytes(req.ToBytes()) // as the server reads it
	}
	if err != nil {
		pv.Why = err.Error()
		return pv
	}
	now := time.Now()
	p := s.leaderPool(pc)
	x := &exchange{ctx: context.Background(), log: s.o.Log, req: req, mac: mac.String(), pool: p, now: now,
		dec: Decide(Classify(req), false, s.o.Policy)}
	if pc.Proxy() {
		// What the proxy sends on port 67: boot options, no address.
		if x.dec.BootFile == "" {
			pv.Why = "no boot file for this client (" + x.dec.Reason + ")"
			return pv
		}
		pv.Offer = s.proxyAnswer(x, Classify(req), dhcpv4.MessageTypeOffer, false)
		if pv.Offer == nil {
			pv.Why = "the answer could not be built"
		}
		return pv
	}
	ip, err := p.offer(x.mac, netip.Addr{}, now)
	if err != nil {
		pv.Why = err.Error()
		return pv
	}
	pv.Offer = s.answer(x, dhcpv4.MessageTypeOffer, ip)
	if pv.Offer == nil {
		pv.Why = "the answer could not be built"
		return pv
	}
	for _, po := range p.opts {
		switch {
		case pv.Offer.Options.Has(po.code):
		case !po.always && !req.IsOptionRequested(po.code):
			pv.NotSent = append(pv.NotSent, fmt.Sprintf("%d (%s): not requested", po.code.Code(), po.key))
		default:
			pv.NotSent = append(pv.NotSent, fmt.Sprintf("%d (%s): left out, the reply would exceed the client's %d-byte limit",
				po.code.Code(), po.key, replyLimit(req)))
		}
	}
	return pv
}

// DescribeOptions lists the options of an answer, one line each, by code:
// "1 Subnet Mask: 255.255.255.0". The pool's configured options are
// printed by their configured type.
func DescribeOptions(resp *dhcpv4.DHCPv4, pc config.Pool) []string {
	typed := map[uint8]string{15: config.OptionString, 26: config.OptionUint16, 42: config.OptionIPs, 119: "domains"}
	for _, o := range pc.Options {
		if o.Code >= 1 && o.Code <= 254 {
			typed[uint8(o.Code)] = o.Type
		}
	}
	var lines []string
	for code := 1; code < 255; code++ {
		data := resp.Options.Get(dhcpv4.GenericOptionCode(code))
		if data == nil {
			continue
		}
		if code == 1 && len(data) == 4 { // the library prints it in hex
			lines = append(lines, fmt.Sprintf("1 Subnet Mask: %s", netip.AddrFrom4([4]byte(data))))
			continue
		}
		if typ, ok := typed[uint8(code)]; ok {
			lines = append(lines, fmt.Sprintf("%d %s: %s", code, optionName(code), formatTyped(typ, data)))
			continue
		}
		line := strings.TrimSpace(dhcpv4.Options{uint8(code): data}.String())
		lines = append(lines, fmt.Sprintf("%d %s", code, line))
	}
	return lines
}

// optionName is the library's name of a code, "option N" where it has
// none.
func optionName(code int) string {
	name, _, _ := strings.Cut(strings.TrimSpace(dhcpv4.Options{uint8(code): {0}}.String()), ":")
	if strings.HasPrefix(name, "unknown") {
		return "option"
	}
	return name
}

func formatTyped(typ string, data []byte) string {
	switch typ {
	case config.OptionIP, config.OptionIPs:
		var ips []string
		for i := 0; i+4 <= len(data); i += 4 {
			ips = append(ips, netip.AddrFrom4([4]byte(data[i:i+4])).String())
		}
		return strings.Join(ips, ", ")
	case config.OptionString:
		return fmt.Sprintf("%q", data)
	case config.OptionUint8, config.OptionUint16, config.OptionUint32:
		var n uint64
		for _, b := range data {
			n = n<<8 | uint64(b)
		}
		return fmt.Sprint(n)
	case config.OptionBool:
		return fmt.Sprint(len(data) == 1 && data[0] != 0)
	case "domains":
		if l, err := rfc1035label.FromBytes(data); err == nil {
			return strings.Join(l.Labels, ", ")
		}
	}
	hexes := make([]string, len(data))
	for i, b := range data {
		hexes[i] = fmt.Sprintf("%02x", b)
	}
	return strings.Join(hexes, ":")
}
