package config

import (
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Option types of cluster.pools[].options[].type.
const (
	OptionIP     = "ip"     // one IPv4 address
	OptionIPs    = "ips"    // IPv4 addresses: a list, or one value with commas
	OptionString = "string" // printable ASCII
	OptionUint8  = "uint8"
	OptionUint16 = "uint16"
	OptionUint32 = "uint32"
	OptionHex    = "hex"  // bytes: "01:02:ff" or "0102ff" (0x allowed)
	OptionBool   = "bool" // true or false: one byte 1 or 0
)

// OptionTypes lists the option types, as messages name them.
var OptionTypes = []string{OptionIP, OptionIPs, OptionString, OptionUint8, OptionUint16, OptionUint32, OptionHex, OptionBool}

// maxOptionLen is the most data one option carries: its length is one byte.
const maxOptionLen = 255

// Option codes a pool's own keys set: options: refuses them and names the
// key to use instead.
var optionKeys = map[int]string{
	1: "subnet", 3: "router", 6: "dns", 15: "domain_name", 26: "mtu", 42: "ntp", 51: "lease_time", 119: "domain_search",
}

// ownedOptions are the codes options: refuses because mayu sets them
// itself, or because they describe one exchange or one client and a value
// for a whole pool would be wrong for every client but one. Sending any
// of them from configuration would contradict what mayu sends, or break
// the boot that depends on it.
var ownedOptions = map[int]string{
	12:  "the client's own host name: one value for a whole pool would name every machine the same",
	43:  "vendor-specific information: PXE firmware reads it as PXE boot-server options (discovery control, menus), which mayu does not use and a stray value breaks",
	50:  "the client's requested address",
	52:  "option overload: mayu keeps sname and file as BOOTP fields, which PXE ROMs read",
	53:  "the message type",
	54:  "the server identifier: the DHCP leader's own address",
	55:  "the client's parameter request list",
	56:  "a message mayu sends with a NAK",
	57:  "the client's maximum message size",
	58:  "the renewal time (T1): clients derive it from lease_time",
	59:  "the rebinding time (T2): clients derive it from lease_time",
	60:  "the vendor class: mayu echoes HTTPClient to UEFI HTTP boot",
	61:  "the client identifier: the client's own",
	66:  "the TFTP server name: mayu sends next-server (siaddr) by boot decision",
	67:  "the boot file: mayu chooses it by firmware and architecture",
	80:  "rapid commit: mayu answers DISCOVER with an OFFER, never a rapid ACK",
	81:  "the client's FQDN: one per client",
	82:  "the relay agent information: the relay's, echoed back to it",
	93:  "the client architecture: the client's",
	94:  "the client network interface identifier: the client's",
	97:  "the client machine identifier (UUID): the client's",
	118: "the subnet selection: the client's or relay's",
	175: "iPXE's encapsulated options: mayu sends sub-option 176 by boot decision",
}

// UnmarshalYAML takes a single value or a list of values.
func (v *OptionValue) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		if n.ShortTag() == "!!null" {
			*v = nil
			return nil
		}
		*v = OptionValue{n.Value}
		return nil
	case yaml.SequenceNode:
		out := make(OptionValue, 0, len(n.Content))
		for _, item := range n.Content {
			if item.Kind != yaml.ScalarNode {
				return fmt.Errorf("line %d: an option value's list holds single values only", item.Line)
			}
			out = append(out, item.Value)
		}
		*v = out
		return nil
	}
	return fmt.Errorf("line %d: an option value is a single value or a list of them", n.Line)
}

// String is the value as -check and messages print it.
func (v OptionValue) String() string { return strings.Join(v, ", ") }

// Encode is the option's data as it goes on the wire, or why the value
// does not fit its type.
func (o DHCPOption) Encode() ([]byte, error) {
	return encodeOptionValue(o.Type, o.Value)
}

// encodeOptionValue encodes v as an option of type typ. It takes text an
// operator wrote, and says in words what is wrong with it.
func encodeOptionValue(typ string, v OptionValue) ([]byte, error) {
	if len(v) == 0 {
		return nil, errors.New("required")
	}
	one := func() (string, error) {
		if len(v) != 1 {
			return "", fmt.Errorf("a list of %d values, but type %s takes one", len(v), typ)
		}
		return strings.TrimSpace(v[0]), nil
	}
	var data []byte
	switch typ {
	case OptionIP, OptionIPs:
		var items []string
		for _, s := range v {
			for item := range strings.SplitSeq(s, ",") {
				items = append(items, strings.TrimSpace(item))
			}
		}
		if typ == OptionIP && len(items) != 1 {
			return nil, fmt.Errorf("%d addresses, but type ip takes one (type ips takes a list)", len(items))
		}
		for _, s := range items {
			a, err := netip.ParseAddr(s)
			if err != nil || !a.Is4() {
				return nil, fmt.Errorf("%q is not an IPv4 address", s)
			}
			b := a.As4()
			data = append(data, b[:]...)
		}
	case OptionString:
		if _, err := one(); err != nil {
			return nil, err
		}
		if err := checkPrintable(v[0]); err != nil {
			return nil, err
		}
		data = []byte(v[0]) // as written: leading spaces may be meant
	case OptionUint8, OptionUint16, OptionUint32:
		s, err := one()
		if err != nil {
			return nil, err
		}
		bits := map[string]int{OptionUint8: 8, OptionUint16: 16, OptionUint32: 32}[typ]
		n, err := strconv.ParseUint(s, 0, bits)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number 0-%d", s, uint64(1)<<bits-1)
		}
		data = binary.BigEndian.AppendUint32(nil, uint32(n))[4-bits/8:]
	case OptionHex:
		s, err := one()
		if err != nil {
			return nil, err
		}
		if data, err = parseHex(s); err != nil {
			return nil, err
		}
	case OptionBool:
		s, err := one()
		if err != nil {
			return nil, err
		}
		switch s {
		case "true":
			data = []byte{1}
		case "false":
			data = []byte{0}
		default:
			return nil, fmt.Errorf("%q is neither true nor false", s)
		}
	default:
		return nil, fmt.Errorf("unknown type %q", typ)
	}
	if len(data) == 0 {
		return nil, errors.New("empty")
	}
	if len(data) > maxOptionLen {
		return nil, fmt.Errorf("%d bytes long; an option holds at most %d", len(data), maxOptionLen)
	}
	return data, nil
}

// parseHex reads bytes written as hex digits, in pairs separated by ":"
// (01:02:ff, as dnsmasq and Kea print them) or not at all (0102ff), with
// or without a leading 0x.
func parseHex(s string) ([]byte, error) {
	digits := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	if strings.Contains(digits, ":") {
		var b strings.Builder
		for pair := range strings.SplitSeq(digits, ":") {
			if len(pair) != 2 {
				return nil, fmt.Errorf("%q is not hex bytes: write each byte as two digits, e.g. 01:02:ff", s)
			}
			b.WriteString(pair)
		}
		digits = b.String()
	}
	if digits == "" {
		return nil, errors.New("empty")
	}
	if len(digits)%2 != 0 {
		return nil, fmt.Errorf("%q is not hex bytes: an odd number of digits", s)
	}
	data, err := hex.DecodeString(digits)
	if err != nil {
		return nil, fmt.Errorf("%q is not hex bytes (digits 0-9, a-f, optionally in pairs separated by \":\")", s)
	}
	return data, nil
}

// checkPrintable refuses what a client would print or parse wrongly:
// control characters, non-ASCII bytes.
func checkPrintable(s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return fmt.Errorf("%q holds %s at byte %d: only printable ASCII is allowed", s, describeByte(c), i)
		}
	}
	return nil
}

func describeByte(c byte) string {
	if c < 0x20 || c == 0x7f {
		return fmt.Sprintf("the control character 0x%02x", c)
	}
	return fmt.Sprintf("the non-ASCII byte 0x%02x", c)
}

// checkDomainName reports whether s is a DNS name a client can use: labels
// of letters, digits and hyphens (and underscores, which sites use), none
// empty, starting or ending with a hyphen, longer than 63 bytes; at most
// 253 bytes in all. One trailing dot is allowed.
func checkDomainName(s string) error {
	if err := checkPrintable(s); err != nil {
		return err
	}
	name := strings.TrimSuffix(s, ".")
	if name == "" {
		return errors.New("empty")
	}
	if len(name) > 253 {
		return fmt.Errorf("%q is %d bytes long; a domain name has at most 253", s, len(name))
	}
	for label := range strings.SplitSeq(name, ".") {
		switch {
		case label == "":
			return fmt.Errorf("%q has an empty label", s)
		case len(label) > 63:
			return fmt.Errorf("%q has a label of %d bytes; at most 63", s, len(label))
		case label[0] == '-' || label[len(label)-1] == '-':
			return fmt.Errorf("%q has a label starting or ending with \"-\"", s)
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("%q holds %q: a domain name has letters, digits, \"-\" and \"_\" only", s, c)
			}
		}
	}
	return nil
}

// domainSearchLen is the length of option 119 for names (RFC 3397,
// without compression): each name's labels with their length bytes and a
// closing zero, len(name)+2 for a name without trailing dot.
func domainSearchLen(names []string) int {
	n := 0
	for _, s := range names {
		n += len(strings.TrimSuffix(s, ".")) + 2
	}
	return n
}

// validateOptions checks the option keys of pool: the named ones, then
// options: by code.
func (pool Pool) validateOptions(p *problems, key string) {
	if pool.DomainName != "" {
		if err := checkDomainName(pool.DomainName); err != nil {
			p.addf(key+".domain_name", "%v", err)
		}
	}
	searchOK := true
	for i, name := range pool.DomainSearch {
		if err := checkDomainName(name); err != nil {
			p.addf(fmt.Sprintf("%s.domain_search[%d]", key, i), "%v", err)
			searchOK = false
		}
	}
	if n := domainSearchLen(pool.DomainSearch); searchOK && n > maxOptionLen {
		p.addf(key+".domain_search", "encodes to %d bytes; option 119 holds at most %d here: list fewer or shorter names", n, maxOptionLen)
	}
	for i, a := range pool.NTP {
		if !a.IsValid() || !a.Is4() {
			p.addf(fmt.Sprintf("%s.ntp[%d]", key, i), "%s is not an IPv4 address", a)
		}
	}
	if len(pool.NTP) > maxOptionLen/4 {
		p.addf(key+".ntp", "%d servers; option 42 holds at most %d", len(pool.NTP), maxOptionLen/4)
	}
	if pool.MTU != 0 && (pool.MTU < 68 || pool.MTU > 65535) {
		p.addf(key+".mtu", "%d is out of range (68-65535; 0 or absent: not sent)", pool.MTU)
	}
	seen := map[int]int{}
	for i, o := range pool.Options {
		k := fmt.Sprintf("%s.options[%d]", key, i)
		switch name, owned := optionKeys[o.Code], ownedOptions[o.Code]; {
		case o.Code < 1 || o.Code > 254:
			p.addf(k+".code", "%d is out of range (1-254; 0 and 255 are pad and end)", o.Code)
		case name != "":
			p.addf(k+".code", "%d is set by the pool's key %s: use that", o.Code, name)
		case owned != "":
			p.addf(k+".code", "%d is %s", o.Code, owned)
		default:
			if j, dup := seen[o.Code]; dup {
				p.addf(k+".code", "%d is already options[%d]", o.Code, j)
			}
			seen[o.Code] = i
		}
		if !isOptionType(o.Type) {
			p.addf(k+".type", "%q is not an option type (%s)", o.Type, strings.Join(OptionTypes, ", "))
			continue
		}
		if _, err := o.Encode(); err != nil {
			p.addf(k+".value", "%v", err)
		}
	}
}

func isOptionType(t string) bool {
	for _, ot := range OptionTypes {
		if t == ot {
			return true
		}
	}
	return false
}

// validateReservations checks the pool's fixed addresses: each a host
// address of the subnet outside the dynamic range, not the router, not a
// static (installed) address, unique; each MAC once.
func (pool Pool) validateReservations(p *problems, key string, subnetOK, rangeOK bool, static Range) {
	macs := map[string]int{}
	addrs := map[netip.Addr]int{}
	for i, r := range pool.Reservations {
		k := fmt.Sprintf("%s.reservations[%d]", key, i)
		if mac, err := ParseMAC(r.MAC); err != nil {
			p.addf(k+".mac", "%v", err)
		} else if j, dup := macs[mac]; dup {
			p.addf(k+".mac", "%s already has reservations[%d]", mac, j)
		} else {
			macs[mac] = i
		}
		a := r.Address
		if !checkHostAddr(p, k+".address", a, pool.Subnet, subnetOK) || !subnetOK {
			continue
		}
		switch {
		case rangeOK && pool.Range.Contains(a):
			p.addf(k+".address", "%s is inside the dynamic range %s: a reserved address lies outside it", a, pool.Range)
		case pool.Router.IsValid() && a == pool.Router:
			p.addf(k+".address", "%s is the pool's router", a)
		case static.Size() > 0 && static.Contains(a):
			p.addf(k+".address", "%s is inside cluster.static.range %s: it could be an installed machine's address", a, static)
		default:
			if j, dup := addrs[a]; dup {
				p.addf(k+".address", "%s is already reservations[%d]", a, j)
			}
			addrs[a] = i
		}
	}
}

// ParseMAC reads an Ethernet MAC address and returns it as DHCP clients'
// MACs are written everywhere in mayu: lower case, colon-separated.
func ParseMAC(s string) (string, error) {
	hw, err := net.ParseMAC(s)
	if err != nil || len(hw) != 6 {
		return "", fmt.Errorf("%q is not an Ethernet MAC address, e.g. 52:54:00:12:34:56", s)
	}
	return hw.String(), nil
}
