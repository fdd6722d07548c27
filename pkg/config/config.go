package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultProfile is the profile of machines beyond every configured
// profile's quantity; no configured profile may take the name.
const DefaultProfile = "default"

// SecretMask replaces the value of a secret template variable in Redacted.
const SecretMask = "<secret>"

// Defaults, applied to keys that are absent (or zero) in the file.
const (
	defaultDataDir              = "/var/lib/mayu"
	defaultFilesDir             = "/usr/share/mayu/files"
	defaultEtcdPrefix           = "/mayu/"
	defaultDialTimeout          = 5 * time.Second
	defaultRequestTimeout       = 5 * time.Second
	defaultClientURL            = "http://127.0.0.1:2379"
	defaultPeerURL              = "http://127.0.0.1:2380"
	defaultQuotaBytes           = 2 << 30 // 2 GiB
	defaultCompactionRetention  = time.Hour
	defaultLeaseTime            = time.Hour
	defaultInstallTimeout       = 30 * time.Minute
	defaultArtifactTransfers    = 2
	defaultArtifactMissingGrace = 5 * time.Minute
	defaultInstallDisk          = "/dev/sda"
	defaultBootFilesDir         = "/usr/share/mayu/boot"
	defaultElectionTTL          = 3 * time.Second
	defaultProbeInterval        = 100 * time.Millisecond
	defaultProbeTimeout         = 250 * time.Millisecond
	defaultSuspectAfter         = 3
	defaultAuditMaxEntries      = 10000
	defaultAuditMaxAge          = 90 * 24 * time.Hour
	defaultBootBIOS             = "undionly.kpxe"
	defaultBootEFI64            = "ipxe.efi"

	defaultNewClientsPerSecond = 20
	defaultNewClientsBurst     = 200
	defaultDeclineProbeTimeout = time.Second
	defaultDeclineProbes       = 16
	defaultDeclineQuarantine   = 10 * time.Minute
	// DefaultUnregisteredShare is cluster.dhcp.unregistered_share's
	// default, left out of the cluster hash.
	DefaultUnregisteredShare   = 50
	defaultRegistrationsPerSec = 10
	defaultRegistrationBurst   = 100
	defaultRegistrationExpiry  = time.Hour
)

// Default limits (node.limits): far above what a rack of machines booting
// at once needs; see types.go.
var (
	defaultHTTPLimits = HTTPLimits{
		ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute, StallTimeout: 30 * time.Second,
		MaxHeaderBytes: 16 << 10, MaxConnections: 4096, MaxConnectionsPerAddress: 64,
	}
	defaultAdminLimits = HTTPLimits{
		ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute, StallTimeout: 30 * time.Second,
		MaxHeaderBytes: 16 << 10, MaxConnections: 256, MaxConnectionsPerAddress: 64,
	}
	defaultTFTPLimits = TFTPLimits{
		MaxTransfers: 256, MaxPending: 256, MaxPerAddress: 64,
		Timeout: time.Second, Retransmissions: 1, FirstBlockTimeout: 3 * time.Second,
	}
)

// defaultPorts are in place before the file is decoded rather than filled in
// afterwards, because an explicit 0 disables DHCP or TFTP: only keys that
// are absent keep these values.
var defaultPorts = Ports{DHCP: 67, TFTP: 69, HTTP: 4081, Admin: 4080, Metrics: 4082, ProxyDHCP: 4011}

// Load reads, decodes, completes with defaults and validates the config
// file at path. Every error names the file; a file with several problems
// reports all of them, one per line.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data, path)
}

// Parse is Load without the file system: data is the file's content and
// path is only used to name the file in errors and in Config.Path.
func Parse(data []byte, path string) (*Config, error) {
	root, err := parseDocument(data)
	if err != nil {
		return nil, inFile(path, err)
	}
	if errs := checkShape(root); len(errs) > 0 {
		return nil, inFile(path, errors.Join(errs...))
	}

	cfg := &Config{Path: path}
	cfg.Node.Ports = defaultPorts
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(cfg); err != nil {
		return nil, inFile(path, err)
	}
	cfg.applyDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, inFile(path, err)
	}
	return cfg, nil
}

// parseDocument parses data into a YAML node tree, refusing an empty file
// and a file of several documents (yaml would silently read only the first,
// and the operator's edits to the second would be ignored).
func parseDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the file is empty")
		}
		return nil, err
	}
	if len(root.Content) == 0 || (root.Content[0].Kind == yaml.ScalarNode && root.Content[0].ShortTag() == "!!null") {
		return nil, errors.New("the file is empty")
	}
	var next yaml.Node
	if err := dec.Decode(&next); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("line %d: a second YAML document (after ---); the config is one document", next.Line)
	}
	return root.Content[0], nil
}

// inFile prefixes each of err's problems with the file name, so that every
// line of a multi-problem error can be read (and grepped) on its own.
func inFile(path string, err error) error {
	prefix := "config " + path
	if path == "" {
		prefix = "config"
	}
	var lines []string
	var typeErr *yaml.TypeError
	switch {
	case errors.As(err, &typeErr):
		lines = typeErr.Errors
	default:
		if joined, ok := err.(interface{ Unwrap() []error }); ok {
			var errs []error
			for _, e := range joined.Unwrap() {
				errs = append(errs, fmt.Errorf("%s: %w", prefix, e))
			}
			return errors.Join(errs...)
		}
		return fmt.Errorf("%s: %w", prefix, err)
	}
	errs := make([]error, len(lines))
	for i, l := range lines {
		errs[i] = fmt.Errorf("%s: %s", prefix, l)
	}
	return errors.Join(errs...)
}

// applyDefaults fills in what the file left out. Ports are not here: see
// defaultPorts.
func (c *Config) applyDefaults() {
	n := &c.Node
	if n.Name == "" {
		// An unreadable host name leaves Name empty, which Validate reports.
		n.Name, _ = os.Hostname()
	}
	if !n.ListenAddress.IsValid() {
		n.ListenAddress = netip.IPv4Unspecified()
	}
	if !n.AdminListenAddress.IsValid() {
		n.AdminListenAddress = n.ListenAddress
	}
	if !n.MetricsListenAddress.IsValid() {
		n.MetricsListenAddress = n.ListenAddress
	}
	setDefault(&n.DataDir, defaultDataDir)
	setDefault(&n.LogLevel, "info")
	setDefault(&n.FilesDir, defaultFilesDir)
	setDefault(&n.BootFilesDir, defaultBootFilesDir)
	setDefault(&n.ElectionTTL, defaultElectionTTL)
	if n.Deposition.Enabled == nil {
		on := true
		n.Deposition.Enabled = &on
	}
	setDefault(&n.Deposition.ProbeInterval, defaultProbeInterval)
	setDefault(&n.Deposition.ProbeTimeout, defaultProbeTimeout)
	setDefault(&n.Deposition.SuspectAfter, defaultSuspectAfter)
	setDefault(&n.Admin.Audit.MaxEntries, defaultAuditMaxEntries)
	setDefault(&n.Admin.Audit.MaxAge, defaultAuditMaxAge)

	e := &n.Etcd
	e.Prefix = normalisePrefix(e.Prefix)
	setDefault(&e.DialTimeout, defaultDialTimeout)
	setDefault(&e.RequestTimeout, defaultRequestTimeout)
	setDefault(&e.Embedded.ClientURL, defaultClientURL)
	setDefault(&e.Embedded.PeerURL, defaultPeerURL)
	setDefault(&e.Embedded.QuotaBytes, defaultQuotaBytes)
	setDefault(&e.Embedded.CompactionRetention, defaultCompactionRetention)

	setDefault(&n.Artifacts.CacheDir, filepath.Join(n.DataDir, "artifacts"))
	setDefault(&n.Artifacts.Transfers, defaultArtifactTransfers)
	setDefault(&n.Artifacts.MissingGrace, defaultArtifactMissingGrace)

	n.Limits.HTTP.applyDefaults(defaultHTTPLimits)
	n.Limits.Admin.applyDefaults(defaultAdminLimits)
	n.Limits.TFTP.applyDefaults(defaultTFTPLimits)

	cl := &c.Cluster
	for i := range cl.Pools {
		pool := &cl.Pools[i]
		setDefault(&pool.Mode, PoolFull)
		// A proxy pool leases nothing: a lease_time there is a mistake
		// that Validate names, not something to fill in.
		if !pool.Proxy() {
			setDefault(&pool.LeaseTime, defaultLeaseTime)
		}
		for j, r := range pool.Reservations {
			// One spelling everywhere (hash, -check, lookups): the
			// one DHCP clients' MACs are compared in.
			if mac, err := ParseMAC(r.MAC); err == nil {
				pool.Reservations[j].MAC = mac
			}
		}
	}
	setDefault(&cl.Install.Disk, defaultInstallDisk)
	setDefault(&cl.Boot.BIOS, defaultBootBIOS)
	setDefault(&cl.Boot.EFI64, defaultBootEFI64)
	setDefault(&cl.Install.Timeout, defaultInstallTimeout)
	setDefault(&cl.Registration, RegistrationOpen)
	setDefault(&cl.Templates.FirstStageFormat, FormatText)
	setDefault(&cl.Templates.FinalConfigFormat, FormatText)
	d := &cl.DHCP
	setDefault(&d.NewClientsPerSecond, defaultNewClientsPerSecond)
	setDefault(&d.NewClientsBurst, defaultNewClientsBurst)
	setDefault(&d.DeclineProbeTimeout, defaultDeclineProbeTimeout)
	setDefault(&d.DeclineProbes, defaultDeclineProbes)
	setDefault(&d.DeclineQuarantine, defaultDeclineQuarantine)
	setDefault(&d.UnregisteredShare, DefaultUnregisteredShare)
	sr := &cl.SelfRegistration
	setDefault(&sr.PerSecond, defaultRegistrationsPerSec)
	setDefault(&sr.Burst, defaultRegistrationBurst)
	setDefault(&sr.ExpireAfter, defaultRegistrationExpiry)
	setDefault(&sr.MaxUnfinished, DefaultMaxUnfinished(cl.Static.Range.Size()))
}

func (l *HTTPLimits) applyDefaults(d HTTPLimits) {
	setDefault(&l.ReadHeaderTimeout, d.ReadHeaderTimeout)
	setDefault(&l.IdleTimeout, d.IdleTimeout)
	setDefault(&l.StallTimeout, d.StallTimeout)
	setDefault(&l.MaxHeaderBytes, d.MaxHeaderBytes)
	setDefault(&l.MaxConnections, d.MaxConnections)
	setDefault(&l.MaxConnectionsPerAddress, d.MaxConnectionsPerAddress)
}

func (l *TFTPLimits) applyDefaults(d TFTPLimits) {
	setDefault(&l.MaxTransfers, d.MaxTransfers)
	setDefault(&l.MaxPending, d.MaxPending)
	setDefault(&l.MaxPerAddress, d.MaxPerAddress)
	setDefault(&l.Timeout, d.Timeout)
	setDefault(&l.Retransmissions, d.Retransmissions)
	setDefault(&l.FirstBlockTimeout, d.FirstBlockTimeout)
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}

// normalisePrefix makes an etcd key prefix start and end with "/", so that
// "mayu", "/mayu" and "/mayu/" name the same keys and joining a prefix with a
// key never needs to think about slashes.
func normalisePrefix(p string) string {
	if p == "" {
		return defaultEtcdPrefix
	}
	if !strings.HasPrefix(p, "/") {
		p = "/" + p
	}
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}

// ClusterHash identifies the cluster-wide part of the configuration: the
// hex SHA-256 of the JSON encoding of Cluster, after defaults. Replicas
// compare it to notice that they were deployed different files.
//
// Two files that are equal in their cluster part give equal hashes,
// whatever their node part, comments, key order or how a value is spelt
// (an absent lease_time and "lease_time: 1h" are the same; so are an
// absent list and "[]"). JSON is canonical enough for this: struct fields
// keep their declared order, map keys are sorted, and addresses and subnets
// encode as their text form. The order of list items does count (profiles
// are handed out in config order). Adding a field to Cluster changes every
// hash, which is fine: replicas running different mayu versions should
// notice.
//
// The hash covers secret template variables too, so a changed secret is
// noticed like any other change; a SHA-256 over the whole cluster part
// reveals nothing practical about a secret of any real entropy.
func (c *Config) ClusterHash() string {
	cl := c.Cluster.clone()
	for i := range cl.Pools {
		if cl.Pools[i].Mode == PoolFull {
			// The default, left out: a configuration written before
			// pools had modes keeps its hash, so replicas upgraded one
			// by one still agree with those not yet upgraded.
			cl.Pools[i].Mode = ""
		}
	}
	if cl.DHCP.UnregisteredShare == DefaultUnregisteredShare {
		// Likewise for a key added since (omitempty in its tag).
		cl.DHCP.UnregisteredShare = 0
	}
	b, err := json.Marshal(cl)
	if err != nil {
		// Cluster holds only strings, numbers, addresses and durations.
		panic(fmt.Sprintf("config: encoding the cluster part: %v", err))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// Redacted returns a copy of the cluster part that is safe to show and log:
// the value of every variable named in SecretTemplateVars is SecretMask.
// The copy shares nothing with c.
func (c *Config) Redacted() Cluster {
	r := c.Cluster.clone()
	for _, name := range r.SecretTemplateVars {
		if _, ok := r.TemplateVars[name]; ok {
			r.TemplateVars[name] = SecretMask
		}
	}
	return r
}

// clone deep-copies c. Empty lists and maps become nil, so that "[]" and
// an absent key look the same to ClusterHash.
func (c Cluster) clone() Cluster {
	c.Pools = cloneSlice(c.Pools)
	for i := range c.Pools {
		pl := &c.Pools[i]
		pl.DNS = cloneSlice(pl.DNS)
		pl.DomainSearch = cloneSlice(pl.DomainSearch)
		pl.NTP = cloneSlice(pl.NTP)
		pl.Options = cloneSlice(pl.Options)
		for j := range pl.Options {
			pl.Options[j].Value = cloneSlice(pl.Options[j].Value)
		}
		pl.Reservations = cloneSlice(pl.Reservations)
	}
	c.Static.DNS = cloneSlice(c.Static.DNS)
	c.Profiles = cloneSlice(c.Profiles)
	for i := range c.Profiles {
		c.Profiles[i].Tags = cloneMap(c.Profiles[i].Tags)
	}
	c.TemplateVars = cloneMap(c.TemplateVars)
	c.SecretTemplateVars = cloneSlice(c.SecretTemplateVars)
	c.DHCP.Relays = cloneSlice(c.DHCP.Relays)
	return c
}

func cloneSlice[S ~[]E, E any](s S) S {
	if len(s) == 0 {
		return nil
	}
	return slices.Clone(s)
}

func cloneMap[M ~map[K]V, K comparable, V any](m M) M {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}

// PoolFor returns the pool whose subnet contains a: the pool a DHCP request
// relayed from giaddr a, or received on an interface with address a, is
// served from.
func (c *Config) PoolFor(a netip.Addr) (Pool, bool) {
	a = a.Unmap()
	for _, p := range c.Cluster.Pools {
		if p.Subnet.Contains(a) {
			return p, true
		}
	}
	return Pool{}, false
}

// Contains reports whether a is one of the addresses the pool leases.
func (p Pool) Contains(a netip.Addr) bool {
	return p.Range.Contains(a)
}

// Contains reports whether a lies in r, bounds included. An IPv4-mapped
// IPv6 address counts as its IPv4 address.
func (r Range) Contains(a netip.Addr) bool {
	a = a.Unmap()
	return r.Start.Compare(a) <= 0 && a.Compare(r.End) <= 0
}

// Size is the number of addresses in r, bounds included; 0 for a range that
// is not IPv4 or ends before it starts.
func (r Range) Size() int {
	if !r.Start.Is4() || !r.End.Is4() || r.End.Less(r.Start) {
		return 0
	}
	return int(uint64(addrToUint32(r.End)-addrToUint32(r.Start)) + 1)
}

// String is "start-end", as messages show a range.
func (r Range) String() string {
	return r.Start.String() + "-" + r.End.String()
}

func (r Range) overlaps(o Range) bool {
	return !r.End.Less(o.Start) && !o.End.Less(r.Start)
}

// PrefixLen is the length of the static subnet's prefix (24 for a /24).
func (s Static) PrefixLen() int {
	return s.Subnet.Bits()
}

// Netmask is the static subnet's mask in dotted form (255.255.255.0 for a
// /24), as installed systems' network configs often want it; the zero Addr
// if the subnet is not IPv4.
func (s Static) Netmask() netip.Addr {
	bits := s.Subnet.Bits()
	if !s.Subnet.Addr().Is4() || bits < 0 {
		return netip.Addr{}
	}
	return uint32ToAddr(^uint32(0) << (32 - bits)) // a /0 shifts every bit out: 0.0.0.0
}

func addrToUint32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func uint32ToAddr(v uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	return netip.AddrFrom4(b)
}

// IsHostAddr reports whether a host in subnet can have the address a:
// inside it, and neither its network nor its broadcast address (which /31
// and /32 do not have, RFC 3021).
func IsHostAddr(a netip.Addr, subnet netip.Prefix) bool {
	if !a.Is4() || !subnet.Contains(a) {
		return false
	}
	return subnet.Bits() > 30 || (a != subnet.Masked().Addr() && a != lastAddr(subnet))
}

// lastAddr is the highest address of IPv4 prefix p: its broadcast address.
func lastAddr(p netip.Prefix) netip.Addr {
	host := uint32(uint64(1)<<(32-p.Bits()) - 1)
	return uint32ToAddr(addrToUint32(p.Masked().Addr()) | host)
}

// Summary is the limits in force, one line per listener, as `mayu -check`
// prints them (and the benchmarks report what they ran with).
func (l Limits) Summary() []string {
	http := func(key string, h HTTPLimits) string {
		return fmt.Sprintf("%s: read_header_timeout=%s idle_timeout=%s stall_timeout=%s max_header_bytes=%d max_connections=%d max_connections_per_address=%d",
			key, shortDuration(h.ReadHeaderTimeout), shortDuration(h.IdleTimeout), shortDuration(h.StallTimeout),
			h.MaxHeaderBytes, h.MaxConnections, h.MaxConnectionsPerAddress)
	}
	t := l.TFTP
	return []string{
		http("node.limits.http", l.HTTP),
		http("node.limits.admin", l.Admin),
		fmt.Sprintf("node.limits.tftp: max_transfers=%d max_pending=%d max_per_address=%d timeout=%s retransmissions=%d first_block_timeout=%s",
			t.MaxTransfers, t.MaxPending, t.MaxPerAddress, shortDuration(t.Timeout), t.Retransmissions, shortDuration(t.FirstBlockTimeout)),
	}
}

// DefaultMaxUnfinished is cluster.self_registration.max_unfinished's
// default for a static range of size addresses: half of it, so that random
// serials leave the other half, but never below 64 (a rack booting at once
// must not meet it) nor above the range.
func DefaultMaxUnfinished(size int) int {
	return max(min(size, max(size/2, 64)), 1)
}
