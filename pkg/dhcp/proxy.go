package dhcp

import (
	"github.com/mayu-boot/mayu/pkg/config"
	"net"
	"net/netip"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/iana"
)

// proxyDHCP: in a pool in proxy mode the site's own DHCP server hands out
// the addresses, and the leader answers as a PXE proxyDHCP server (PXE
// 2.1, section 2.2.2): to boot clients only, with the boot options and
// nothing else: no yiaddr, no lease, no address options. The firmware
// merges the site's offer (its address) with ours (what to boot).
//
// The exchanges, as the firmware and iPXE run them:
//
//   - BIOS PXE: DISCOVER → our OFFER with option 43 "bypass boot server
//     discovery" and the boot file; it fetches the file from siaddr.
//   - UEFI PXE (EDK2): DISCOVER → our OFFER without option 43 (EDK2 takes
//     an offer with discovery control for a PXE 1.0 boot menu offer);
//     EDK2 then asks the boot server for the file: a REQUEST from its new
//     address, port 4011, to siaddr (else option 54) port 4011, and
//     waits for the ACK on port 4011. So siaddr is the leader's own
//     address there: only the leader answers on 4011, and the advertise
//     address may sit on another replica.
//   - iPXE: DISCOVER → our OFFER; after the site's ACK it sends a
//     ProxyDHCPREQUEST to option 54 port 4011, from port 68, and falls
//     back to our offer if nobody answers.
//   - UEFI HTTP boot: DISCOVER → our OFFER with vendor class HTTPClient
//     and the URL; no 4011.
//
// Option 175.176 (iPXE: do not wait for proxyDHCP offers) is never sent
// here: iPXE must wait for ours.

// pxeBypassDiscovery is option 43 with PXE sub-option 6 (discovery
// control) = 8: use the boot file of this offer, no boot server menu or
// discovery. pixiecore and smee send the same.
var pxeBypassDiscovery = []byte{6, 1, 8, 255}

// optClientGUID is option 97, the client machine identifier, which a PXE
// server echoes (PXE 2.1, table 2-1).
const optClientGUID = dhcpv4.GenericOptionCode(97)

// BootServerPort is the PXE boot-server port (PXE 2.1, "PXE Boot Server
// Discovery"): node.ports.proxy_dhcp by default.
const BootServerPort = 4011

// biosPXE reports whether c is PXE firmware of a BIOS: architecture 0, or
// none (old ROMs send no option 93).
func biosPXE(c Client) bool {
	return c.Firmware == PXE && (!c.HasArch || c.Arch == iana.INTEL_X86PC)
}

// proxy answers a request to port 67 in a proxy pool: an OFFER to a
// DISCOVER, an ACK to a REQUEST that names this server; everything else
// belongs to the site's DHCP server.
func (s *Server) proxy(x *exchange, c Client) {
	if reason := proxyRefusal(c, x.dec); reason != "" {
		s.metrics.ignored.WithLabelValues(reason).Inc()
		x.log.Debug("dhcp: proxy pool, not answered", "reason", reason)
		return
	}
	var typ dhcpv4.MessageType
	switch x.req.MessageType() {
	case dhcpv4.MessageTypeDiscover:
		typ = dhcpv4.MessageTypeOffer
	case dhcpv4.MessageTypeRequest:
		// A REQUEST naming the site's server (or none: INIT-REBOOT,
		// renewing) is the client's exchange with that server: an
		// ACK from us would be taken for its answer.
		sid, _ := netip.AddrFromSlice(x.req.ServerIdentifier().To4())
		if sid != s.serverIP {
			s.metrics.ignored.WithLabelValues("other_server").Inc()
			return
		}
		typ = dhcpv4.MessageTypeAck
	default:
		s.metrics.ignored.WithLabelValues("other_server").Inc()
		return
	}
	if !s.admit(x) {
		s.metrics.ignored.WithLabelValues("new_client_budget").Inc()
		x.log.Debug("dhcp: new-client budget of this pool spent, ignoring", "source", s.source(x))
		return
	}
	x.log.Debug("dhcp: proxy answer", "type", typ, "boot", x.dec.Reason)
	if s.reply(x, s.proxyAnswer(x, c, typ, false)) {
		s.metrics.proxyAnswered.WithLabelValues("67", c.Firmware.String()).Inc()
	}
}

// proxyRefusal is why a proxy pool does not answer a client, "" if it
// does: it answers boot clients it has something to boot for.
func proxyRefusal(c Client, d Decision) string {
	switch {
	case c.Firmware == Plain:
		return "not_boot_client"
	case d.BootFile == "":
		return "no_boot_file"
	}
	return ""
}

// admit lets a proxy answer go to a client the leader knows (registered,
// or answered lately), or charges a new one to its pool's budget.
func (s *Server) admit(x *exchange) bool {
	if s.known(x) {
		return true
	}
	if !s.budget.allow(s.source(x), x.now) {
		return false
	}
	x.pool.remember(x.mac, x.now)
	return true
}

// proxyAnswer is a proxyDHCP OFFER or ACK: boot options only. bootServer
// is the answer on port 4011.
func (s *Server) proxyAnswer(x *exchange, c Client, typ dhcpv4.MessageType, bootServer bool) *dhcpv4.DHCPv4 {
	dec := x.dec
	class := "PXEClient" // PXE 2.1: a proxy identifies itself as one
	if dec.HTTPClient {
		class = "HTTPClient" // what UEFI HTTP boot takes an offer from
	}
	mods := []dhcpv4.Modifier{
		dhcpv4.WithMessageType(typ),
		dhcpv4.WithOption(dhcpv4.OptServerIdentifier(s.serverIP.AsSlice())),
		dhcpv4.WithOption(dhcpv4.OptClassIdentifier(class)),
		dhcpv4.WithOption(dhcpv4.OptBootFileName(dec.BootFile)),
	}
	switch {
	case !bootServer && c.Firmware == PXE && !biosPXE(c):
		// UEFI PXE asks siaddr:4011 next: it must be the leader.
		mods = append(mods, dhcpv4.WithServerIP(s.serverIP.AsSlice()))
	case dec.NextServer || c.Firmware == IPXE:
		// iPXE takes the boot file of a proxy answer only with a
		// next-server beside it (its dhcp_has_pxeopts: siaddr and a
		// file, or a PXE boot menu): without one it ignores the OFFER's
		// file, asks port 4011, and drops that ACK too (qemu's iPXE ROM,
		// TestVMProxyBIOSInstallRunning). For a script URL siaddr names
		// no server iPXE uses, only the answer's kind.
		mods = append(mods, dhcpv4.WithServerIP(s.o.Advertise.AsSlice()))
	}
	if !bootServer && (biosPXE(c) || c.Firmware == IPXE) {
		mods = append(mods, dhcpv4.WithGeneric(dhcpv4.OptionVendorSpecificInformation, pxeBypassDiscovery))
	}
	if guid := x.req.GetOneOption(optClientGUID); len(guid) == 17 {
		mods = append(mods, dhcpv4.WithGeneric(optClientGUID, guid))
	}
	resp, err := dhcpv4.NewReplyFromRequest(x.req, mods...)
	if err != nil {
		return nil
	}
	if len(dec.BootFile) < 128 {
		resp.BootFileName = dec.BootFile
	}
	return resp
}

// bootServer answers a request to port 4011: the boot file for a client
// that has its address (from the site's server) and got our proxy offer.
// It returns the answer and where it goes, or nil and the outcome that
// mayu_dhcp_boot_server_requests_total counts.
func (s *Server) bootServer(x *exchange, t *term) (*dhcpv4.DHCPv4, *net.UDPAddr, string) {
	req, peer := x.req, x.peer
	switch req.MessageType() {
	case dhcpv4.MessageTypeRequest, dhcpv4.MessageTypeInform:
	default:
		return nil, nil, "other_type"
	}
	// The answer goes to the client's own address and port (EDK2 asks
	// from 4011, iPXE from 68): only where the packet came from, so that
	// a spoofed ciaddr cannot aim answers at another host, and only to
	// those two ports.
	ci, _ := netip.AddrFromSlice(req.ClientIPAddr.To4())
	from, _ := netip.AddrFromSlice(peer.IP.To4())
	if !ci.IsValid() || ci.IsUnspecified() || ci != from || (peer.Port != dhcpv4.ClientPort && peer.Port != BootServerPort) ||
		!req.GatewayIPAddr.IsUnspecified() {
		return nil, nil, "bad_source"
	}
	c := Classify(req)
	installed := s.o.Installed != nil && s.o.Installed.Has(x.mac)
	x.dec = Decide(c, installed, s.o.Policy)
	if x.dec.Ignore {
		return nil, nil, x.dec.Reason
	}
	if x.pool = t.poolOf(ci); x.pool == nil || !x.pool.cfg.Proxy() {
		return nil, nil, "no_pool"
	}
	if !config.IsHostAddr(ci, x.pool.cfg.Subnet) {
		// Not a host: an answer there would reach every host of the
		// subnet (a spoofed source, where rp_filter lets one in).
		return nil, nil, "bad_source"
	}
	if reason := proxyRefusal(c, x.dec); reason != "" {
		return nil, nil, reason
	}
	if !s.admit(x) {
		return nil, nil, "new_client_budget"
	}
	resp := s.proxyAnswer(x, c, dhcpv4.MessageTypeAck, true)
	if resp == nil {
		return nil, nil, "malformed"
	}
	resp.ClientIPAddr = req.ClientIPAddr
	return resp, &net.UDPAddr{IP: ci.AsSlice(), Port: peer.Port}, "answered"
}
