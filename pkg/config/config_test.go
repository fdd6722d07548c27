package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const examplePath = "../../etc/mayu.yaml"

// baseYAML is a small valid config the tests vary. Two pools, so that
// messages about a pool other than the first can be checked.
const baseYAML = `node:
  name: test-node
  interface: eth0
  advertise_address: 10.0.2.1
  admin_token_file: /etc/mayu/admin-token
cluster:
  pools:
    - subnet: 10.0.2.0/24
      range: {start: 10.0.2.100, end: 10.0.2.199}
      router: 10.0.2.1
      dns: [10.0.2.1]
    - subnet: 10.0.3.0/24
      range: {start: 10.0.3.100, end: 10.0.3.199}
      router: 10.0.3.1
      lease_time: 2h
  static:
    subnet: 10.0.3.0/24
    range: {start: 10.0.3.10, end: 10.0.3.60}
    gateway: 10.0.3.1
  profiles:
    - {name: core, quantity: 3, tags: {rule-core: "true"}}
    - {name: worker, quantity: 10}
  install: {kernel: installer/vmlinuz, initrd: installer/initrd.img, image: images/os.img}
  templates: {first_stage: templates/first-stage.sh, final_config: templates/final-config.yaml}
  template_vars: {ntp: 10.0.2.1, root_password_hash: "$6$salt$hash"}
  secret_template_vars: [root_password_hash]
`

func mustParse(t *testing.T, data string) *Config {
	t.Helper()
	cfg, err := Parse([]byte(data), "test.yaml")
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

func TestExampleFile(t *testing.T) {
	cfg, err := Load(examplePath)
	if err != nil {
		t.Fatalf("Load(%s): %v", examplePath, err)
	}
	if cfg.Path != examplePath {
		t.Errorf("Path = %q, want %q", cfg.Path, examplePath)
	}
	n, c := cfg.Node, cfg.Cluster
	checks := []struct {
		what      string
		got, want any
	}{
		{"advertise_address", n.AdvertiseAddress, netip.MustParseAddr("10.99.0.1")},
		{"interface", n.Interface, "srv0"},
		{"ports", n.Ports, Ports{DHCP: 67, TFTP: 69, HTTP: 4081, Admin: 4080, Metrics: 4082, ProxyDHCP: 4011}},
		{"pools", len(c.Pools), 1},
		{"pool subnet", c.Pools[0].Subnet, netip.MustParsePrefix("10.99.0.0/24")},
		{"pool range size", c.Pools[0].Range.Size(), 100},
		{"static range size", c.Static.Range.Size(), 51},
		{"profiles", len(c.Profiles), 2},
		{"worker tags", c.Profiles[1].Tags["stack-compute"], "true"},
		// Production values (issue 15): the lab's (a virtio disk, a serial
		// console, open registration) are internal/fixture's.
		{"disk", c.Install.Disk, "/dev/sda"},
		{"kernel args", c.Install.KernelArgs, ""},
		{"timeout", c.Install.Timeout, 30 * time.Minute},
		{"registration", c.Registration, RegistrationPreregistered},
		{"redacted password", cfg.Redacted().TemplateVars["root_password_hash"], SecretMask},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %v, want %v", ch.what, ch.got, ch.want)
		}
	}
}

// TestExampleFileHasEveryKey keeps etc/mayu.yaml complete as fields are
// added: every key of every struct must appear in it.
func TestExampleFileHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	root, err := parseDocument(data)
	if err != nil {
		t.Fatal(err)
	}
	var walk func(n *yaml.Node, typ reflect.Type, path string)
	walk = func(n *yaml.Node, typ reflect.Type, path string) {
		switch {
		case typ == addrType || typ == prefixType || typ == durationType:
		case typ.Kind() == reflect.Struct:
			present := map[string]*yaml.Node{}
			for i := 0; i+1 < len(n.Content); i += 2 {
				present[n.Content[i].Value] = n.Content[i+1]
			}
			for name, ft := range yamlFields(typ) {
				v, ok := present[name]
				if !ok {
					t.Errorf("%s: key %q missing from %s", examplePath, name, describe(path))
					continue
				}
				walk(v, ft, join(path, name))
			}
		case typ.Kind() == reflect.Slice && len(n.Content) > 0:
			walk(n.Content[0], typ.Elem(), path+"[0]")
		}
	}
	walk(root, reflect.TypeFor[Config](), "")
}

var httpsEndpoints = []string{"https://10.0.2.5:2379", "https://10.0.2.6:2379"}

// TestValidateAcceptsTLS lets through what fits together: TLS to an
// external etcd with a CA, a client certificate and a user, or to a
// public name without a CA; the embedded etcd serving TLS with client
// certificates.
func TestValidateAcceptsTLS(t *testing.T) {
	for name, change := range map[string]func(e *Etcd){
		"external": func(e *Etcd) {
			e.Endpoints, e.CAFile, e.CertFile, e.KeyFile = httpsEndpoints, "/ca.pem", "/c.pem", "/k.pem"
			e.Username, e.PasswordFile = "mayu", "/etc/mayu/etcd-password"
		},
		"public name": func(e *Etcd) { e.Endpoints = []string{"https://etcd.example.com:2379"} },
		"user over http": func(e *Etcd) {
			e.Endpoints, e.Username, e.PasswordFile = []string{"http://10.0.2.5:2379"}, "mayu", "/p"
		},
		"embedded": func(e *Etcd) {
			e.Embedded.ClientURL, e.Embedded.CertFile, e.Embedded.KeyFile, e.Embedded.ClientCAFile = "https://127.0.0.1:2379", "/s.pem", "/s-key.pem", "/ca.pem"
			e.CAFile, e.CertFile, e.KeyFile = "/ca.pem", "/c.pem", "/k.pem"
		},
		// The embedded section is not used with endpoints: its keys do
		// not have to fit the endpoints' scheme.
		"embedded unused": func(e *Etcd) {
			e.Endpoints, e.CAFile = httpsEndpoints, "/ca.pem"
			e.Embedded.ClientCAFile = "/ca.pem"
		},
	} {
		cfg := mustParse(t, baseYAML)
		change(&cfg.Node.Etcd)
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestValidate checks that each rule names the key, as written in the YAML,
// that breaks it.
func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(c *Config)
		want   string
	}{
		// node
		{"name empty", func(c *Config) { c.Node.Name = "" }, "node.name: required"},
		{"advertise missing", func(c *Config) { c.Node.AdvertiseAddress = netip.Addr{} },
			"node.advertise_address: required (the address machines use to reach mayu)"},
		{"advertise IPv6", func(c *Config) { c.Node.AdvertiseAddress = netip.MustParseAddr("2001:db8::1") },
			"node.advertise_address: 2001:db8::1 is not an IPv4 address"},
		{"advertise unspecified", func(c *Config) { c.Node.AdvertiseAddress = netip.IPv4Unspecified() },
			"node.advertise_address: 0.0.0.0 cannot be reached"},
		{"admin tokens file missing", func(c *Config) { c.Node.AdminTokenFile = "" }, "node.admin.tokens_file: required"},
		{"admin token file and tokens file", func(c *Config) { c.Node.Admin.TokensFile = "/etc/mayu/admin-tokens.yaml" },
			"node.admin_token_file: is replaced by node.admin.tokens_file"},
		{"admin cert without key", func(c *Config) { c.Node.Admin.CertFile = "/etc/mayu/admin.crt" },
			"node.admin.key_file: required with node.admin.cert_file"},
		{"admin key without cert", func(c *Config) { c.Node.Admin.KeyFile = "/etc/mayu/admin.key" },
			"node.admin.cert_file: required with node.admin.key_file"},
		{"admin client CA without TLS", func(c *Config) { c.Node.Admin.ClientCAFile = "/etc/mayu/clients.crt" },
			"node.admin.client_ca_file: needs node.admin.cert_file"},
		{"audit entries too many", func(c *Config) { c.Node.Admin.Audit.MaxEntries = 1000000 },
			"node.admin.audit.max_entries: 1000000 is out of range (100-100000"},
		{"audit age too short", func(c *Config) { c.Node.Admin.Audit.MaxAge = time.Minute },
			"node.admin.audit.max_age: 1m0s is too short"},

		// ports
		{"http 0", func(c *Config) { c.Node.Ports.HTTP = 0 }, "node.ports.http: 0 is not a port (1-65535)"},
		{"admin too big", func(c *Config) { c.Node.Ports.Admin = 70000 }, "node.ports.admin: 70000 is not a port"},
		{"metrics negative", func(c *Config) { c.Node.Ports.Metrics = -1 }, "node.ports.metrics: -1 is not a port"},
		{"dhcp negative", func(c *Config) { c.Node.Ports.DHCP = -1 }, "node.ports.dhcp: -1 is not a port (0 disables it"},
		{"tftp too big", func(c *Config) { c.Node.Ports.TFTP = 65536 }, "node.ports.tftp: 65536 is not a port"},
		{"admin same as http", func(c *Config) { c.Node.Ports.Admin = c.Node.Ports.HTTP },
			"node.ports.admin: 4081 is already used by node.ports.http"},
		{"metrics same as admin", func(c *Config) { c.Node.Ports.Metrics = c.Node.Ports.Admin },
			"node.ports.metrics: 4080 is already used by node.ports.admin"},
		{"tftp same as dhcp", func(c *Config) { c.Node.Ports.TFTP = 67 },
			"node.ports.tftp: 67 is already used by node.ports.dhcp"},

		// etcd
		{"endpoint without scheme", func(c *Config) { c.Node.Etcd.Endpoints = []string{"http://10.0.0.2:2379", "10.0.0.3:2379"} },
			`node.etcd.endpoints[1]: "10.0.0.3:2379" is not an http:// or https:// URL with a host`},
		{"endpoint wrong scheme", func(c *Config) { c.Node.Etcd.Endpoints = []string{"unix:///run/etcd.sock"} },
			`node.etcd.endpoints[0]: "unix:///run/etcd.sock" is not an http:// or https://`},
		{"endpoint without host", func(c *Config) { c.Node.Etcd.Endpoints = []string{"https://"} },
			`node.etcd.endpoints[0]: "https://" is not`},
		{"endpoint empty", func(c *Config) { c.Node.Etcd.Endpoints = []string{""} }, "node.etcd.endpoints[0]: required"},
		{"client url", func(c *Config) { c.Node.Etcd.Embedded.ClientURL = "localhost:2379" },
			`node.etcd.embedded.client_url: "localhost:2379" is not`},
		{"peer url", func(c *Config) { c.Node.Etcd.Embedded.PeerURL = "tcp://127.0.0.1:2380" },
			`node.etcd.embedded.peer_url: "tcp://127.0.0.1:2380" is not`},
		{"prefix", func(c *Config) { c.Node.Etcd.Prefix = "mayu" }, `node.etcd.prefix: "mayu" must start and end with "/"`},
		{"dial timeout", func(c *Config) { c.Node.Etcd.DialTimeout = -time.Second }, "node.etcd.dial_timeout: must be positive"},
		{"request timeout", func(c *Config) { c.Node.Etcd.RequestTimeout = 0 }, "node.etcd.request_timeout: must be positive"},
		{"quota", func(c *Config) { c.Node.Etcd.Embedded.QuotaBytes = -1 }, "node.etcd.embedded.quota_bytes: must be positive"},
		{"compaction", func(c *Config) { c.Node.Etcd.Embedded.CompactionRetention = -time.Hour },
			"node.etcd.embedded.compaction_retention: must be positive"},

		// etcd over TLS with authentication
		{"cert without key", func(c *Config) {
			c.Node.Etcd.Endpoints, c.Node.Etcd.CAFile, c.Node.Etcd.CertFile = httpsEndpoints, "/ca.pem", "/c.pem"
		},
			"node.etcd.key_file: required with node.etcd.cert_file"},
		{"key without cert", func(c *Config) {
			c.Node.Etcd.Endpoints, c.Node.Etcd.CAFile, c.Node.Etcd.KeyFile = httpsEndpoints, "/ca.pem", "/k.pem"
		},
			"node.etcd.cert_file: required with node.etcd.key_file"},
		{"user without password", func(c *Config) { c.Node.Etcd.Username = "mayu" },
			"node.etcd.password_file: required with node.etcd.username (a file holding the user's password)"},
		{"password without user", func(c *Config) { c.Node.Etcd.PasswordFile = "/etc/mayu/etcd-password" },
			"node.etcd.username: required with node.etcd.password_file"},
		{"https at an address without a CA", func(c *Config) { c.Node.Etcd.Endpoints = httpsEndpoints },
			"node.etcd.ca_file: required for node.etcd.endpoints https://10.0.2.5:2379: no public CA certifies 10.0.2.5"},
		{"https at a bare name without a CA", func(c *Config) { c.Node.Etcd.Endpoints = []string{"https://etcd1:2379"} },
			"node.etcd.ca_file: required for node.etcd.endpoints https://etcd1:2379"},
		{"mixed schemes", func(c *Config) {
			c.Node.Etcd.Endpoints, c.Node.Etcd.CAFile = append(httpsEndpoints, "http://10.0.2.7:2379"), "/ca.pem"
		}, `node.etcd.endpoints[2]: "http://10.0.2.7:2379" and endpoints[0] "https://10.0.2.5:2379" differ in scheme`},
		{"CA with http endpoints", func(c *Config) {
			c.Node.Etcd.Endpoints, c.Node.Etcd.CAFile = []string{"http://10.0.2.5:2379"}, "/ca.pem"
		},
			"node.etcd.ca_file: set, but node.etcd.endpoints http://10.0.2.5:2379 is http://: use https://"},
		{"client cert with http embedded", func(c *Config) { c.Node.Etcd.CertFile, c.Node.Etcd.KeyFile = "/c.pem", "/k.pem" },
			"node.etcd.cert_file: set, but node.etcd.embedded.client_url http://127.0.0.1:2379 is http://"},
		{"embedded https without a certificate", func(c *Config) {
			c.Node.Etcd.Embedded.ClientURL, c.Node.Etcd.CAFile = "https://127.0.0.1:2379", "/ca.pem"
		}, "node.etcd.embedded.cert_file: required for node.etcd.embedded.client_url https://127.0.0.1:2379"},
		{"embedded https without a CA", func(c *Config) {
			c.Node.Etcd.Embedded.ClientURL, c.Node.Etcd.Embedded.CertFile, c.Node.Etcd.Embedded.KeyFile = "https://127.0.0.1:2379", "/s.pem", "/s-key.pem"
		}, "node.etcd.ca_file: required for node.etcd.embedded.client_url https://127.0.0.1:2379"},
		{"embedded certificate with http", func(c *Config) { c.Node.Etcd.Embedded.CertFile, c.Node.Etcd.Embedded.KeyFile = "/s.pem", "/s-key.pem" },
			"node.etcd.embedded.cert_file: set, but node.etcd.embedded.client_url http://127.0.0.1:2379 is http://"},
		{"embedded key without cert", func(c *Config) { c.Node.Etcd.Embedded.KeyFile = "/s-key.pem" },
			"node.etcd.embedded.cert_file: required with node.etcd.embedded.key_file"},
		{"embedded client CA with http", func(c *Config) { c.Node.Etcd.Embedded.ClientCAFile = "/ca.pem" },
			"node.etcd.embedded.client_ca_file: set, but node.etcd.embedded.client_url http://127.0.0.1:2379 is http://"},
		{"embedded client CA without mayu's certificate", func(c *Config) {
			e := &c.Node.Etcd
			e.Embedded.ClientURL, e.Embedded.CertFile, e.Embedded.KeyFile, e.CAFile = "https://127.0.0.1:2379", "/s.pem", "/s-key.pem", "/ca.pem"
			e.Embedded.ClientCAFile = "/ca.pem"
		}, "node.etcd.cert_file: required: node.etcd.embedded.client_ca_file makes the embedded etcd ask for a client certificate"},
		// limits
		{"http stall", func(c *Config) { c.Node.Limits.HTTP.StallTimeout = 500 * time.Millisecond },
			"node.limits.http.stall_timeout: 500ms is out of range (1s-1h)"},
		{"admin header timeout", func(c *Config) { c.Node.Limits.Admin.ReadHeaderTimeout = -time.Second },
			"node.limits.admin.read_header_timeout: -1s is out of range (1s-10m)"},
		{"http idle", func(c *Config) { c.Node.Limits.HTTP.IdleTimeout = 2 * time.Hour },
			"node.limits.http.idle_timeout: 2h0m0s is out of range (1s-1h)"},
		{"http header bytes", func(c *Config) { c.Node.Limits.HTTP.MaxHeaderBytes = 100 },
			"node.limits.http.max_header_bytes: 100 is out of range (1024-1048576)"},
		{"http connections", func(c *Config) { c.Node.Limits.HTTP.MaxConnections = -1 },
			"node.limits.http.max_connections: -1 is out of range"},
		{"admin per address above total", func(c *Config) { c.Node.Limits.Admin.MaxConnectionsPerAddress = 300 },
			"node.limits.admin.max_connections_per_address: 300 is more than node.limits.admin.max_connections (256)"},
		{"tftp transfers", func(c *Config) { c.Node.Limits.TFTP.MaxTransfers = -5 },
			"node.limits.tftp.max_transfers: -5 is out of range (1-65536)"},
		{"tftp per address", func(c *Config) { c.Node.Limits.TFTP.MaxPerAddress = 1 << 20 },
			"node.limits.tftp.max_per_address: 1048576 is out of range"},
		{"tftp pending", func(c *Config) { c.Node.Limits.TFTP.MaxPending = -1 },
			"node.limits.tftp.max_pending: -1 is out of range"},
		{"tftp retransmissions", func(c *Config) { c.Node.Limits.TFTP.Retransmissions = 11 },
			"node.limits.tftp.retransmissions: 11 is out of range (1-10)"},
		{"tftp timeout", func(c *Config) { c.Node.Limits.TFTP.Timeout = time.Millisecond },
			"node.limits.tftp.timeout: 1ms is out of range (100ms-1m)"},
		{"tftp first block before timeout", func(c *Config) {
			c.Node.Limits.TFTP.Timeout, c.Node.Limits.TFTP.FirstBlockTimeout = 2*time.Second, time.Second
		}, "node.limits.tftp.first_block_timeout: 1s is shorter than node.limits.tftp.timeout (2s)"},

		// pools
		{"no pools", func(c *Config) { c.Cluster.Pools = nil }, "cluster.pools: at least one pool is required"},
		{"subnet missing", func(c *Config) { c.Cluster.Pools[0].Subnet = netip.Prefix{} }, "cluster.pools[0].subnet: required"},
		{"subnet IPv6", func(c *Config) { c.Cluster.Pools[0].Subnet = netip.MustParsePrefix("2001:db8::/64") },
			"cluster.pools[0].subnet: 2001:db8::/64 is not an IPv4 subnet"},
		{"subnet host bits", func(c *Config) { c.Cluster.Pools[0].Subnet = netip.MustParsePrefix("10.0.2.7/24") },
			"cluster.pools[0].subnet: 10.0.2.7/24 has host bits set; did you mean 10.0.2.0/24?"},
		{"range end outside subnet", func(c *Config) { c.Cluster.Pools[1].Range.End = netip.MustParseAddr("10.0.4.10") },
			"cluster.pools[1].range.end: 10.0.4.10 is not inside subnet 10.0.3.0/24"},
		{"range start outside subnet", func(c *Config) { c.Cluster.Pools[0].Range.Start = netip.MustParseAddr("10.0.1.10") },
			"cluster.pools[0].range.start: 10.0.1.10 is not inside subnet 10.0.2.0/24"},
		{"range start missing", func(c *Config) { c.Cluster.Pools[0].Range.Start = netip.Addr{} }, "cluster.pools[0].range.start: required"},
		{"range end missing", func(c *Config) { c.Cluster.Pools[0].Range.End = netip.Addr{} }, "cluster.pools[0].range.end: required"},
		{"range start IPv6", func(c *Config) { c.Cluster.Pools[0].Range.Start = netip.MustParseAddr("::1") },
			"cluster.pools[0].range.start: ::1 is not an IPv4 address"},
		{"range reversed", func(c *Config) {
			c.Cluster.Pools[0].Range = Range{netip.MustParseAddr("10.0.2.150"), netip.MustParseAddr("10.0.2.120")}
		}, "cluster.pools[0].range: start 10.0.2.150 is after end 10.0.2.120"},
		{"range start network address", func(c *Config) { c.Cluster.Pools[0].Range.Start = netip.MustParseAddr("10.0.2.0") },
			"cluster.pools[0].range.start: 10.0.2.0 is the network address of 10.0.2.0/24"},
		{"range end broadcast address", func(c *Config) { c.Cluster.Pools[0].Range.End = netip.MustParseAddr("10.0.2.255") },
			"cluster.pools[0].range.end: 10.0.2.255 is the broadcast address of 10.0.2.0/24"},
		{"router outside subnet", func(c *Config) { c.Cluster.Pools[0].Router = netip.MustParseAddr("10.0.9.1") },
			"cluster.pools[0].router: 10.0.9.1 is not inside subnet 10.0.2.0/24"},
		{"router IPv6", func(c *Config) { c.Cluster.Pools[0].Router = netip.MustParseAddr("fe80::1") },
			"cluster.pools[0].router: fe80::1 is not an IPv4 address"},
		{"router in range", func(c *Config) { c.Cluster.Pools[0].Router = netip.MustParseAddr("10.0.2.150") },
			"cluster.pools[0].router: 10.0.2.150 is inside the range 10.0.2.100-10.0.2.199"},
		{"dns IPv6", func(c *Config) {
			c.Cluster.Pools[0].DNS = []netip.Addr{netip.MustParseAddr("10.0.2.1"), netip.MustParseAddr("2001:db8::53")}
		}, "cluster.pools[0].dns[1]: 2001:db8::53 is not an IPv4 address"},
		{"dns empty", func(c *Config) { c.Cluster.Pools[0].DNS = []netip.Addr{{}} }, "cluster.pools[0].dns[0]: empty"},
		{"lease too short", func(c *Config) { c.Cluster.Pools[1].LeaseTime = 30 * time.Second },
			"cluster.pools[1].lease_time: 30s is too short (at least 1m)"},
		{"pools overlap", func(c *Config) { c.Cluster.Pools[1].Subnet = netip.MustParsePrefix("10.0.2.0/23") },
			"cluster.pools[1].subnet: 10.0.2.0/23 overlaps cluster.pools[0].subnet 10.0.2.0/24"},

		// static
		{"static subnet missing", func(c *Config) { c.Cluster.Static.Subnet = netip.Prefix{} }, "cluster.static.subnet: required"},
		{"static range missing", func(c *Config) { c.Cluster.Static.Range = Range{} }, "cluster.static.range.start: required"},
		{"static range outside", func(c *Config) { c.Cluster.Static.Range.End = netip.MustParseAddr("10.0.2.60") },
			"cluster.static.range.end: 10.0.2.60 is not inside subnet 10.0.3.0/24"},
		{"static range reversed", func(c *Config) { c.Cluster.Static.Range.Start = netip.MustParseAddr("10.0.3.61") },
			"cluster.static.range: start 10.0.3.61 is after end 10.0.3.60"},
		{"static overlaps pool", func(c *Config) { c.Cluster.Static.Range.End = netip.MustParseAddr("10.0.3.150") },
			"cluster.static.range: 10.0.3.10-10.0.3.150 overlaps cluster.pools[1].range 10.0.3.100-10.0.3.199"},
		{"gateway outside", func(c *Config) { c.Cluster.Static.Gateway = netip.MustParseAddr("10.0.2.1") },
			"cluster.static.gateway: 10.0.2.1 is not inside subnet 10.0.3.0/24"},
		{"gateway in range", func(c *Config) { c.Cluster.Static.Gateway = netip.MustParseAddr("10.0.3.20") },
			"cluster.static.gateway: 10.0.3.20 is inside the range 10.0.3.10-10.0.3.60"},
		{"static dns IPv6", func(c *Config) { c.Cluster.Static.DNS = []netip.Addr{netip.MustParseAddr("::1")} },
			"cluster.static.dns[0]: ::1 is not an IPv4 address"},

		// profiles
		{"profile name missing", func(c *Config) { c.Cluster.Profiles[0].Name = "" }, "cluster.profiles[0].name: required"},
		{"profile name upper case", func(c *Config) { c.Cluster.Profiles[0].Name = "Core" },
			`cluster.profiles[0].name: "Core" is not a valid profile name`},
		{"profile name leading dash", func(c *Config) { c.Cluster.Profiles[0].Name = "-core" },
			`cluster.profiles[0].name: "-core" is not a valid profile name`},
		{"profile name too long", func(c *Config) { c.Cluster.Profiles[1].Name = strings.Repeat("w", 33) },
			"cluster.profiles[1].name: \"" + strings.Repeat("w", 33) + "\" is not a valid profile name"},
		{"profile name default", func(c *Config) { c.Cluster.Profiles[1].Name = "default" },
			`cluster.profiles[1].name: "default" is reserved`},
		{"profile name duplicate", func(c *Config) { c.Cluster.Profiles[1].Name = "core" },
			`cluster.profiles[1].name: "core" is already the name of cluster.profiles[0]`},
		{"profile quantity", func(c *Config) { c.Cluster.Profiles[1].Quantity = 0 },
			"cluster.profiles[1].quantity: must be at least 1 (got 0)"},
		{"profile tag key empty", func(c *Config) { c.Cluster.Profiles[0].Tags[""] = "x" },
			"cluster.profiles[0].tags: a tag has an empty key"},
		{"profile tag key bad", func(c *Config) { c.Cluster.Profiles[0].Tags["x\nssh_authorized_keys"] = "x" },
			`cluster.profiles[0].tags: tag "x\nssh_authorized_keys" is not a valid metadata key: it must match`},

		// artifacts
		{"install artifact name bad", func(c *Config) { c.Cluster.Install.Image = "artifact:../x" },
			`cluster.install.image: "../x" is not a valid artifact name`},
		{"profile install local file", func(c *Config) { c.Cluster.Profiles[0].Install.Image = "images/other.img" },
			`cluster.profiles[0].install.image: "images/other.img" must name an artifact`},
		{"profile install artifact name bad", func(c *Config) { c.Cluster.Profiles[0].Install.Kernel = "artifact:" },
			`cluster.profiles[0].install.kernel: "" is not a valid artifact name`},
		{"artifact transfers", func(c *Config) { c.Node.Artifacts.Transfers = 100 }, "node.artifacts.transfers"},
		{"artifact quota negative", func(c *Config) { c.Node.Artifacts.QuotaBytes = -1 }, "node.artifacts.quota_bytes: -1 is negative"},
		{"artifact cache dir relative", func(c *Config) { c.Node.Artifacts.CacheDir = "cache" },
			`node.artifacts.cache_dir: "cache" is not an absolute path`},
		{"artifact peer address unspecified", func(c *Config) { c.Node.Artifacts.PeerAddress = netip.IPv4Unspecified() },
			"node.artifacts.peer_address: 0.0.0.0 cannot be reached"},
		{"artifact grace", func(c *Config) { c.Node.Artifacts.MissingGrace = time.Second }, "node.artifacts.missing_grace"},
		// deposition
		{"deposition probe interval", func(c *Config) { c.Node.Deposition.ProbeInterval = time.Millisecond },
			"node.deposition.probe_interval: 1ms is out of range (10ms-10s)"},
		{"deposition probe timeout", func(c *Config) { c.Node.Deposition.ProbeTimeout = time.Minute },
			"node.deposition.probe_timeout: 1m0s is out of range"},
		{"deposition suspect after", func(c *Config) { c.Node.Deposition.SuspectAfter = 1000 },
			"node.deposition.suspect_after: 1000 is out of range (1-100)"},
		{"deposition slower than the TTL", func(c *Config) { c.Node.Deposition.SuspectAfter = 20 },
			"node.deposition.suspect_after: 20 probes of 250ms every 250ms take 5s, not less than node.election_ttl (3s)"},
		{"deposition interval slower than the TTL", func(c *Config) { c.Node.Deposition.ProbeInterval = 2 * time.Second },
			"node.deposition.suspect_after: 3 probes of 250ms every 2s take 4.25s, not less than node.election_ttl (3s)"},

		// install and templates
		{"disk relative", func(c *Config) { c.Cluster.Install.Disk = "sda" }, `cluster.install.disk: "sda" is not an absolute device path`},
		{"kernel args two lines", func(c *Config) { c.Cluster.Install.KernelArgs = "quiet\nchain http://evil" },
			"cluster.install.kernel_args: must be one line"},
		{"install timeout", func(c *Config) { c.Cluster.Install.Timeout = 10 * time.Second },
			"cluster.install.timeout: 10s is too short (at least 1m)"},

		// the rest
		{"registration", func(c *Config) { c.Cluster.Registration = "closed" },
			`cluster.registration: "closed" is neither "open" nor "preregistered"`},
		{"relay outside every pool", func(c *Config) { c.Cluster.DHCP.Relays = []netip.Addr{netip.MustParseAddr("10.7.0.1")} },
			"cluster.dhcp.relays[0]: 10.7.0.1 is in no cluster.pools subnet"},
		{"relay IPv6", func(c *Config) { c.Cluster.DHCP.Relays = []netip.Addr{netip.MustParseAddr("fe80::1")} },
			"cluster.dhcp.relays[0]: fe80::1 is not an IPv4 address"},
		{"relay twice", func(c *Config) {
			c.Cluster.DHCP.Relays = []netip.Addr{netip.MustParseAddr("10.0.2.1"), netip.MustParseAddr("10.0.2.1")}
		}, "cluster.dhcp.relays[1]: 10.0.2.1 is already cluster.dhcp.relays[0]"},
		{"new client rate", func(c *Config) { c.Cluster.DHCP.NewClientsPerSecond = -1 },
			"cluster.dhcp.new_clients_per_second: must be positive (got -1)"},
		{"new client burst", func(c *Config) { c.Cluster.DHCP.NewClientsBurst = -5 },
			"cluster.dhcp.new_clients_burst: must be at least 1 (got -5)"},
		{"probe timeout", func(c *Config) { c.Cluster.DHCP.DeclineProbeTimeout = time.Minute },
			"cluster.dhcp.decline_probe_timeout: 1m0s is out of range (10ms-10s)"},
		{"probes", func(c *Config) { c.Cluster.DHCP.DeclineProbes = 5000 },
			"cluster.dhcp.decline_probes: 5000 is out of range (1-1024)"},
		{"quarantine", func(c *Config) { c.Cluster.DHCP.DeclineQuarantine = time.Millisecond },
			"cluster.dhcp.decline_quarantine: 1ms is too short (at least 1s)"},
		{"unregistered share", func(c *Config) { c.Cluster.DHCP.UnregisteredShare = 101 },
			"cluster.dhcp.unregistered_share: 101 is out of range (1-100 percent; 100 turns the cap off)"},
		{"registration rate", func(c *Config) { c.Cluster.SelfRegistration.PerSecond = -0.5 },
			"cluster.self_registration.per_second: must be positive (got -0.5)"},
		{"registration burst", func(c *Config) { c.Cluster.SelfRegistration.Burst = -1 },
			"cluster.self_registration.burst: must be at least 1 (got -1)"},
		{"registration expiry", func(c *Config) { c.Cluster.SelfRegistration.ExpireAfter = time.Second },
			"cluster.self_registration.expire_after: 1s is too short (at least 1m)"},
		{"secret var unknown", func(c *Config) { c.Cluster.SecretTemplateVars = append(c.Cluster.SecretTemplateVars, "api_key") },
			`cluster.secret_template_vars[1]: "api_key" is not a key of cluster.template_vars`},
	}

	// Every file path follows the same rules.
	filePaths := []struct {
		key string
		set func(c *Config, v string)
	}{
		{"cluster.install.kernel", func(c *Config, v string) { c.Cluster.Install.Kernel = v }},
		{"cluster.install.initrd", func(c *Config, v string) { c.Cluster.Install.Initrd = v }},
		{"cluster.install.image", func(c *Config, v string) { c.Cluster.Install.Image = v }},
		{"cluster.templates.first_stage", func(c *Config, v string) { c.Cluster.Templates.FirstStage = v }},
		{"cluster.templates.final_config", func(c *Config, v string) { c.Cluster.Templates.FinalConfig = v }},
	}
	for _, fp := range filePaths {
		for _, bad := range []struct{ value, want string }{
			{"", "required (a path relative to node.files_dir)"},
			{"/boot/vmlinuz", `"/boot/vmlinuz" must be relative to node.files_dir`},
			{"../secret", `"../secret" leads outside node.files_dir`},
			{"a/../../secret", `"a/../../secret" leads outside node.files_dir`},
			{"..", `".." leads outside node.files_dir`},
			{"./", `"./" names no file`},
		} {
			tests = append(tests, struct {
				name   string
				change func(c *Config)
				want   string
			}{
				name:   fp.key + " " + bad.value,
				change: func(c *Config) { fp.set(c, bad.value) },
				want:   fp.key + ": " + bad.want,
			})
		}
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

// The checks of file paths are syntactic and let through what is fine.
func TestValidateAcceptsPaths(t *testing.T) {
	for _, v := range []string{"vmlinuz", "installer/vmlinuz", "./installer/vmlinuz", "a/../vmlinuz", "a/b/c..d"} {
		cfg := mustParse(t, baseYAML)
		cfg.Cluster.Install.Kernel = v
		if err := cfg.Validate(); err != nil {
			t.Errorf("kernel %q: %v", v, err)
		}
	}
}

func TestValidateReportsEveryProblem(t *testing.T) {
	cfg := mustParse(t, baseYAML)
	cfg.Node.AdminTokenFile = ""
	cfg.Cluster.Registration = "closed"
	cfg.Cluster.Profiles[0].Quantity = 0
	err := cfg.Validate()
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 3 {
		t.Fatalf("Validate() = %v, want 3 problems", err)
	}
}

// TestParseErrors covers what goes wrong before validation: YAML that does
// not fit the config's shape. Each message names the file, the line and the
// key.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		data string
		want []string
	}{
		{"empty", "", []string{"config test.yaml: the file is empty"}},
		{"only comments", "# nothing\n", []string{"config test.yaml: the file is empty"}},
		{"null", "~\n", []string{"config test.yaml: the file is empty"}},
		{"syntax", "node: [\n", []string{"config test.yaml: yaml: "}},
		{"two documents", baseYAML + "---\nnode: {}\n", []string{"config test.yaml: line 27: a second YAML document"}},
		{"top level not a mapping", "- a\n", []string{"config test.yaml: line 1: the top level: expected key: value pairs, found a list"}},
		{"unknown key in pool", strings.Replace(baseYAML, "lease_time: 2h", "lease_tme: 2h", 1),
			[]string{`config test.yaml: line 15: unknown key "lease_tme" in cluster.pools[1] (did you mean "lease_time"?)`}},
		{"unknown top-level key", "nodes: {}\n" + baseYAML,
			[]string{`config test.yaml: line 1: unknown key "nodes" at the top level (did you mean "node"?)`}},
		{"unknown key, no close match", strings.Replace(baseYAML, "interface: eth0", "colour: blue", 1),
			[]string{`config test.yaml: line 3: unknown key "colour" in node`}},
		{"every unknown key", strings.Replace(strings.Replace(baseYAML, "interface:", "interfce:", 1), "gateway:", "gw:", 1),
			[]string{`line 3: unknown key "interfce" in node`, `line 19: unknown key "gw" in cluster.static`}},
		{"bad address", strings.Replace(baseYAML, "router: 10.0.2.1", "router: 10.0.2.300", 1),
			[]string{`config test.yaml: line 10: cluster.pools[0].router: "10.0.2.300" is not an IP address`}},
		{"bad subnet", strings.Replace(baseYAML, "subnet: 10.0.3.0/24\n    range", "subnet: 10.0.3.0\n    range", 1),
			[]string{`line 17: cluster.static.subnet: "10.0.3.0" is not a subnet in CIDR notation`}},
		{"duration without unit", strings.Replace(baseYAML, "lease_time: 2h", "lease_time: 7200", 1),
			[]string{`line 15: cluster.pools[1].lease_time: "7200" is not a duration; write it with a unit`}},
		{"bad duration", strings.Replace(baseYAML, "lease_time: 2h", "lease_time: 2 hours", 1),
			[]string{`line 15: cluster.pools[1].lease_time: "2 hours" is not a duration`}},
		{"single value for a list", strings.Replace(baseYAML, "dns: [10.0.2.1]", "dns: 10.0.2.1", 1),
			[]string{`line 11: cluster.pools[0].dns: expected a list, found "10.0.2.1"; write [10.0.2.1]`}},
		{"list for a single value", strings.Replace(baseYAML, "interface: eth0", "interface: [eth0, eth1]", 1),
			[]string{`line 3: node.interface: expected a single value, found a list`}},
		{"value for a mapping", strings.Replace(baseYAML, "  static:\n", "  static: none\n  x_static:\n", 1),
			[]string{`line 16: cluster.static: expected key: value pairs, found "none"`}},
		{"misspelt dhcp limit", baseYAML + "  dhcp: {new_client_burst: 10}\n",
			[]string{`unknown key "new_client_burst" in cluster.dhcp (did you mean "new_clients_burst"?)`}},
		{"relay not an address", baseYAML + "  dhcp: {relays: [10.0.2.300]}\n",
			[]string{`cluster.dhcp.relays[0]: "10.0.2.300" is not an IP address`}},
		{"expiry without unit", baseYAML + "  self_registration: {expire_after: 3600}\n",
			[]string{`cluster.self_registration.expire_after: "3600" is not a duration`}},
		{"not a number", strings.Replace(baseYAML, "quantity: 3", "quantity: three", 1),
			[]string{`config test.yaml: line 21: cluster.profiles[0].quantity: "three" is not a whole number`}},
		{"port not a number", strings.Replace(baseYAML, "interface: eth0", "interface: eth0\n  ports: {proxy_dhcp: x}", 1),
			[]string{`config test.yaml: line 4: node.ports.proxy_dhcp: "x" is not a whole number`}},
		{"mtu with a suffix", strings.Replace(baseYAML, "dns: [10.0.2.1]", "dns: [10.0.2.1]\n      mtu: 1500x", 1),
			[]string{`config test.yaml: line 12: cluster.pools[0].mtu: "1500x" is not a whole number`}},
		{"option code not a number", strings.Replace(baseYAML, "dns: [10.0.2.1]", "dns: [10.0.2.1]\n      options: [{code: abc, type: string, value: x}]", 1),
			[]string{`config test.yaml: line 12: cluster.pools[0].options[0].code: "abc" is not a whole number`}},
		{"always not a bool", strings.Replace(baseYAML, "dns: [10.0.2.1]", "dns: [10.0.2.1]\n      options: [{code: 224, type: string, value: x, always: sometimes}]", 1),
			[]string{`config test.yaml: line 12: cluster.pools[0].options[0].always: "sometimes" is not true or false`}},
		{"deposition switch not a bool", strings.Replace(baseYAML, "interface: eth0", "interface: eth0\n  deposition: {enabled: maybe}", 1),
			[]string{`config test.yaml: line 4: node.deposition.enabled: "maybe" is not true or false`}},
		{"rate not a number", baseYAML + "  dhcp: {new_clients_per_second: fast}\n",
			[]string{`config test.yaml: line 27: cluster.dhcp.new_clients_per_second: "fast" is not a number`}},
		{"number too large", strings.Replace(baseYAML, "quantity: 3", "quantity: 99999999999999999999", 1),
			[]string{`line 21: cluster.profiles[0].quantity: "99999999999999999999" is out of range`}},
		// One bad number used to stop the decoder, hiding the rest of the
		// file's problems; now every one is listed.
		{"every bad number and key", strings.Replace(strings.Replace(strings.Replace(baseYAML,
			"quantity: 3", "quantity: three", 1),
			"interface: eth0", "interface: eth0\n  ports: {proxy_dhcp: x, tftp: 69.5}", 1),
			"lease_time: 2h", "lease_tme: 2h", 1),
			[]string{`line 22: cluster.profiles[0].quantity: "three" is not a whole number`,
				`line 4: node.ports.proxy_dhcp: "x" is not a whole number`,
				`line 4: node.ports.tftp: "69.5" is not a whole number`,
				`line 16: unknown key "lease_tme" in cluster.pools[1]`}},
		{"duplicate key", strings.Replace(baseYAML, "interface: eth0", "interface: eth0\n  interface: eth1", 1),
			[]string{`config test.yaml: `, `"interface" already defined`}},
		{"validation names the file on every line", strings.Replace(baseYAML, "quantity: 3", "quantity: 0", 1) +
			"  registration: closed\n",
			[]string{"config test.yaml: cluster.profiles[0].quantity: must be at least 1",
				"\nconfig test.yaml: cluster.registration: \"closed\""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.data), "test.yaml")
			if err == nil {
				t.Fatalf("Parse() = %+v, want an error", cfg)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Parse() error =\n%v\nwant it to contain %q", err, w)
				}
			}
		})
	}
}

func TestLoadMissingFile(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "mayu.yaml")
	_, err := Load(missing)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), missing) {
		t.Errorf("Load(missing) = %v, want a not-exist error naming the file", err)
	}
}

func TestDefaults(t *testing.T) {
	host, err := os.Hostname()
	if err != nil {
		t.Skipf("no host name: %v", err)
	}
	cfg := mustParse(t, strings.Replace(baseYAML, "  name: test-node\n", "", 1))
	n, c := cfg.Node, cfg.Cluster
	checks := []struct {
		what      string
		got, want any
	}{
		{"name", n.Name, host},
		{"listen_address", n.ListenAddress, netip.MustParseAddr("0.0.0.0")},
		{"data_dir", n.DataDir, "/var/lib/mayu"},
		{"files_dir", n.FilesDir, "/usr/share/mayu/files"},
		{"etcd.endpoints", len(n.Etcd.Endpoints), 0},
		{"etcd.prefix", n.Etcd.Prefix, "/mayu/"},
		{"etcd.dial_timeout", n.Etcd.DialTimeout, 5 * time.Second},
		{"etcd.request_timeout", n.Etcd.RequestTimeout, 5 * time.Second},
		{"embedded.client_url", n.Etcd.Embedded.ClientURL, "http://127.0.0.1:2379"},
		{"embedded.peer_url", n.Etcd.Embedded.PeerURL, "http://127.0.0.1:2380"},
		{"embedded.quota_bytes", n.Etcd.Embedded.QuotaBytes, int64(2 << 30)},
		{"embedded.compaction_retention", n.Etcd.Embedded.CompactionRetention, time.Hour},
		{"ports", n.Ports, Ports{DHCP: 67, TFTP: 69, HTTP: 4081, Admin: 4080, Metrics: 4082, ProxyDHCP: 4011}},
		{"pools[0].lease_time", c.Pools[0].LeaseTime, time.Hour},
		{"pools[1].lease_time (set)", c.Pools[1].LeaseTime, 2 * time.Hour},
		{"install.disk", c.Install.Disk, "/dev/sda"},
		{"install.timeout", c.Install.Timeout, 30 * time.Minute},
		{"registration", c.Registration, RegistrationOpen},
		{"limits.http", n.Limits.HTTP, HTTPLimits{ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
			StallTimeout: 30 * time.Second, MaxHeaderBytes: 16384, MaxConnections: 4096, MaxConnectionsPerAddress: 64}},
		{"limits.admin", n.Limits.Admin, HTTPLimits{ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute,
			StallTimeout: 30 * time.Second, MaxHeaderBytes: 16384, MaxConnections: 256, MaxConnectionsPerAddress: 64}},
		{"limits.tftp", n.Limits.TFTP, TFTPLimits{MaxTransfers: 256, MaxPending: 256, MaxPerAddress: 64,
			Timeout: time.Second, Retransmissions: 1, FirstBlockTimeout: 3 * time.Second}},
		{"dhcp", c.DHCP, DHCP{NewClientsPerSecond: 20, NewClientsBurst: 200, DeclineProbeTimeout: time.Second,
			DeclineProbes: 16, DeclineQuarantine: 10 * time.Minute, UnregisteredShare: 50}},
		{"self_registration", c.SelfRegistration, SelfRegistration{PerSecond: 10, Burst: 100, ExpireAfter: time.Hour, MaxUnfinished: DefaultMaxUnfinished(c.Static.Range.Size())}},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %v, want %v", ch.what, ch.got, ch.want)
		}
	}
}

// A typo in a limit is reported with its line and a guess; a limit set
// in the file survives defaulting.
func TestLimitsKeys(t *testing.T) {
	data := strings.Replace(baseYAML, "  admin_token_file: /etc/mayu/admin-token\n",
		"  admin_token_file: /etc/mayu/admin-token\n  limits:\n    tftp: {max_per_adress: 5}\n", 1)
	_, err := Parse([]byte(data), "test.yaml")
	if err == nil || !strings.Contains(err.Error(), `unknown key "max_per_adress" in node.limits.tftp (did you mean "max_per_address"?)`) {
		t.Errorf("typo: %v", err)
	}
	data = strings.Replace(baseYAML, "  admin_token_file: /etc/mayu/admin-token\n",
		"  admin_token_file: /etc/mayu/admin-token\n  limits:\n    http: {stall_timeout: 2m, max_connections_per_address: 100}\n    tftp: {retransmissions: 3}\n", 1)
	n := mustParse(t, data).Node
	if n.Limits.HTTP.StallTimeout != 2*time.Minute || n.Limits.HTTP.MaxConnectionsPerAddress != 100 ||
		n.Limits.HTTP.MaxConnections != 4096 || n.Limits.TFTP.Retransmissions != 3 || n.Limits.TFTP.MaxPerAddress != 64 {
		t.Errorf("limits = %+v", n.Limits)
	}
	data = strings.Replace(baseYAML, "  admin_token_file: /etc/mayu/admin-token\n",
		"  admin_token_file: /etc/mayu/admin-token\n  limits:\n    http: {stall_timeout: 30}\n", 1)
	if _, err := Parse([]byte(data), "test.yaml"); err == nil || !strings.Contains(err.Error(), "node.limits.http.stall_timeout") {
		t.Errorf("a duration without unit: %v", err)
	}
}

func TestLimitsSummary(t *testing.T) {
	got := strings.Join(mustParse(t, baseYAML).Node.Limits.Summary(), "\n")
	want := `node.limits.http: read_header_timeout=10s idle_timeout=1m stall_timeout=30s max_header_bytes=16384 max_connections=4096 max_connections_per_address=64
node.limits.admin: read_header_timeout=10s idle_timeout=1m stall_timeout=30s max_header_bytes=16384 max_connections=256 max_connections_per_address=64
node.limits.tftp: max_transfers=256 max_pending=256 max_per_address=64 timeout=1s retransmissions=1 first_block_timeout=3s`
	if got != want {
		t.Errorf("Summary:\n%s\nwant\n%s", got, want)
	}
}

// A port that is absent takes its default; an explicit 0 disables DHCP or
// TFTP and must survive defaulting.
func TestPorts(t *testing.T) {
	tests := []struct {
		name  string
		ports string
		want  Ports
	}{
		{"absent", "", Ports{67, 69, 4081, 4080, 4082, 4011}},
		{"empty block", "  ports:\n", Ports{67, 69, 4081, 4080, 4082, 4011}},
		{"dhcp disabled", "  ports:\n    dhcp: 0\n", Ports{0, 69, 4081, 4080, 4082, 4011}},
		{"both disabled", "  ports: {dhcp: 0, tftp: 0}\n", Ports{0, 0, 4081, 4080, 4082, 4011}},
		{"some set", "  ports: {tftp: 6969, http: 8080}\n", Ports{67, 6969, 8080, 4080, 4082, 4011}},
		{"null value keeps default", "  ports: {dhcp: ~}\n", Ports{67, 69, 4081, 4080, 4082, 4011}},
		{"udp and tcp may share a number", "  ports: {dhcp: 4081}\n", Ports{4081, 69, 4081, 4080, 4082, 4011}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := strings.Replace(baseYAML, "cluster:\n", tt.ports+"cluster:\n", 1)
			if got := mustParse(t, data).Node.Ports; got != tt.want {
				t.Errorf("Ports = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestEtcdPrefixNormalised(t *testing.T) {
	for in, want := range map[string]string{"mayu": "/mayu/", "/mayu": "/mayu/", "mayu/": "/mayu/", "/a/b/": "/a/b/", "/": "/"} {
		data := strings.Replace(baseYAML, "cluster:\n", "  etcd: {prefix: \""+in+"\"}\ncluster:\n", 1)
		if got := mustParse(t, data).Node.Etcd.Prefix; got != want {
			t.Errorf("prefix %q became %q, want %q", in, got, want)
		}
	}
}

// sameClusterYAML has baseYAML's cluster part written differently: other
// node settings, comments, keys in another order, block instead of flow
// style, defaults spelt out, empty lists.
const sameClusterYAML = `# another replica
cluster:
  secret_template_vars: [root_password_hash]
  template_vars:
    root_password_hash: "$6$salt$hash"  # secret
    ntp: "10.0.2.1"
  registration: open
  install:
    timeout: 30m
    image: images/os.img
    initrd: installer/initrd.img
    kernel: installer/vmlinuz
    disk: /dev/sda
  templates:
    final_config: templates/final-config.yaml
    first_stage: templates/first-stage.sh
  pools:
    - range:
        end: 10.0.2.199
        start: 10.0.2.100
      subnet: 10.0.2.0/24
      dns:
        - 10.0.2.1
      router: 10.0.2.1
      lease_time: 60m
    - subnet: 10.0.3.0/24
      lease_time: 2h
      router: 10.0.3.1
      range: {start: 10.0.3.100, end: 10.0.3.199}
      dns: []
  static:
    gateway: 10.0.3.1
    range: {end: 10.0.3.60, start: 10.0.3.10}
    subnet: 10.0.3.0/24
  profiles:
    - name: core
      tags: {rule-core: "true"}
      quantity: 3
    - quantity: 10
      name: worker
      tags: {}
node:
  name: other-node
  interface: eth1
  advertise_address: 10.0.2.2
  admin_token_file: /srv/token
  ports: {dhcp: 0}
`

func TestClusterHash(t *testing.T) {
	base := mustParse(t, baseYAML).ClusterHash()
	if len(base) != 64 {
		t.Fatalf("ClusterHash() = %q, want 64 hex digits", base)
	}
	// The hash of a configuration that sets none of the keys added since
	// (pool modes, options, reservations) is what the release before them
	// computed: a rolling upgrade does not make replicas disagree.
	if before := "5564d2e470b35dde23b29abd5649e918f395aff8c9cf836cb62c7446b10faf94"; base != before {
		t.Errorf("hash of the base config changed: %s, was %s", base, before)
	}
	if again := mustParse(t, baseYAML).ClusterHash(); again != base {
		t.Errorf("hash of the same file differs: %s, %s", base, again)
	}
	// A key added since, written at its default, is the same cluster.
	if same := mustParse(t, baseYAML+"  dhcp: {unregistered_share: 50}\n").ClusterHash(); same != base {
		t.Errorf("hash differs for unregistered_share written at its default: %s, %s", base, same)
	}
	if same := mustParse(t, sameClusterYAML).ClusterHash(); same != base {
		t.Errorf("hash differs for an equal cluster part written differently: %s, %s", base, same)
	}
	changes := map[string]string{
		"profile quantity": strings.Replace(baseYAML, "quantity: 3", "quantity: 4", 1),
		"profile order": strings.Replace(baseYAML,
			"    - {name: core, quantity: 3, tags: {rule-core: \"true\"}}\n    - {name: worker, quantity: 10}\n",
			"    - {name: worker, quantity: 10}\n    - {name: core, quantity: 3, tags: {rule-core: \"true\"}}\n", 1),
		"secret value":       strings.Replace(baseYAML, "$6$salt$hash", "$6$salt$other", 1),
		"lease time":         strings.Replace(baseYAML, "lease_time: 2h", "lease_time: 3h", 1),
		"unregistered share": baseYAML + "  dhcp: {unregistered_share: 60}\n",
	}
	for what, data := range changes {
		if got := mustParse(t, data).ClusterHash(); got == base {
			t.Errorf("changing the %s left the hash unchanged", what)
		}
	}
}

func TestRedacted(t *testing.T) {
	cfg := mustParse(t, baseYAML)
	r := cfg.Redacted()
	if got := r.TemplateVars["root_password_hash"]; got != SecretMask {
		t.Errorf("secret var = %q, want %q", got, SecretMask)
	}
	if got := r.TemplateVars["ntp"]; got != "10.0.2.1" {
		t.Errorf("plain var = %q, want it shown", got)
	}
	if got := cfg.Cluster.TemplateVars["root_password_hash"]; got != "$6$salt$hash" {
		t.Errorf("Redacted changed the config itself: %q", got)
	}
	// The copy shares nothing: changing it leaves the config alone.
	r.Profiles[0].Tags["rule-core"] = "false"
	r.Pools[0].DNS[0] = netip.MustParseAddr("10.0.2.2")
	if cfg.Cluster.Profiles[0].Tags["rule-core"] != "true" || cfg.Cluster.Pools[0].DNS[0] != netip.MustParseAddr("10.0.2.1") {
		t.Error("Redacted shares maps or slices with the config")
	}
}

func TestHelpers(t *testing.T) {
	cfg := mustParse(t, baseYAML)
	addr := netip.MustParseAddr
	p0 := cfg.Cluster.Pools[0]

	if got := p0.Range.Size(); got != 100 {
		t.Errorf("pool range size = %d, want 100", got)
	}
	if got := (Range{addr("10.0.0.5"), addr("10.0.0.5")}).Size(); got != 1 {
		t.Errorf("one-address range size = %d, want 1", got)
	}
	if got := (Range{addr("10.0.0.5"), addr("10.0.0.4")}).Size(); got != 0 {
		t.Errorf("reversed range size = %d, want 0", got)
	}
	if got := (Range{addr("10.0.0.0"), addr("10.255.255.255")}).Size(); got != 1<<24 {
		t.Errorf("10/8 range size = %d, want %d", got, 1<<24)
	}
	if got := (Range{}).Size(); got != 0 {
		t.Errorf("zero range size = %d, want 0", got)
	}

	for a, want := range map[string]bool{
		"10.0.2.100": true, "10.0.2.199": true, "10.0.2.150": true, "::ffff:10.0.2.150": true,
		"10.0.2.99": false, "10.0.2.200": false, "10.0.3.150": false, "2001:db8::1": false,
	} {
		if got := p0.Contains(addr(a)); got != want {
			t.Errorf("pool[0].Contains(%s) = %v, want %v", a, got, want)
		}
		if got := p0.Range.Contains(addr(a)); got != want {
			t.Errorf("pool[0].Range.Contains(%s) = %v, want %v", a, got, want)
		}
	}

	for a, want := range map[string]int{"10.0.2.1": 0, "10.0.2.250": 0, "10.0.3.7": 1, "10.0.4.1": -1} {
		pool, ok := cfg.PoolFor(addr(a))
		switch {
		case want < 0 && ok:
			t.Errorf("PoolFor(%s) = %v, want none", a, pool.Subnet)
		case want >= 0 && (!ok || pool.Subnet != cfg.Cluster.Pools[want].Subnet):
			t.Errorf("PoolFor(%s) = %v, %v, want pools[%d]", a, pool.Subnet, ok, want)
		}
	}

	s := cfg.Cluster.Static
	if s.PrefixLen() != 24 || s.Netmask() != addr("255.255.255.0") {
		t.Errorf("static /%d netmask %s, want /24 255.255.255.0", s.PrefixLen(), s.Netmask())
	}
	for prefix, mask := range map[string]string{"10.0.0.0/8": "255.0.0.0", "10.0.0.0/22": "255.255.252.0", "0.0.0.0/0": "0.0.0.0", "10.0.0.1/32": "255.255.255.255"} {
		if got := (Static{Subnet: netip.MustParsePrefix(prefix)}).Netmask(); got != addr(mask) {
			t.Errorf("Netmask of %s = %s, want %s", prefix, got, mask)
		}
	}
}

// FuzzParse checks that no input makes Parse panic, and that whatever Parse
// accepts is valid and can be hashed and redacted.
func FuzzParse(f *testing.F) {
	example, err := os.ReadFile(examplePath)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(example)
	f.Add([]byte(baseYAML))
	f.Add([]byte(sameClusterYAML))
	f.Add([]byte("node: {ports: {dhcp: 0}}\ncluster: {pools: [{subnet: 10.0.0.0/8}]}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("cluster:\n  <<: {registration: open}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse(data, "fuzz.yaml")
		if err != nil {
			if cfg != nil {
				t.Fatal("Parse returned a config with an error")
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("Parse accepted a config that does not validate: %v", err)
		}
		_ = cfg.ClusterHash()
		_ = cfg.Redacted()
	})
}

func TestArtifactSources(t *testing.T) {
	c := Cluster{
		Install: Install{Kernel: "k", Initrd: "artifact:initrd-1", Image: "artifact:img-1"},
		Profiles: []Profile{
			{Name: "core", Install: ProfileInstall{Image: "artifact:img-2"}},
			{Name: "worker"},
		},
	}
	for _, tc := range []struct{ profile, role, want string }{
		{"core", "image", "artifact:img-2"},
		{"core", "kernel", "k"},
		{"core", "initrd", "artifact:initrd-1"},
		{"worker", "image", "artifact:img-1"},
		{DefaultProfile, "image", "artifact:img-1"},
	} {
		if got := c.Source(tc.profile, tc.role); got != tc.want {
			t.Errorf("Source(%s, %s) = %q, want %q", tc.profile, tc.role, got, tc.want)
		}
	}
	if got, want := strings.Join(c.Artifacts(), " "), "img-1 img-2 initrd-1"; got != want {
		t.Errorf("Artifacts() = %q, want %q", got, want)
	}
}

// A pool in proxy mode has only its subnet: what belongs to the site's
// DHCP server is refused, each by its key; a pool's mode defaults to
// full, and a misspelt mode is named.
func TestProxyPool(t *testing.T) {
	proxy := strings.Replace(baseYAML, `    - subnet: 10.0.3.0/24
      range: {start: 10.0.3.100, end: 10.0.3.199}
      router: 10.0.3.1
      lease_time: 2h
`, `    - subnet: 10.0.3.0/24
      mode: proxy
`, 1)
	cfg := mustParse(t, proxy)
	if p := cfg.Cluster.Pools[1]; !p.Proxy() || p.LeaseTime != 0 || p.Range.Size() != 0 {
		t.Fatalf("proxy pool %+v", p)
	}
	if p := cfg.Cluster.Pools[0]; p.Mode != PoolFull || p.Proxy() || p.LeaseTime != time.Hour {
		t.Fatalf("default pool %+v", p)
	}
	if cfg.Node.Ports.ProxyDHCP != 4011 {
		t.Fatalf("node.ports.proxy_dhcp = %d, want 4011", cfg.Node.Ports.ProxyDHCP)
	}
	_, err := Parse([]byte(strings.Replace(baseYAML, "      lease_time: 2h\n", "      lease_time: 2h\n      mode: proxy\n      dns: [10.0.3.1]\n      ntp: [10.0.3.1]\n      reservations: [{mac: \"52:54:00:00:00:01\", address: 10.0.3.5}]\n", 1)), "test.yaml")
	for _, want := range []string{
		"cluster.pools[1].range: a proxy pool hands out no addresses",
		"cluster.pools[1].router: a proxy pool hands out no addresses",
		"cluster.pools[1].dns: a proxy pool hands out no addresses",
		"cluster.pools[1].lease_time: a proxy pool hands out no addresses",
		"cluster.pools[1].ntp: a proxy pool hands out no addresses",
		"cluster.pools[1].reservations: a proxy pool hands out no addresses",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v, want %q", err, want)
		}
	}
	_, err = Parse([]byte(strings.Replace(baseYAML, "      lease_time: 2h\n", "      lease_time: 2h\n      mode: proxydhcp\n", 1)), "test.yaml")
	if want := `cluster.pools[1].mode: "proxydhcp" is neither "full" nor "proxy"`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want %q", err, want)
	}
	_, err = Parse([]byte(strings.Replace(baseYAML, "cluster:\n", "  ports: {proxy_dhcp: 69}\ncluster:\n", 1)), "test.yaml")
	if want := "node.ports.proxy_dhcp: 69 is already used by node.ports.tftp"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want %q", err, want)
	}
}

// TestShapeScalars checks the number and true/false cases of the shape
// checker on every kind the config could use: what yaml decodes passes
// (checked against yaml itself), what it refuses is named by key, and so
// is a fraction yaml would silently truncate into a whole number.
func TestShapeScalars(t *testing.T) {
	type scalars struct {
		Int   int     `yaml:"int"`
		Int8  int8    `yaml:"int8"`
		Uint  uint    `yaml:"uint"`
		Uint8 uint8   `yaml:"uint8"`
		Float float64 `yaml:"float"`
		Bool  bool    `yaml:"bool"`
		Opt   *bool   `yaml:"opt"`
		Big   int64   `yaml:"big"`
	}
	tests := []struct {
		yaml string
		want string // "" when yaml decodes it
	}{
		{"int: 12", ""},
		{"int: -12", ""},
		{"int: 0x1f", ""},
		{"int: 1_000", ""},
		{"int: 12x", `int: "12x" is not a whole number`},
		{"int: 1.5", `int: "1.5" is not a whole number`}, // yaml would make it 1
		{"int: 1e3", `int: "1e3" is not a whole number`},
		{"int: 99999999999999999999", `int: "99999999999999999999" is out of range`},
		{"int: true", `int: "true" is not a whole number`},
		{`int: "12"`, `int: "12" is in quotes, which makes it text; write it without them`},
		{`int: "twelve"`, `int: "twelve" is not a whole number`},
		{`int: "1.5"`, `int: "1.5" is not a whole number`},
		{`bool: 'true'`, `bool: "true" is in quotes`},
		{"int8: 127", ""},
		{"int8: 128", `int8: "128" is out of range`},
		{"uint: 7", ""},
		{"uint: -1", `uint: "-1" is negative; it must be 0 or more`},
		{"uint8: 256", `uint8: "256" is out of range`},
		{"float: 2.5", ""},
		{"float: 3", ""},
		{"float: fast", `float: "fast" is not a number`},
		{"bool: true", ""},
		{"bool: false", ""},
		{"bool: yes", ""}, // yaml 1.1 words, accepted by yaml when decoding into a bool
		{"bool: sometimes", `bool: "sometimes" is not true or false`},
		{"bool: 1", `bool: "1" is not true or false`},
		{"opt: false", ""},
		{"opt: maybe", `opt: "maybe" is not true or false`},
		{"big: 9223372036854775807", ""},
		{"big: 9223372036854775808", `big: "9223372036854775808" is out of range`},
		{"int: [1, 2]", `int: expected a single value, found a list`},
	}
	for _, tt := range tests {
		t.Run(tt.yaml, func(t *testing.T) {
			var root yaml.Node
			if err := yaml.Unmarshal([]byte(tt.yaml), &root); err != nil {
				t.Fatal(err)
			}
			var s shapeChecker
			s.walk(root.Content[0], reflect.TypeFor[scalars](), "")
			decodeErr := root.Content[0].Decode(new(scalars))
			switch {
			case tt.want == "" && len(s.errs) > 0:
				t.Errorf("shape errors %v, want none", s.errs)
			case tt.want == "" && decodeErr != nil:
				t.Errorf("yaml refuses %q (%v): the table is wrong", tt.yaml, decodeErr)
			case tt.want != "" && (len(s.errs) != 1 || !strings.Contains(s.errs[0].Error(), "line 1: "+tt.want)):
				t.Errorf("shape errors %v, want one containing %q", s.errs, "line 1: "+tt.want)
			}
		})
	}
}
