package config

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Validate reports every problem in c at once (joined with errors.Join, one
// per line), each starting with the key path as written in the YAML, e.g.
// "cluster.pools[1].range.end: 10.0.4.10 is not inside subnet 10.0.3.0/24".
// It checks syntax and consistency only: whether the files named under
// install and templates exist is for the code that opens them.
func (c *Config) Validate() error {
	var p problems
	c.Node.validate(&p)
	c.Cluster.validate(&p)
	for i, pool := range c.Cluster.Pools {
		if a := c.Node.AdvertiseAddress; a.IsValid() && pool.Range.Contains(a) {
			p.addf("node.advertise_address", "%s is inside cluster.pools[%d].range %s: it could be leased to a machine", a, i, pool.Range)
		}
	}
	for i, pool := range c.Cluster.Pools {
		for j, r := range pool.Reservations {
			if a := c.Node.AdvertiseAddress; a.IsValid() && r.Address == a {
				p.addf(fmt.Sprintf("cluster.pools[%d].reservations[%d].address", i, j), "%s is node.advertise_address, where machines reach mayu", a)
			}
		}
	}
	if a := c.Node.AdvertiseAddress; a.IsValid() && c.Cluster.Static.Range.Contains(a) {
		p.addf("node.advertise_address", "%s is inside cluster.static.range %s: it could become a machine's address", a, c.Cluster.Static.Range)
	}
	return errors.Join(p...)
}

type problems []error

func (p *problems) addf(key, format string, args ...any) {
	*p = append(*p, errors.New(key+": "+fmt.Sprintf(format, args...)))
}

func (n *Node) validate(p *problems) {
	if n.Name == "" {
		p.addf("node.name", "required (the host name could not be read, so set it)")
	}
	switch a := n.AdvertiseAddress; {
	case !a.IsValid():
		p.addf("node.advertise_address", "required (the address machines use to reach mayu)")
	case !a.Is4():
		p.addf("node.advertise_address", "%s is not an IPv4 address (PXE firmware speaks IPv4)", a)
	case a.IsUnspecified():
		p.addf("node.advertise_address", "%s cannot be reached; give the VRRP virtual address, or this replica's own", a)
	}
	switch n.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		p.addf("node.log_level", "%q: use debug, info, warn or error", n.LogLevel)
	}
	if n.ElectionTTL < time.Second || n.ElectionTTL > time.Minute {
		p.addf("node.election_ttl", "%s is out of range (1s-1m; a few seconds is right: it bounds the DHCP failover)", n.ElectionTTL)
	}
	n.Deposition.validate(p, n.ElectionTTL)

	n.Admin.validate(p, n.AdminTokenFile)
	n.Ports.validate(p)
	n.Etcd.validate(p)
	n.Limits.HTTP.validate(p, "node.limits.http")
	n.Limits.Admin.validate(p, "node.limits.admin")
	n.Limits.TFTP.validate(p)
	n.Artifacts.validate(p)
}

func (d Deposition) validate(p *problems, ttl time.Duration) {
	const key = "node.deposition"
	checkBetween(p, key+".probe_interval", d.ProbeInterval, 10*time.Millisecond, 10*time.Second)
	checkBetween(p, key+".probe_timeout", d.ProbeTimeout, 10*time.Millisecond, 10*time.Second)
	checkCount(p, key+".suspect_after", d.SuspectAfter, 1, 100)
	// Detection slower than the TTL is pointless: the session expires first.
	// SuspectAfter timed-out probes, one every max(interval, timeout).
	if d.On() && ttl > 0 && d.SuspectAfter > 0 {
		step := max(d.ProbeInterval, d.ProbeTimeout)
		if detect := time.Duration(d.SuspectAfter-1)*step + d.ProbeTimeout; detect >= ttl {
			p.addf(key+".suspect_after", "%d probes of %s every %s take %s, not less than node.election_ttl (%s): lower it, the probe timeout or the interval",
				d.SuspectAfter, d.ProbeTimeout, step, detect, ttl)
		}
	}
}

func (a Artifacts) validate(p *problems) {
	const key = "node.artifacts"
	if !filepath.IsAbs(a.CacheDir) {
		p.addf(key+".cache_dir", "%q is not an absolute path", a.CacheDir)
	}
	if a.QuotaBytes < 0 {
		p.addf(key+".quota_bytes", "%d is negative (0: no quota but the disk's free space)", a.QuotaBytes)
	}
	checkCount(p, key+".transfers", a.Transfers, 1, 64)
	if a.MaxBytesPerSecond != 0 && a.MaxBytesPerSecond < 64<<10 {
		p.addf(key+".max_bytes_per_second", "%d is below 65536 (0: no cap)", a.MaxBytesPerSecond)
	}
	checkBetween(p, key+".missing_grace", a.MissingGrace, 10*time.Second, 24*time.Hour)
	switch pa := a.PeerAddress; {
	case !pa.IsValid():
	case pa.IsUnspecified() || pa.IsMulticast():
		p.addf(key+".peer_address", "%s cannot be reached by the other replicas; give this replica's own address", pa)
	}
}

func (l HTTPLimits) validate(p *problems, key string) {
	checkBetween(p, key+".read_header_timeout", l.ReadHeaderTimeout, time.Second, 10*time.Minute)
	checkBetween(p, key+".idle_timeout", l.IdleTimeout, time.Second, time.Hour)
	checkBetween(p, key+".stall_timeout", l.StallTimeout, time.Second, time.Hour)
	checkCount(p, key+".max_header_bytes", l.MaxHeaderBytes, 1024, 1<<20)
	checkCount(p, key+".max_connections", l.MaxConnections, 1, 1<<20)
	checkCount(p, key+".max_connections_per_address", l.MaxConnectionsPerAddress, 1, 1<<20)
	if l.MaxConnectionsPerAddress > l.MaxConnections && l.MaxConnections > 0 {
		p.addf(key+".max_connections_per_address", "%d is more than %s.max_connections (%d)", l.MaxConnectionsPerAddress, key, l.MaxConnections)
	}
}

func (l TFTPLimits) validate(p *problems) {
	const key = "node.limits.tftp"
	checkCount(p, key+".max_transfers", l.MaxTransfers, 1, 1<<16)
	checkCount(p, key+".max_pending", l.MaxPending, 1, 1<<16)
	checkCount(p, key+".max_per_address", l.MaxPerAddress, 1, 1<<16)
	checkBetween(p, key+".timeout", l.Timeout, 100*time.Millisecond, time.Minute)
	// The library counts attempts after the first; 0 would mean its own
	// default of 5.
	checkCount(p, key+".retransmissions", l.Retransmissions, 1, 10)
	checkBetween(p, key+".first_block_timeout", l.FirstBlockTimeout, 100*time.Millisecond, 5*time.Minute)
	if l.Timeout > 0 && l.FirstBlockTimeout > 0 && l.FirstBlockTimeout < l.Timeout {
		p.addf(key+".first_block_timeout", "%s is shorter than %s.timeout (%s): no first block could be retransmitted in time", l.FirstBlockTimeout, key, l.Timeout)
	}
}

// checkBetween: d in [least, most]. A negative value is reported here too
// (zero took its default).
func checkBetween(p *problems, key string, d, least, most time.Duration) {
	if d < least || d > most {
		p.addf(key, "%s is out of range (%s-%s)", d, shortDuration(least), shortDuration(most))
	}
}

func checkCount(p *problems, key string, n, least, most int) {
	if n < least || n > most {
		p.addf(key, "%d is out of range (%d-%d)", n, least, most)
	}
}

// Bounds of the audit retention: at most 4 KiB an entry, the largest
// count keeps the trail under 400 MiB, a fifth of the default etcd quota.
const (
	MaxAuditEntries = 100000
	minAuditEntries = 100
	minAuditAge     = time.Hour
)

func (a *Admin) validate(p *problems, legacyTokenFile string) {
	switch {
	case a.TokensFile == "" && legacyTokenFile == "":
		p.addf("node.admin.tokens_file", "required (the file of the admin API's named tokens and their roles)")
	case a.TokensFile != "" && legacyTokenFile != "":
		p.addf("node.admin_token_file", "is replaced by node.admin.tokens_file: set only node.admin.tokens_file (put the old token there as a named token with role admin)")
	}
	switch {
	case a.CertFile != "" && a.KeyFile == "":
		p.addf("node.admin.key_file", "required with node.admin.cert_file (the certificate's private key)")
	case a.CertFile == "" && a.KeyFile != "":
		p.addf("node.admin.cert_file", "required with node.admin.key_file (the admin API's TLS certificate)")
	}
	if a.ClientCAFile != "" && a.CertFile == "" {
		p.addf("node.admin.client_ca_file", "needs node.admin.cert_file and node.admin.key_file: client certificates are only asked for over TLS")
	}
	if a.Audit.MaxEntries < minAuditEntries || a.Audit.MaxEntries > MaxAuditEntries {
		p.addf("node.admin.audit.max_entries", "%d is out of range (%d-%d; each entry takes up to 4 KiB of etcd's space quota)", a.Audit.MaxEntries, minAuditEntries, MaxAuditEntries)
	}
	if a.Audit.MaxAge < minAuditAge {
		p.addf("node.admin.audit.max_age", "%s is too short (at least %s)", a.Audit.MaxAge, minAuditAge)
	}
}

type port struct {
	key   string
	value int
}

func (ps Ports) validate(p *problems) {
	// 0 disables the UDP listeners; the TCP ones are always on.
	udp := []port{{"node.ports.dhcp", ps.DHCP}, {"node.ports.tftp", ps.TFTP}, {"node.ports.proxy_dhcp", ps.ProxyDHCP}}
	tcp := []port{{"node.ports.http", ps.HTTP}, {"node.ports.admin", ps.Admin}, {"node.ports.metrics", ps.Metrics}}
	for _, u := range udp {
		if u.value < 0 || u.value > 65535 {
			p.addf(u.key, "%d is not a port (0 disables it, else 1-65535)", u.value)
		}
	}
	for _, t := range tcp {
		if t.value < 1 || t.value > 65535 {
			p.addf(t.key, "%d is not a port (1-65535)", t.value)
		}
	}
	// UDP and TCP ports live in separate spaces: only clash within each.
	distinctPorts(p, udp)
	distinctPorts(p, tcp)
}

func distinctPorts(p *problems, ports []port) {
	for i, a := range ports {
		for _, b := range ports[:i] {
			if a.value > 0 && a.value == b.value {
				p.addf(a.key, "%d is already used by %s", a.value, b.key)
			}
		}
	}
}

func (e *Etcd) validate(p *problems) {
	for i, ep := range e.Endpoints {
		checkURL(p, fmt.Sprintf("node.etcd.endpoints[%d]", i), ep)
	}
	if !strings.HasPrefix(e.Prefix, "/") || !strings.HasSuffix(e.Prefix, "/") {
		p.addf("node.etcd.prefix", "%q must start and end with \"/\"", e.Prefix)
	}
	checkPositive(p, "node.etcd.dial_timeout", e.DialTimeout)
	checkPositive(p, "node.etcd.request_timeout", e.RequestTimeout)
	checkURL(p, "node.etcd.embedded.client_url", e.Embedded.ClientURL)
	checkURL(p, "node.etcd.embedded.peer_url", e.Embedded.PeerURL)
	if e.Embedded.QuotaBytes <= 0 {
		p.addf("node.etcd.embedded.quota_bytes", "must be positive (got %d)", e.Embedded.QuotaBytes)
	}
	checkPositive(p, "node.etcd.embedded.compaction_retention", e.Embedded.CompactionRetention)
	e.validateTLS(p)
}

// validateTLS checks that the TLS and authentication keys fit together
// and fit the URLs they serve. Whether the files can be read is checked by
// package etcd, which reads them (at start and by mayu -check).
func (e *Etcd) validateTLS(p *problems) {
	pair := func(a, aKey, b, bKey, what string) {
		if a != "" && b == "" {
			p.addf(bKey, "required with %s (%s)", aKey, what)
		}
	}
	pair(e.CertFile, "node.etcd.cert_file", e.KeyFile, "node.etcd.key_file", "the private key of mayu's client certificate")
	pair(e.KeyFile, "node.etcd.key_file", e.CertFile, "node.etcd.cert_file", "mayu's client certificate")
	pair(e.Username, "node.etcd.username", e.PasswordFile, "node.etcd.password_file", "a file holding the user's password")
	pair(e.PasswordFile, "node.etcd.password_file", e.Username, "node.etcd.username", "the etcd user the password is for")

	// The etcd client dials every endpoint with the first one's scheme.
	for i, ep := range e.Endpoints[min(1, len(e.Endpoints)):] {
		if isHTTPS(ep) != isHTTPS(e.Endpoints[0]) {
			p.addf(fmt.Sprintf("node.etcd.endpoints[%d]", i+1), "%q and endpoints[0] %q differ in scheme; use https:// (or http://) for all", ep, e.Endpoints[0])
		}
	}
	urls, urlsKey := e.Endpoints, "node.etcd.endpoints"
	if len(urls) == 0 {
		urls, urlsKey = []string{e.Embedded.ClientURL}, "node.etcd.embedded.client_url"
	}
	if e.TLS() {
		if host := urlHost(urls[0]); e.CAFile == "" && host != "" && privateHost(host) {
			p.addf("node.etcd.ca_file", "required for %s %s: no public CA certifies %s, so give the CA that signed etcd's server certificate", urlsKey, urls[0], host)
		}
	} else {
		for _, k := range []struct{ key, v string }{
			{"node.etcd.ca_file", e.CAFile}, {"node.etcd.cert_file", e.CertFile}, {"node.etcd.key_file", e.KeyFile},
		} {
			if k.v != "" && urls[0] != "" {
				p.addf(k.key, "set, but %s %s is http://: use https:// to reach etcd over TLS", urlsKey, urls[0])
			}
		}
	}

	em := e.Embedded
	pair(em.CertFile, "node.etcd.embedded.cert_file", em.KeyFile, "node.etcd.embedded.key_file", "the private key of the embedded etcd's certificate")
	pair(em.KeyFile, "node.etcd.embedded.key_file", em.CertFile, "node.etcd.embedded.cert_file", "the embedded etcd's server certificate")
	if len(e.Endpoints) > 0 {
		return // the embedded etcd does not run
	}
	for _, u := range []struct{ key, url string }{
		{"node.etcd.embedded.client_url", em.ClientURL}, {"node.etcd.embedded.peer_url", em.PeerURL},
	} {
		if isHTTPS(u.url) && em.CertFile == "" {
			p.addf("node.etcd.embedded.cert_file", "required for %s %s (the certificate the embedded etcd serves)", u.key, u.url)
		}
	}
	if em.ClientURL != "" && !isHTTPS(em.ClientURL) {
		if em.ClientCAFile != "" {
			p.addf("node.etcd.embedded.client_ca_file", "set, but node.etcd.embedded.client_url %s is http://: use https://", em.ClientURL)
		}
		// The certificate may serve an https:// peer URL alone.
		if em.CertFile != "" && !isHTTPS(em.PeerURL) {
			p.addf("node.etcd.embedded.cert_file", "set, but node.etcd.embedded.client_url %s is http://: use https://", em.ClientURL)
		}
	}
	if em.ClientCAFile != "" && isHTTPS(em.ClientURL) && e.CertFile == "" {
		p.addf("node.etcd.cert_file", "required: node.etcd.embedded.client_ca_file makes the embedded etcd ask for a client certificate, and mayu is its client too")
	}
}

func isHTTPS(u string) bool {
	return strings.HasPrefix(strings.ToLower(u), "https://")
}

func urlHost(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return ""
	}
	return u.Hostname()
}

// privateHost reports whether host is one no public CA issues
// certificates for, so the system's CA pool cannot verify it: an IP
// address, localhost, or a name without a dot.
func privateHost(host string) bool {
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	return !strings.Contains(host, ".") || strings.HasSuffix(host, ".localhost") || strings.HasSuffix(host, ".local")
}

func checkURL(p *problems, key, s string) {
	if s == "" {
		p.addf(key, "required")
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		p.addf(key, "%q is not an http:// or https:// URL with a host, e.g. http://10.99.0.2:2379", s)
	}
}

func checkPositive(p *problems, key string, d time.Duration) {
	if d <= 0 {
		p.addf(key, "must be positive (got %s)", d)
	}
}

func checkAtLeast(p *problems, key string, d, least time.Duration) {
	if d < least {
		p.addf(key, "%s is too short (at least %s)", d, shortDuration(least))
	}
}

// shortDuration prints 1m rather than time.Duration's 1m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

func (c *Cluster) validate(p *problems) {
	if len(c.Pools) == 0 {
		p.addf("cluster.pools", "at least one pool is required (the subnet machines PXE-boot in)")
	}
	poolOK := make([]bool, len(c.Pools))
	for i, pool := range c.Pools {
		poolOK[i] = pool.validate(p, fmt.Sprintf("cluster.pools[%d]", i), c.Static.Range)
	}
	// A request is matched to its pool by subnet, so subnets must not
	// overlap: an address would belong to two pools.
	for i, a := range c.Pools {
		for j, b := range c.Pools[:i] {
			if a.Subnet.IsValid() && b.Subnet.IsValid() && a.Subnet.Overlaps(b.Subnet) {
				p.addf(fmt.Sprintf("cluster.pools[%d].subnet", i), "%s overlaps cluster.pools[%d].subnet %s", a.Subnet, j, b.Subnet)
			}
		}
	}

	if c.Static.validate(p) {
		// A static address inside a pool range could be leased to a booting
		// machine while an installed one uses it.
		for i, pool := range c.Pools {
			if poolOK[i] && !pool.Proxy() && c.Static.Range.overlaps(pool.Range) {
				p.addf("cluster.static.range", "%s overlaps cluster.pools[%d].range %s", c.Static.Range, i, pool.Range)
			}
		}
	}

	c.validateProfiles(p)
	c.Install.validate(p)
	checkFilePath(p, "cluster.templates.first_stage", c.Templates.FirstStage)
	checkFilePath(p, "cluster.templates.final_config", c.Templates.FinalConfig)
	for _, f := range []struct{ key, v string }{
		{"cluster.templates.first_stage_format", c.Templates.FirstStageFormat},
		{"cluster.templates.final_config_format", c.Templates.FinalConfigFormat},
	} {
		if f.v != FormatText && f.v != FormatIgnition {
			p.addf(f.key, "%q is neither %q nor %q", f.v, FormatText, FormatIgnition)
		}
	}
	for _, b := range []struct{ key, name string }{
		{"cluster.boot.bios", c.Boot.BIOS}, {"cluster.boot.efi64", c.Boot.EFI64},
		{"cluster.boot.efi32", c.Boot.EFI32}, {"cluster.boot.arm64", c.Boot.ARM64},
	} {
		// Empty is allowed: that firmware then gets no boot file. A name is
		// a plain file in node.boot_files_dir, as TFTP clients send it.
		if b.name != "" && (strings.ContainsAny(b.name, "/\\") || b.name == "." || b.name == "..") {
			p.addf(b.key, "%q must be a plain file name in node.boot_files_dir", b.name)
		}
	}

	if c.Registration != RegistrationOpen && c.Registration != RegistrationPreregistered {
		p.addf("cluster.registration", "%q is neither %q nor %q", c.Registration, RegistrationOpen, RegistrationPreregistered)
	}
	c.DHCP.validate(p, c.Pools)
	c.SelfRegistration.validate(p)
	for i, name := range c.SecretTemplateVars {
		if _, ok := c.TemplateVars[name]; !ok {
			p.addf(fmt.Sprintf("cluster.secret_template_vars[%d]", i), "%q is not a key of cluster.template_vars", name)
		}
	}
}

// validate reports whether the pool's subnet and range are usable, so that
// checks across pools can skip one that is not.
func (pool Pool) validate(p *problems, key string, static Range) bool {
	subnetOK := checkSubnet(p, key+".subnet", pool.Subnet)
	switch pool.Mode {
	case PoolFull:
	case PoolProxy:
		return pool.validateProxy(p, key) && subnetOK
	default:
		p.addf(key+".mode", "%q is neither %q nor %q", pool.Mode, PoolFull, PoolProxy)
	}
	rangeOK := checkRange(p, key+".range", pool.Range, pool.Subnet, subnetOK)
	if pool.Router.IsValid() && checkHostAddr(p, key+".router", pool.Router, pool.Subnet, subnetOK) &&
		rangeOK && pool.Range.Contains(pool.Router) {
		p.addf(key+".router", "%s is inside the range %s, so it could be leased to a machine", pool.Router, pool.Range)
	}
	checkDNS(p, key+".dns", pool.DNS)
	checkAtLeast(p, key+".lease_time", pool.LeaseTime, time.Minute)
	pool.validateOptions(p, key)
	pool.validateReservations(p, key, subnetOK, rangeOK, static)
	return subnetOK && rangeOK
}

// validateProxy refuses in a proxy pool what belongs to the site's DHCP
// server, which hands out the addresses and their options there: mayu
// would never send them, and a reader would think it does.
func (pool Pool) validateProxy(p *problems, key string) bool {
	const why = "a proxy pool hands out no addresses; the site's DHCP server does (remove it, or use mode: full)"
	ok := true
	if pool.Range.Start.IsValid() || pool.Range.End.IsValid() {
		p.addf(key+".range", "%s", why)
		ok = false
	}
	if pool.Router.IsValid() {
		p.addf(key+".router", "%s", why)
	}
	if len(pool.DNS) > 0 {
		p.addf(key+".dns", "%s", why)
	}
	if pool.LeaseTime != 0 {
		p.addf(key+".lease_time", "%s", why)
	}
	// Nor the options that go with an address, nor fixed addresses: a
	// proxy answer carries boot options only.
	if pool.DomainName != "" {
		p.addf(key+".domain_name", "%s", why)
	}
	if len(pool.DomainSearch) > 0 {
		p.addf(key+".domain_search", "%s", why)
	}
	if len(pool.NTP) > 0 {
		p.addf(key+".ntp", "%s", why)
	}
	if pool.MTU != 0 {
		p.addf(key+".mtu", "%s", why)
	}
	if len(pool.Options) > 0 {
		p.addf(key+".options", "%s", why)
	}
	if len(pool.Reservations) > 0 {
		p.addf(key+".reservations", "%s", why)
	}
	return ok
}

// validate reports whether the static subnet and range are usable.
func (s Static) validate(p *problems) bool {
	subnetOK := checkSubnet(p, "cluster.static.subnet", s.Subnet)
	rangeOK := checkRange(p, "cluster.static.range", s.Range, s.Subnet, subnetOK)
	if s.Gateway.IsValid() && checkHostAddr(p, "cluster.static.gateway", s.Gateway, s.Subnet, subnetOK) &&
		rangeOK && s.Range.Contains(s.Gateway) {
		p.addf("cluster.static.gateway", "%s is inside the range %s, so it could be given to a machine", s.Gateway, s.Range)
	}
	checkDNS(p, "cluster.static.dns", s.DNS)
	return subnetOK && rangeOK
}

// checkSubnet reports whether s is a usable IPv4 subnet.
func checkSubnet(p *problems, key string, s netip.Prefix) bool {
	switch {
	case !s.IsValid():
		p.addf(key, "required (a subnet in CIDR notation, e.g. 10.99.0.0/24)")
	case !s.Addr().Is4():
		p.addf(key, "%s is not an IPv4 subnet", s)
	case s != s.Masked():
		p.addf(key, "%s has host bits set; did you mean %s?", s, s.Masked())
	default:
		return true
	}
	return false
}

// checkRange reports whether r is a usable range of host addresses of
// subnet. Where the subnet itself is unusable (already reported), only the
// addresses' own form is checked.
func checkRange(p *problems, key string, r Range, subnet netip.Prefix, subnetOK bool) bool {
	ok := checkHostAddr(p, key+".start", r.Start, subnet, subnetOK)
	ok = checkHostAddr(p, key+".end", r.End, subnet, subnetOK) && ok
	if ok && r.End.Less(r.Start) {
		p.addf(key, "start %s is after end %s", r.Start, r.End)
		return false
	}
	return ok && subnetOK
}

// checkHostAddr reports whether a is an IPv4 address a host in subnet can
// have: inside it, and neither its network nor its broadcast address.
func checkHostAddr(p *problems, key string, a netip.Addr, subnet netip.Prefix, subnetOK bool) bool {
	// /31 and /32 have no network or broadcast address (RFC 3021).
	edges := subnetOK && subnet.Bits() <= 30
	switch {
	case !a.IsValid():
		p.addf(key, "required")
	case !a.Is4():
		p.addf(key, "%s is not an IPv4 address", a)
	case !subnetOK:
		return true // nothing more can be said without a subnet
	case !subnet.Contains(a):
		p.addf(key, "%s is not inside subnet %s", a, subnet)
	case edges && a == subnet.Addr():
		p.addf(key, "%s is the network address of %s", a, subnet)
	case edges && a == lastAddr(subnet):
		p.addf(key, "%s is the broadcast address of %s", a, subnet)
	default:
		return true
	}
	return false
}

func checkDNS(p *problems, key string, servers []netip.Addr) {
	for i, a := range servers {
		switch {
		case !a.IsValid():
			p.addf(fmt.Sprintf("%s[%d]", key, i), "empty")
		case !a.Is4():
			p.addf(fmt.Sprintf("%s[%d]", key, i), "%s is not an IPv4 address", a)
		}
	}
}

// profileName keeps profile names safe to use in etcd keys, metric labels
// and file names.
var profileName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)

// MetadataKey is what a metadata key, and so a profile tag's key, must
// look like (the admin API checks the same): keys end up in templates, as
// YAML keys among others, so they are kept short and to a safe alphabet.
var MetadataKey = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._/-]{0,62}$`)

// sortedKeys lists m's keys in order, so that problems come out in the
// same order on every run.
func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (c *Cluster) validateProfiles(p *problems) {
	seen := make(map[string]int)
	for i, pr := range c.Profiles {
		key := fmt.Sprintf("cluster.profiles[%d]", i)
		switch {
		case pr.Name == "":
			p.addf(key+".name", "required")
		case pr.Name == DefaultProfile:
			p.addf(key+".name", "%q is reserved for machines beyond every profile's quantity", pr.Name)
		case !profileName.MatchString(pr.Name):
			p.addf(key+".name", "%q is not a valid profile name (lower-case letters, digits, \"-\" and \"_\", starting with a letter or digit, at most 32 characters)", pr.Name)
		default:
			if j, dup := seen[pr.Name]; dup {
				p.addf(key+".name", "%q is already the name of cluster.profiles[%d]", pr.Name, j)
			} else {
				seen[pr.Name] = i
			}
		}
		if pr.Quantity < 1 {
			p.addf(key+".quantity", "must be at least 1 (got %d)", pr.Quantity)
		}
		for _, r := range InstallRoles {
			v := pr.Install.get(r)
			if v == "" {
				continue
			}
			k := key + ".install." + r
			if name, ok := ArtifactName(v); ok {
				checkArtifactName(p, k, name)
			} else {
				p.addf(k, "%q must name an artifact (\"artifact:NAME\"): a profile's own OS comes from the catalogue, not from each replica's files", v)
			}
		}
		for _, k := range sortedKeys(pr.Tags) {
			if k == "" {
				p.addf(key+".tags", "a tag has an empty key")
			} else if !MetadataKey.MatchString(k) {
				p.addf(key+".tags", "tag %q is not a valid metadata key: it must match %s", k, MetadataKey)
			}
		}
	}
}

func (in *Install) validate(p *problems) {
	for _, r := range InstallRoles {
		checkSource(p, "cluster.install."+r, in.get(r))
	}
	if !path.IsAbs(in.Disk) {
		p.addf("cluster.install.disk", "%q is not an absolute device path, e.g. /dev/sda", in.Disk)
	}
	// The arguments go into the iPXE script's kernel line; a line break
	// would end that line and start a script command.
	if strings.ContainsAny(in.KernelArgs, "\r\n") {
		p.addf("cluster.install.kernel_args", "must be one line")
	}
	checkAtLeast(p, "cluster.install.timeout", in.Timeout, time.Minute)
}

// checkSource checks a value naming a file under node.files_dir or an
// artifact ("artifact:NAME").
func checkSource(p *problems, key, v string) {
	if name, ok := ArtifactName(v); ok {
		checkArtifactName(p, key, name)
		return
	}
	checkFilePath(p, key, v)
}

func checkArtifactName(p *problems, key, name string) {
	if !ArtifactNameRE.MatchString(name) {
		p.addf(key, "%q is not a valid artifact name (1-128 letters, digits, \".\", \"_\" and \"-\", starting with a letter or digit)", name)
	}
}

// checkFilePath checks, syntactically, that v names a file under
// node.files_dir: relative, and not climbing out with "..". Whether the
// file exists is checked by the code that opens it.
func checkFilePath(p *problems, key, v string) {
	clean := path.Clean(v)
	switch {
	case v == "":
		p.addf(key, "required (a path relative to node.files_dir)")
	case strings.HasPrefix(v, "/"):
		p.addf(key, "%q must be relative to node.files_dir, without a leading \"/\"", v)
	case clean == ".":
		p.addf(key, "%q names no file", v)
	case clean == ".." || strings.HasPrefix(clean, "../"):
		// After Clean, any ".." left is at the start.
		p.addf(key, "%q leads outside node.files_dir", v)
	}
}

func (d *DHCP) validate(p *problems, pools []Pool) {
	seen := map[netip.Addr]int{}
	for i, a := range d.Relays {
		key := fmt.Sprintf("cluster.dhcp.relays[%d]", i)
		switch {
		case !a.IsValid():
			p.addf(key, "empty")
		case !a.Is4():
			p.addf(key, "%s is not an IPv4 address", a)
		default:
			if j, dup := seen[a]; dup {
				p.addf(key, "%s is already cluster.dhcp.relays[%d]", a, j)
			}
			seen[a] = i
			// A relay's giaddr names its pool: one outside every pool
			// could never be answered.
			inPool := false
			for _, pool := range pools {
				inPool = inPool || pool.Subnet.Contains(a)
			}
			if !inPool {
				p.addf(key, "%s is in no cluster.pools subnet (a relay's address on the machines' network names their pool)", a)
			}
		}
	}
	if d.NewClientsPerSecond <= 0 {
		p.addf("cluster.dhcp.new_clients_per_second", "must be positive (got %g)", d.NewClientsPerSecond)
	}
	if d.NewClientsBurst < 1 {
		p.addf("cluster.dhcp.new_clients_burst", "must be at least 1 (got %d)", d.NewClientsBurst)
	}
	if t := d.DeclineProbeTimeout; t < 10*time.Millisecond || t > 10*time.Second {
		p.addf("cluster.dhcp.decline_probe_timeout", "%s is out of range (10ms-10s)", t)
	}
	if d.DeclineProbes < 1 || d.DeclineProbes > 1024 {
		p.addf("cluster.dhcp.decline_probes", "%d is out of range (1-1024)", d.DeclineProbes)
	}
	checkAtLeast(p, "cluster.dhcp.decline_quarantine", d.DeclineQuarantine, time.Second)
	if d.UnregisteredShare < 1 || d.UnregisteredShare > 100 {
		p.addf("cluster.dhcp.unregistered_share", "%d is out of range (1-100 percent; 100 turns the cap off)", d.UnregisteredShare)
	}
}

func (s *SelfRegistration) validate(p *problems) {
	if s.PerSecond <= 0 {
		p.addf("cluster.self_registration.per_second", "must be positive (got %g)", s.PerSecond)
	}
	if s.Burst < 1 {
		p.addf("cluster.self_registration.burst", "must be at least 1 (got %d)", s.Burst)
	}
	checkAtLeast(p, "cluster.self_registration.expire_after", s.ExpireAfter, time.Minute)
	if s.MaxUnfinished < 1 {
		p.addf("cluster.self_registration.max_unfinished", "must be at least 1 (got %d)", s.MaxUnfinished)
	}
}
