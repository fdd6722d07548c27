package dhcp

import (
	"encoding/binary"
	"strconv"
	"strings"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/rfc1035label"

	"github.com/mayu-boot/mayu/pkg/config"
)

// poolOption is one option a pool's configuration adds to its answers
// (domain_name, domain_search, ntp, mtu, options), encoded once when the
// pool is built.
type poolOption struct {
	code   dhcpv4.OptionCode
	data   []byte
	always bool   // sent unasked
	key    string // where it is configured, for -check and logs
}

// poolOptions encodes cfg's options in the order they are given up when a
// reply is too big for the client: the last first. config.Validate
// refuses every value that does not encode, so none is skipped here in a
// loaded configuration.
func poolOptions(cfg config.Pool) []poolOption {
	var out []poolOption
	add := func(code uint8, data []byte, always bool, key string) {
		out = append(out, poolOption{code: dhcpv4.GenericOptionCode(code), data: data, always: always, key: key})
	}
	if cfg.MTU != 0 {
		add(26, binary.BigEndian.AppendUint16(nil, uint16(cfg.MTU)), false, "mtu")
	}
	if cfg.DomainName != "" {
		add(15, []byte(strings.TrimSuffix(cfg.DomainName, ".")), false, "domain_name")
	}
	if len(cfg.NTP) > 0 {
		var data []byte
		for _, a := range cfg.NTP {
			b := a.As4()
			data = append(data, b[:]...)
		}
		add(42, data, false, "ntp")
	}
	if len(cfg.DomainSearch) > 0 {
		names := make([]string, len(cfg.DomainSearch))
		for i, n := range cfg.DomainSearch {
			names[i] = strings.TrimSuffix(n, ".")
		}
		add(119, (&rfc1035label.Labels{Labels: names}).ToBytes(), false, "domain_search")
	}
	for i, o := range cfg.Options {
		if data, err := o.Encode(); err == nil && o.Code >= 1 && o.Code <= 254 {
			add(uint8(o.Code), data, o.Always, "options["+strconv.Itoa(i)+"]")
		}
	}
	return out
}

// IP and UDP headers: what option 57 counts beyond the DHCP message.
const ipUDPHeaders = 20 + 8

// replyLimit is the largest DHCP message the client accepts. Option 57
// (maximum DHCP message size) counts the whole IP datagram, as ISC dhcpd
// and Kea read it, and is at least 576 (RFC 2132 9.10), the size every
// client must accept when it sends none (RFC 2131 2). Above 1500 the
// answer would be fragmented, which PXE ROMs do not reassemble.
func replyLimit(req *dhcpv4.DHCPv4) int {
	size := 576
	if v, err := req.MaxMessageSize(); err == nil && int(v) > size {
		size = min(int(v), 1500)
	}
	return size - ipUDPHeaders
}

// addPoolOptions adds to resp the pool's options the client asked for in
// its parameter request list (option 55), and those marked always. A
// client without a list gets them all (RFC 2131 3.5; dnsmasq does the
// same). Options that would make the reply bigger than the client
// accepts are left out, the last configured first, and counted; mayu's
// own options (address, boot file) always stay.
func (s *Server) addPoolOptions(x *exchange, resp *dhcpv4.DHCPv4) {
	if x.pool == nil || len(x.pool.opts) == 0 {
		return
	}
	var added []poolOption
	for _, o := range x.pool.opts {
		if resp.Options.Has(o.code) || !(o.always || x.req.IsOptionRequested(o.code)) {
			continue
		}
		resp.UpdateOption(dhcpv4.OptGeneric(o.code, o.data))
		added = append(added, o)
	}
	if len(added) == 0 {
		return
	}
	// Above the 300-byte BOOTP minimum, the encoding's length is exact,
	// and each option costs its code, its length and its data.
	size, limit := len(resp.ToBytes()), replyLimit(x.req)
	for size > limit && len(added) > 0 {
		o := added[len(added)-1]
		added = added[:len(added)-1]
		resp.Options.Del(o.code)
		size -= 2 + len(o.data)
		s.metrics.optionsDropped.WithLabelValues(strconv.Itoa(int(o.code.Code()))).Inc()
		if x.log != nil {
			x.log.Debug("dhcp: option left out: the reply would exceed the client's maximum message size",
				"option", o.code.Code(), "key", o.key, "limit", limit)
		}
	}
}
