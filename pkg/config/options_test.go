package config

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
)

// poolYAML is baseYAML with the option and reservation keys of the first
// pool set, as an operator writes them.
const poolYAML = `
      domain_name: lab.example.com
      domain_search: [lab.example.com, example.com.]
      ntp: [10.0.2.1, 10.0.2.2]
      mtu: 9000
      options:
        - {code: 2, type: uint32, value: 3600}
        - {code: 150, type: ips, value: [10.0.2.5, 10.0.2.6]}
        - {code: 151, type: ips, value: "10.0.2.7, 10.0.2.8"}
        - {code: 224, type: string, value: "rack a/12", always: true}
        - {code: 225, type: hex, value: "01:02:ff"}
        - {code: 226, type: hex, value: 0x0a0b}
        - {code: 227, type: bool, value: true}
        - {code: 228, type: uint8, value: 0xff}
        - {code: 229, type: uint16, value: 1500}
        - {code: 230, type: ip, value: 10.0.2.9}
      reservations:
        - {mac: "52:54:00:AA:BB:01", address: 10.0.2.50}
        - {mac: 52-54-00-aa-bb-02, address: 10.0.2.70}
`

func withPoolKeys(extra string) string {
	return strings.Replace(baseYAML, "      dns: [10.0.2.1]\n", "      dns: [10.0.2.1]"+extra, 1)
}

func TestPoolOptionsParse(t *testing.T) {
	cfg := mustParse(t, withPoolKeys(poolYAML))
	p := cfg.Cluster.Pools[0]
	if p.DomainName != "lab.example.com" || len(p.DomainSearch) != 2 || len(p.NTP) != 2 || p.MTU != 9000 {
		t.Fatalf("pool %+v", p)
	}
	want := map[int][]byte{
		2: {0, 0, 0x0e, 0x10}, 150: {10, 0, 2, 5, 10, 0, 2, 6}, 151: {10, 0, 2, 7, 10, 0, 2, 8},
		224: []byte("rack a/12"), 225: {1, 2, 0xff}, 226: {0x0a, 0x0b}, 227: {1}, 228: {0xff}, 229: {0x05, 0xdc}, 230: {10, 0, 2, 9},
	}
	for _, o := range p.Options {
		got, err := o.Encode()
		if err != nil {
			t.Errorf("option %d: %v", o.Code, err)
			continue
		}
		if !bytes.Equal(got, want[o.Code]) {
			t.Errorf("option %d = %x, want %x", o.Code, got, want[o.Code])
		}
	}
	if !p.Options[3].Always || p.Options[0].Always {
		t.Error("always not read")
	}
	// MACs in one spelling, whatever was written.
	if p.Reservations[0].MAC != "52:54:00:aa:bb:01" || p.Reservations[1].MAC != "52:54:00:aa:bb:02" {
		t.Errorf("reservations %+v", p.Reservations)
	}
	if got := domainSearchLen(p.DomainSearch); got != len("lab.example.com")+2+len("example.com")+2 {
		t.Errorf("domainSearchLen = %d", got)
	}
	// The hash does not depend on how a MAC is spelt.
	other := mustParse(t, withPoolKeys(strings.Replace(poolYAML, "52:54:00:AA:BB:01", "52:54:00:aa:bb:01", 1)))
	if cfg.ClusterHash() != other.ClusterHash() {
		t.Error("a MAC's spelling changed the cluster hash")
	}
	// Nor does a config without the new keys hash differently than
	// before they existed: they are left out of the JSON when empty.
	plain := mustParse(t, baseYAML)
	if strings.Contains(string(mustJSON(t, plain.Cluster.Pools[0])), "options") {
		t.Error("empty options in the hashed JSON")
	}
}

// Every problem of the option and reservation keys is reported by key.
func TestPoolOptionsValidate(t *testing.T) {
	const k = "cluster.pools[0]"
	opt := func(code int, typ string, v ...string) func(c *Config) {
		return func(c *Config) {
			c.Cluster.Pools[0].Options = append(c.Cluster.Pools[0].Options, DHCPOption{Code: 252, Type: OptionUint8, Value: OptionValue{"1"}},
				DHCPOption{Code: code, Type: typ, Value: v})
		}
	}
	res := func(mac, a string) func(c *Config) {
		return func(c *Config) {
			c.Cluster.Pools[0].Reservations = append(c.Cluster.Pools[0].Reservations,
				Reservation{MAC: "52:54:00:00:00:01", Address: netip.MustParseAddr("10.0.2.60")},
				Reservation{MAC: mac, Address: netip.MustParseAddr(a)})
		}
	}
	long := strings.Repeat("a", 256)
	tests := []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		{"domain name with a space", func(c *Config) { c.Cluster.Pools[0].DomainName = "lab example" },
			k + `.domain_name: "lab example" holds ' '`},
		{"domain name with a control character", func(c *Config) { c.Cluster.Pools[0].DomainName = "lab\x1b[2J" },
			k + `.domain_name: "lab\x1b[2J" holds the control character 0x1b at byte 3`},
		{"domain name not ASCII", func(c *Config) { c.Cluster.Pools[0].DomainName = "läb.example" },
			k + `.domain_name: "läb.example" holds the non-ASCII byte 0xc3`},
		{"domain name empty label", func(c *Config) { c.Cluster.Pools[0].DomainName = "lab..example" },
			k + `.domain_name: "lab..example" has an empty label`},
		{"domain name hyphen", func(c *Config) { c.Cluster.Pools[0].DomainName = "-lab.example" },
			k + `.domain_name: "-lab.example" has a label starting or ending with "-"`},
		{"domain name long label", func(c *Config) { c.Cluster.Pools[0].DomainName = strings.Repeat("a", 64) + ".example" },
			k + ".domain_name: " + `"` + strings.Repeat("a", 64) + `.example" has a label of 64 bytes`},
		{"domain name too long", func(c *Config) { c.Cluster.Pools[0].DomainName = strings.Repeat("abcdefg.", 32) + "com" },
			"is 259 bytes long; a domain name has at most 253"},
		{"search entry bad", func(c *Config) { c.Cluster.Pools[0].DomainSearch = []string{"ok.example", "bad_name!"} },
			k + `.domain_search[1]: "bad_name!" holds '!'`},
		{"search list too long", func(c *Config) {
			c.Cluster.Pools[0].DomainSearch = []string{strings.Repeat("a", 60) + "." + strings.Repeat("b", 60), strings.Repeat("c", 60) + "." + strings.Repeat("d", 60), strings.Repeat("e", 60)}
		}, k + ".domain_search: encodes to 308 bytes; option 119 holds at most 255"},
		{"ntp IPv6", func(c *Config) { c.Cluster.Pools[0].NTP = []netip.Addr{netip.MustParseAddr("2001:db8::1")} },
			k + ".ntp[0]: 2001:db8::1 is not an IPv4 address"},
		{"ntp too many", func(c *Config) { c.Cluster.Pools[0].NTP = make([]netip.Addr, 64) }, k + ".ntp: 64 servers; option 42 holds at most 63"},
		{"mtu too small", func(c *Config) { c.Cluster.Pools[0].MTU = 67 }, k + ".mtu: 67 is out of range (68-65535"},
		{"mtu too big", func(c *Config) { c.Cluster.Pools[0].MTU = 65536 }, k + ".mtu: 65536 is out of range"},

		{"code 0", opt(0, OptionUint8, "1"), k + ".options[1].code: 0 is out of range (1-254"},
		{"code 255", opt(255, OptionUint8, "1"), k + ".options[1].code: 255 is out of range (1-254"},
		{"code of a pool key", opt(6, OptionIPs, "10.0.2.1"), k + ".options[1].code: 6 is set by the pool's key dns: use that"},
		{"code 119", opt(119, OptionHex, "00"), k + ".options[1].code: 119 is set by the pool's key domain_search"},
		{"code mayu sets", opt(67, OptionString, "x.efi"), k + ".options[1].code: 67 is the boot file"},
		{"code 54", opt(54, OptionIP, "10.0.2.1"), k + ".options[1].code: 54 is the server identifier"},
		{"code 43", opt(43, OptionHex, "0601"), k + ".options[1].code: 43 is vendor-specific information"},
		{"code 175", opt(175, OptionHex, "b00101"), k + ".options[1].code: 175 is iPXE's"},
		{"code 82", opt(82, OptionHex, "0101"), k + ".options[1].code: 82 is the relay agent information"},
		{"duplicate code", opt(252, OptionUint8, "2"), k + ".options[1].code: 252 is already options[0]"},
		{"bad type", opt(200, "int", "1"), k + `.options[1].type: "int" is not an option type (ip, ips, string, uint8, uint16, uint32, hex, bool)`},
		{"no value", opt(200, OptionString), k + ".options[1].value: required"},
		{"uint8 out of range", opt(200, OptionUint8, "256"), k + `.options[1].value: "256" is not a number 0-255`},
		{"uint16 negative", opt(200, OptionUint16, "-1"), k + `.options[1].value: "-1" is not a number 0-65535`},
		{"uint32 too big", opt(200, OptionUint32, "4294967296"), k + `.options[1].value: "4294967296" is not a number 0-4294967295`},
		{"uint list", opt(200, OptionUint32, "1", "2"), k + ".options[1].value: a list of 2 values, but type uint32 takes one"},
		{"ip not an address", opt(200, OptionIP, "10.0.2.300"), k + `.options[1].value: "10.0.2.300" is not an IPv4 address`},
		{"ip two", opt(200, OptionIP, "10.0.2.3, 10.0.2.4"), k + ".options[1].value: 2 addresses, but type ip takes one"},
		{"ips IPv6", opt(200, OptionIPs, "10.0.2.3", "::1"), k + `.options[1].value: "::1" is not an IPv4 address`},
		{"ips too many", opt(200, OptionIPs, strings.TrimSuffix(strings.Repeat("10.0.2.3,", 64), ",")),
			k + ".options[1].value: 256 bytes long; an option holds at most 255"},
		{"string too long", opt(200, OptionString, long), k + ".options[1].value: 256 bytes long; an option holds at most 255"},
		{"string control", opt(200, OptionString, "a\nb"), k + `.options[1].value: "a\nb" holds the control character 0x0a`},
		{"string not ASCII", opt(200, OptionString, "café"), k + `.options[1].value: "café" holds the non-ASCII byte 0xc3`},
		{"string empty", opt(200, OptionString, ""), k + ".options[1].value: empty"},
		{"hex odd", opt(200, OptionHex, "abc"), k + `.options[1].value: "abc" is not hex bytes: an odd number of digits`},
		{"hex not hex", opt(200, OptionHex, "zz"), k + `.options[1].value: "zz" is not hex bytes`},
		{"hex bad pair", opt(200, OptionHex, "1:02"), k + `.options[1].value: "1:02" is not hex bytes: write each byte as two digits`},
		{"hex too long", opt(200, OptionHex, strings.Repeat("ab", 256)), k + ".options[1].value: 256 bytes long"},
		{"bool", opt(200, OptionBool, "yes"), k + `.options[1].value: "yes" is neither true nor false`},

		{"reservation bad MAC", res("52:54:00:zz:00:02", "10.0.2.61"), k + `.reservations[1].mac: "52:54:00:zz:00:02" is not an Ethernet MAC address`},
		{"reservation long MAC", res("00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", "10.0.2.61"), k + ".reservations[1].mac: "},
		{"reservation MAC twice", res("52:54:00:00:00:01", "10.0.2.61"), k + ".reservations[1].mac: 52:54:00:00:00:01 already has reservations[0]"},
		{"reservation MAC twice, other spelling", res("52-54-00-00-00-01", "10.0.2.61"), k + ".reservations[1].mac: 52:54:00:00:00:01 already has reservations[0]"},
		{"reservation address twice", res("52:54:00:00:00:02", "10.0.2.60"), k + ".reservations[1].address: 10.0.2.60 is already reservations[0]"},
		{"reservation in the range", res("52:54:00:00:00:02", "10.0.2.150"), k + ".reservations[1].address: 10.0.2.150 is inside the dynamic range 10.0.2.100-10.0.2.199"},
		{"reservation outside the subnet", res("52:54:00:00:00:02", "10.0.4.5"), k + ".reservations[1].address: 10.0.4.5 is not inside subnet 10.0.2.0/24"},
		{"reservation network", res("52:54:00:00:00:02", "10.0.2.0"), k + ".reservations[1].address: 10.0.2.0 is the network address"},
		{"reservation broadcast", res("52:54:00:00:00:02", "10.0.2.255"), k + ".reservations[1].address: 10.0.2.255 is the broadcast address"},
		{"reservation router", func(c *Config) {
			c.Cluster.Pools[0].Router = netip.MustParseAddr("10.0.2.254")
			res("52:54:00:00:00:02", "10.0.2.254")(c)
		}, k + ".reservations[1].address: 10.0.2.254 is the pool's router"},
		{"reservation advertise address", res("52:54:00:00:00:02", "10.0.2.1"), k + ".reservations[1].address: 10.0.2.1 is node.advertise_address"},
		{"reservation static", func(c *Config) {
			c.Cluster.Pools[1].Reservations = []Reservation{{MAC: "52:54:00:00:00:03", Address: netip.MustParseAddr("10.0.3.20")}}
		}, "cluster.pools[1].reservations[0].address: 10.0.3.20 is inside cluster.static.range 10.0.3.10-10.0.3.60"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := mustParse(t, baseYAML)
			tt.change(cfg)
			err := cfg.Validate()
			if err == nil {
				t.Fatalf("Validate() = nil, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Validate() =\n%v\nwant it to contain %q", err, tt.want)
			}
		})
	}
}

// What an operator mistypes in the file is named by line and key.
func TestPoolOptionsParseErrors(t *testing.T) {
	for _, tt := range []struct{ extra, want string }{
		{"\n      options:\n        - {code: 200, type: string, valeu: x}\n", `unknown key "valeu" in cluster.pools[0].options[0] (did you mean "value"?)`},
		{"\n      options:\n        - {code: 200, type: ips, value: {a: b}}\n", "cluster.pools[0].options[0].value: expected a single value, found key: value pairs"},
		{"\n      options:\n        - {code: 200, type: ips, value: [[10.0.2.1]]}\n", "cluster.pools[0].options[0].value[0]: expected a single value, found a list"},
		{"\n      reservations:\n        - {mac: 52:54:00:00:00:01, adress: 10.0.2.50}\n", `unknown key "adress"`},
		{"\n      ntp: 10.0.2.1\n", "cluster.pools[0].ntp: expected a list"},
		{"\n      options:\n        - {code: 200, type: uint8, value: 300}\n", "cluster.pools[0].options[0].value: \"300\" is not a number 0-255"},
	} {
		_, err := Parse([]byte(withPoolKeys(tt.extra)), "test.yaml")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: got %v, want %q", tt.extra, err, tt.want)
		}
	}
}

// The value parser takes free text from the file: it never panics, and
// what it accepts fits in one option and encodes again to the same bytes.
func FuzzEncodeOptionValue(f *testing.F) {
	for _, s := range []string{"10.0.2.1", "10.0.2.1, 10.0.2.2", "0x0102", "01:02:ff", "true", "255", "0xffffffff", "rack a", "\x00", ":", "0x"} {
		for _, typ := range OptionTypes {
			f.Add(typ, s)
		}
	}
	f.Fuzz(func(t *testing.T, typ, s string) {
		data, err := encodeOptionValue(typ, OptionValue{s})
		if err != nil {
			return
		}
		if len(data) == 0 || len(data) > maxOptionLen {
			t.Fatalf("%s %q: %d bytes", typ, s, len(data))
		}
		if typ == OptionString && checkPrintable(string(data)) != nil {
			t.Fatalf("string %q accepted with unprintable bytes", s)
		}
		if typ == OptionHex {
			again, err := parseHex(strings.ToUpper(strings.TrimSpace(s)))
			if err != nil || !bytes.Equal(again, data) {
				t.Fatalf("hex %q: %x, upper case %x %v", s, data, again, err)
			}
		}
	})
}

func FuzzCheckDomainName(f *testing.F) {
	for _, s := range []string{"lab.example.com", "example.com.", "a..b", "-a", "a_b.c", "\xff"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if checkDomainName(s) != nil {
			return
		}
		if n := len(strings.TrimSuffix(s, ".")); n == 0 || n > 253 {
			t.Fatalf("%q accepted: %d bytes", s, n)
		}
		for _, c := range []byte(s) {
			if c <= ' ' || c > '~' {
				t.Fatalf("%q accepted with byte %#x", s, c)
			}
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
