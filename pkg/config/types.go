// Package config reads mayu's one YAML file. The file has two parts:
// node-local settings (addresses, ports, data directory, etcd) that differ
// from replica to replica, and cluster-wide settings (pools, profiles,
// install, templates) that every replica must carry identically; the hash of
// the cluster-wide part is how replicas notice a mismatch.
package config

import (
	"net/netip"
	"regexp"
	"sort"
	"strings"
	"time"
)

// Config is the whole file.
type Config struct {
	Node    Node    `yaml:"node" json:"node"`
	Cluster Cluster `yaml:"cluster" json:"cluster"`

	// Path is the file the config was read from; not part of the YAML.
	Path string `yaml:"-" json:"-"`
}

// Node holds what differs between replicas.
type Node struct {
	// Name identifies this replica in state history and logs. Default: the host name.
	Name string `yaml:"name" json:"name"`
	// Interface is the network interface DHCP listens on.
	Interface string `yaml:"interface" json:"interface"`
	// LogLevel is debug, info, warn or error (default info); the -log-level
	// flag overrides it. SIGHUP applies a new value without a restart.
	LogLevel string `yaml:"log_level" json:"log_level"`
	// ListenAddress is the address TFTP, HTTP and admin listeners bind to (default 0.0.0.0).
	ListenAddress netip.Addr `yaml:"listen_address" json:"listen_address"`
	// AdminListenAddress and MetricsListenAddress bind the admin API and
	// the metrics and health port elsewhere, e.g. to a management network
	// the boot network cannot reach. Default: ListenAddress.
	AdminListenAddress   netip.Addr `yaml:"admin_listen_address" json:"admin_listen_address"`
	MetricsListenAddress netip.Addr `yaml:"metrics_listen_address" json:"metrics_listen_address"`
	// AdvertiseAddress is the address machines are told to use for TFTP and
	// HTTP: the VRRP virtual address where there is one. Required.
	AdvertiseAddress netip.Addr `yaml:"advertise_address" json:"advertise_address"`
	// DataDir holds the embedded etcd's data. Default /var/lib/mayu.
	DataDir string `yaml:"data_dir" json:"data_dir"`
	// FilesDir is the root every cluster-wide file path is relative to.
	// Default /usr/share/mayu/files. Nothing outside it is ever served.
	FilesDir string `yaml:"files_dir" json:"files_dir"`
	// BootFilesDir holds the iPXE binaries served over TFTP (and over HTTP
	// under /tftp/ for UEFI HTTP boot). Default /usr/share/mayu/boot.
	BootFilesDir string `yaml:"boot_files_dir" json:"boot_files_dir"`
	// ElectionTTL is the etcd session TTL of the DHCP leader election: a
	// leader that stops renewing is replaced after at most this long.
	// Default 3s.
	ElectionTTL time.Duration `yaml:"election_ttl" json:"election_ttl"`
	// Deposition is how this replica, as a follower, watches the DHCP
	// leader and deposes one that has died or frozen long before its
	// session TTL runs out.
	Deposition Deposition `yaml:"deposition" json:"deposition"`
	// AdminTokenFile holds one bearer token of the admin API, with the
	// admin role. Deprecated: Admin.TokensFile replaces it; it still works
	// (with a warning in the log) when Admin.TokensFile is not set.
	AdminTokenFile string `yaml:"admin_token_file" json:"admin_token_file"`
	Admin          Admin  `yaml:"admin" json:"admin"`
	Etcd           Etcd   `yaml:"etcd" json:"etcd"`
	Ports          Ports  `yaml:"ports" json:"ports"`
	Limits         Limits `yaml:"limits" json:"limits"`
	// Artifacts is this replica's cache of the artifacts in the catalogue.
	Artifacts Artifacts `yaml:"artifacts" json:"artifacts"`
}

// Deposition: followers probe the leader on its own address and end the
// term of a leader that refuses the connection (its process is gone) or
// that a majority of replicas see time out (frozen, cut off). Safe because
// every leader-only write is fenced (README "Deposition").
type Deposition struct {
	// Enabled: probe and depose. Default true; false leaves a dead
	// leader to its session TTL (node.election_ttl).
	Enabled *bool `yaml:"enabled" json:"enabled"`
	// ProbeInterval is how often the leader is probed. Default 100ms.
	ProbeInterval time.Duration `yaml:"probe_interval" json:"probe_interval"`
	// ProbeTimeout is how long one probe waits for the leader's answer.
	// Default 250ms.
	ProbeTimeout time.Duration `yaml:"probe_timeout" json:"probe_timeout"`
	// SuspectAfter is how many probes in a row must time out before this
	// replica publishes its verdict that the leader is unresponsive; a
	// majority of verdicts deposes it. Default 3.
	SuspectAfter int `yaml:"suspect_after" json:"suspect_after"`
}

// On reports whether deposition is enabled.
func (d Deposition) On() bool { return d.Enabled == nil || *d.Enabled }

// Artifacts configures this replica's side of the artifact catalogue: the
// content-addressed cache that holds the bytes, and how the replica
// fetches from upstream and from its peers.
type Artifacts struct {
	// CacheDir holds the verified bytes and the transfers under way.
	// Default <data_dir>/artifacts.
	CacheDir string `yaml:"cache_dir" json:"cache_dir"`
	// QuotaBytes bounds the cache; a download that would not fit is
	// refused before it starts. 0 (the default): only the disk's free
	// space bounds it.
	QuotaBytes int64 `yaml:"quota_bytes" json:"quota_bytes"`
	// Transfers bounds this replica's concurrent downloads. Default 2.
	Transfers int `yaml:"transfers" json:"transfers"`
	// MaxBytesPerSecond caps what this replica's downloads (from upstream
	// and from peers, together) read, so that copying a large image does
	// not crowd out machines booting on the same network. Default 0: no cap.
	MaxBytesPerSecond int64 `yaml:"max_bytes_per_second" json:"max_bytes_per_second"`
	// PeerAddress is this replica's own address, where its peers fetch
	// artifacts and where machines are sent for an artifact this replica
	// lacks; never the shared virtual address. Default: node.listen_address
	// when it is a specific address, else the first IPv4 address of
	// node.interface.
	PeerAddress netip.Addr `yaml:"peer_address" json:"peer_address"`
	// MissingGrace is how long a peer may hold an artifact the
	// configuration names before this replica, still lacking it, fails
	// /readyz. Default 5m.
	MissingGrace time.Duration `yaml:"missing_grace" json:"missing_grace"`
}

// Limits bound what one client, or a flood, can take of this replica:
// descriptors, goroutines, packets. The defaults are far above what a rack
// of machines booting at once needs, and every refusal is counted
// (docs/metrics.md). The metrics port has no connection caps, so that
// Prometheus and keepalived's health check are never refused because the
// boot port is flooded.
type Limits struct {
	HTTP  HTTPLimits `yaml:"http" json:"http"`   // the boot port (node.ports.http)
	Admin HTTPLimits `yaml:"admin" json:"admin"` // the admin API (node.ports.admin)
	TFTP  TFTPLimits `yaml:"tftp" json:"tftp"`
}

// HTTPLimits bound one HTTP listener.
type HTTPLimits struct {
	// ReadHeaderTimeout bounds reading a request's headers (slowloris).
	// Default 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout" json:"read_header_timeout"`
	// IdleTimeout closes a kept-alive connection that sends no new request.
	// Default 1m.
	IdleTimeout time.Duration `yaml:"idle_timeout" json:"idle_timeout"`
	// StallTimeout cuts a request whose body or answer moves no bytes for
	// this long; one that keeps moving is never cut, however long it takes
	// (a multi-GB image). Default 30s.
	StallTimeout time.Duration `yaml:"stall_timeout" json:"stall_timeout"`
	// MaxHeaderBytes bounds a request's headers. Default 16384.
	MaxHeaderBytes int `yaml:"max_header_bytes" json:"max_header_bytes"`
	// MaxConnections bounds open connections in total; more are closed
	// at once. Default 4096 (boot port), 256 (admin API).
	MaxConnections int `yaml:"max_connections" json:"max_connections"`
	// MaxConnectionsPerAddress bounds the open connections of one client
	// address. Default 64.
	MaxConnectionsPerAddress int `yaml:"max_connections_per_address" json:"max_connections_per_address"`
}

// TFTPLimits bound the TFTP server.
type TFTPLimits struct {
	// MaxTransfers bounds transfers under way: a transfer takes a slot
	// once its first block is acknowledged. Default 256.
	MaxTransfers int `yaml:"max_transfers" json:"max_transfers"`
	// MaxPending bounds requests whose first block is not acknowledged
	// yet; each holds a socket. Default 256.
	MaxPending int `yaml:"max_pending" json:"max_pending"`
	// MaxPerAddress bounds the requests, pending or under way, of one
	// client address. Default 64.
	MaxPerAddress int `yaml:"max_per_address" json:"max_per_address"`
	// Timeout is how long each block (and the option acknowledgement)
	// waits for its acknowledgement before it is sent again. Default 1s.
	Timeout time.Duration `yaml:"timeout" json:"timeout"`
	// Retransmissions of a block before the transfer is given up. Default 1:
	// a request nobody acknowledges costs at most two data packets.
	Retransmissions int `yaml:"retransmissions" json:"retransmissions"`
	// FirstBlockTimeout bounds the time from a request to the
	// acknowledgement of its first block; past it the request no longer
	// counts against its address, and a late acknowledgement is refused.
	// Default 3s.
	FirstBlockTimeout time.Duration `yaml:"first_block_timeout" json:"first_block_timeout"`
}

// Admin secures the admin API: who may call it (named tokens with a role,
// client certificates), over TLS, and the audit trail of its changes.
// SIGHUP reloads the files it names.
type Admin struct {
	// TokensFile is the YAML file of named tokens, each with a role
	// (viewer or admin), and of client certificate subjects with a role.
	TokensFile string `yaml:"tokens_file" json:"tokens_file"`
	// CertFile and KeyFile make the admin API speak HTTPS. Without them it
	// speaks plain HTTP (and says so in the log).
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
	// ClientCAFile makes the admin API require a client certificate signed
	// by one of its CAs (mutual TLS), on top of a token or a certificate
	// subject named in TokensFile.
	ClientCAFile string `yaml:"client_ca_file" json:"client_ca_file"`
	Audit        Audit  `yaml:"audit" json:"audit"`
}

// Audit is the retention of the audit trail in etcd; an entry goes when
// either limit is passed.
type Audit struct {
	// MaxEntries kept. Default 10000 (at most 4 KiB each: 40 MiB).
	MaxEntries int `yaml:"max_entries" json:"max_entries"`
	// MaxAge of an entry. Default 2160h (90 days).
	MaxAge time.Duration `yaml:"max_age" json:"max_age"`
}

// Etcd says where state lives.
type Etcd struct {
	// Endpoints of an external etcd cluster; none means an embedded
	// single-member etcd in DataDir.
	Endpoints []string `yaml:"endpoints" json:"endpoints"`
	// Prefix every key lives under. Default /mayu/.
	Prefix string `yaml:"prefix" json:"prefix"`
	// DialTimeout bounds connecting to etcd. Default 5s.
	DialTimeout time.Duration `yaml:"dial_timeout" json:"dial_timeout"`
	// RequestTimeout bounds one etcd request. Default 5s.
	RequestTimeout time.Duration `yaml:"request_timeout" json:"request_timeout"`

	// CAFile holds the CA certificates (PEM) that mayu trusts to have
	// signed etcd's server certificates; empty: the system's pool. Needed
	// for https:// endpoints at IP addresses, which no public CA certifies.
	CAFile string `yaml:"ca_file" json:"ca_file"`
	// CertFile and KeyFile are mayu's client certificate and key (PEM),
	// for an etcd run with --client-cert-auth. Both or neither.
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
	// Username is the etcd user mayu authenticates as, with the password
	// in PasswordFile; with neither, etcd takes the user from the client
	// certificate's CN (when auth is on).
	Username string `yaml:"username" json:"username"`
	// PasswordFile holds Username's password (one line), so the password
	// is not in a file that is shared around.
	PasswordFile string   `yaml:"password_file" json:"password_file"`
	Embedded     Embedded `yaml:"embedded" json:"embedded"`
}

// TLS reports whether mayu reaches etcd over TLS: its endpoints (or, for
// the embedded etcd, the client URL) are https://.
func (e Etcd) TLS() bool {
	eps := e.Endpoints
	if len(eps) == 0 {
		eps = []string{e.Embedded.ClientURL}
	}
	return len(eps) > 0 && strings.HasPrefix(strings.ToLower(eps[0]), "https://")
}

// Embedded configures the embedded etcd (used when Endpoints is empty).
type Embedded struct {
	// ClientURL the embedded etcd listens on. Default http://127.0.0.1:2379.
	ClientURL string `yaml:"client_url" json:"client_url"`
	// PeerURL the embedded etcd listens on. Default http://127.0.0.1:2380.
	PeerURL string `yaml:"peer_url" json:"peer_url"`
	// QuotaBytes is the backend space quota. Default 2 GiB.
	QuotaBytes int64 `yaml:"quota_bytes" json:"quota_bytes"`
	// CompactionRetention is the periodic auto-compaction window. Default 1h.
	CompactionRetention time.Duration `yaml:"compaction_retention" json:"compaction_retention"`
	// CertFile and KeyFile are the server certificate and key (PEM) the
	// embedded etcd serves https:// ClientURL (and PeerURL) with.
	CertFile string `yaml:"cert_file" json:"cert_file"`
	KeyFile  string `yaml:"key_file" json:"key_file"`
	// ClientCAFile, when set, makes the embedded etcd require client
	// certificates signed by one of its CAs (--client-cert-auth); mayu's
	// own client then presents node.etcd.cert_file.
	ClientCAFile string `yaml:"client_ca_file" json:"client_ca_file"`
}

// Ports of the listeners. 0 for DHCP or TFTP disables that listener.
type Ports struct {
	DHCP    int `yaml:"dhcp" json:"dhcp"`       // default 67
	TFTP    int `yaml:"tftp" json:"tftp"`       // default 69
	HTTP    int `yaml:"http" json:"http"`       // boot files and node callbacks; default 4081
	Admin   int `yaml:"admin" json:"admin"`     // admin API; default 4080
	Metrics int `yaml:"metrics" json:"metrics"` // /metrics and health; default 4082
	// ProxyDHCP is the PXE boot-server port where the leader answers the
	// boot-file requests of clients in proxy pools (UEFI PXE asks there
	// after a proxy offer); opened only when a pool is in proxy mode.
	// Default 4011; 0 disables it.
	ProxyDHCP int `yaml:"proxy_dhcp" json:"proxy_dhcp"`
}

// Registration policy values.
const (
	RegistrationOpen          = "open"
	RegistrationPreregistered = "preregistered"
)

// Cluster holds what every replica must agree on.
type Cluster struct {
	Pools     []Pool    `yaml:"pools" json:"pools"`
	Static    Static    `yaml:"static" json:"static"`
	Profiles  []Profile `yaml:"profiles" json:"profiles"`
	Install   Install   `yaml:"install" json:"install"`
	Boot      Boot      `yaml:"boot" json:"boot"`
	Templates Templates `yaml:"templates" json:"templates"`
	// TemplateVars are handed to templates as .Vars.
	TemplateVars map[string]string `yaml:"template_vars" json:"template_vars"`
	// SecretTemplateVars names the TemplateVars that must never be logged or
	// shown by `mayuctl config`.
	SecretTemplateVars []string `yaml:"secret_template_vars" json:"secret_template_vars"`
	// Registration is "open" (register any machine on first contact, the
	// default) or "preregistered" (only machines added with `mayuctl add`).
	Registration string `yaml:"registration" json:"registration"`
	// SelfRegistration limits what a flood of iPXE requests with made-up
	// serials can take under registration: open.
	SelfRegistration SelfRegistration `yaml:"self_registration" json:"self_registration"`
	// DHCP limits what the leader hands out to whom.
	DHCP DHCP `yaml:"dhcp" json:"dhcp"`
}

// DHCP holds the leader's limits against hostile clients on the boot
// network. Their defaults are far above what a rack of machines booting at
// once asks for.
type DHCP struct {
	// Relays are the relay agent addresses (giaddr) whose requests are
	// answered; a relayed request naming another giaddr is dropped. Empty
	// (the default): every relay whose giaddr lies in a pool's subnet.
	Relays []netip.Addr `yaml:"relays" json:"relays"`
	// NewClientsPerSecond and NewClientsBurst are the token bucket of new
	// clients (a MAC with no offer, no lease and no registered machine)
	// each pool may bring (each relay in Relays, when there is a list; a
	// giaddr a packet merely claims is no source of its own): spoofed MACs
	// cannot drain a pool faster. Defaults 20 and 200.
	NewClientsPerSecond float64 `yaml:"new_clients_per_second" json:"new_clients_per_second"`
	NewClientsBurst     int     `yaml:"new_clients_burst" json:"new_clients_burst"`
	// DeclineProbeTimeout is how long the leader waits for an answer (ARP
	// on the local segment, ICMP echo across a relay) from a declined
	// address before it gives the address back to the pool. Default 1s.
	DeclineProbeTimeout time.Duration `yaml:"decline_probe_timeout" json:"decline_probe_timeout"`
	// DeclineProbes bounds the probes in flight; a DECLINE beyond it
	// quarantines nothing. Default 16.
	DeclineProbes int `yaml:"decline_probes" json:"decline_probes"`
	// DeclineQuarantine is how long an address that a probe found in use
	// is not offered. Default 10m.
	DeclineQuarantine time.Duration `yaml:"decline_quarantine" json:"decline_quarantine"`
	// UnregisteredShare is the percentage of each pool's dynamic range
	// that clients whose MAC belongs to no registered machine (and has
	// no reservation) may hold at once, offers included: made-up MACs
	// cannot drain a pool, however patient, and registered machines
	// always find the rest. Rounded down, at least one address; 100 turns
	// the cap off. Default (0 or absent) 50.
	UnregisteredShare int `yaml:"unregistered_share" json:"unregistered_share,omitempty"`
}

// SelfRegistration limits registration on first contact.
type SelfRegistration struct {
	// PerSecond and Burst are each replica's token bucket of new machines
	// registered on first contact; a machine beyond it is told to wait and
	// asks again. mayuctl add is not limited. Defaults 10 and 100.
	PerSecond float64 `yaml:"per_second" json:"per_second"`
	Burst     int     `yaml:"burst" json:"burst"`
	// ExpireAfter deletes a machine registered on first contact that has
	// sat this long in configured without starting an install, freeing its
	// static address, profile slot and MACs. Machines added with mayuctl
	// add, and machines that ever started an install, never expire.
	// Default 1h.
	ExpireAfter time.Duration `yaml:"expire_after" json:"expire_after"`
	// MaxUnfinished caps the machines registered on first contact that are
	// not installed yet, cluster-wide (as each replica's watch of the
	// records sees them): beyond it a new machine is told to wait. With
	// ExpireAfter it keeps random serials from taking the static range.
	// Default half of cluster.static.range, at least 64 (or the whole
	// range if smaller).
	MaxUnfinished int `yaml:"max_unfinished" json:"max_unfinished"`
}

// Pool is one DHCP subnet, for the short-lived boot addresses.
type Pool struct {
	Subnet netip.Prefix `yaml:"subnet" json:"subnet"`
	// Mode is PoolFull (mayu hands out the addresses and the boot options,
	// the default) or PoolProxy (the site's DHCP server hands out the
	// addresses; mayu answers boot clients with boot options only, as a
	// PXE proxyDHCP server). A proxy pool takes every key but subnet and
	// mode (validateProxy refuses the others by key).
	Mode      string        `yaml:"mode" json:"mode,omitempty"`
	Range     Range         `yaml:"range" json:"range"`
	Router    netip.Addr    `yaml:"router" json:"router"`
	DNS       []netip.Addr  `yaml:"dns" json:"dns"`
	LeaseTime time.Duration `yaml:"lease_time" json:"lease_time"` // default 1h

	// The options below go to a client only in the OFFER and ACK of a
	// full-mode pool, and only when it asks for them in its parameter
	// request list (option 55), as dnsmasq and Kea do; an entry of
	// Options marked Always goes unasked (Kea's always-send, dnsmasq's
	// dhcp-option-force). What does not fit the client's maximum
	// message size is left out, last configured first.

	// DomainName is option 15: the machines' DNS domain.
	DomainName string `yaml:"domain_name" json:"domain_name,omitempty"`
	// DomainSearch is option 119 (RFC 3397): the DNS search list.
	DomainSearch []string `yaml:"domain_search" json:"domain_search,omitempty"`
	// NTP is option 42: NTP servers, IPv4.
	NTP []netip.Addr `yaml:"ntp" json:"ntp,omitempty"`
	// MTU is option 26, the interface MTU (68-65535); 0: not sent.
	MTU int `yaml:"mtu" json:"mtu,omitempty"`
	// Options are more options by code, each with a typed value.
	Options []DHCPOption `yaml:"options" json:"options,omitempty"`
	// Reservations give a MAC a fixed boot address, outside Range. It is
	// leased like any other (written to etcd before the ACK, fenced), and
	// to nobody else.
	Reservations []Reservation `yaml:"reservations" json:"reservations,omitempty"`
}

// DHCPOption is one option of cluster.pools[].options.
type DHCPOption struct {
	Code int `yaml:"code" json:"code"`
	// Type is how Value is written and encoded: one of OptionTypes.
	Type  string      `yaml:"type" json:"type"`
	Value OptionValue `yaml:"value" json:"value"`
	// Always sends the option to clients that did not ask for it.
	Always bool `yaml:"always" json:"always,omitempty"`
}

// OptionValue is an option's value as written: one scalar, or (for type
// ips) a list of them.
type OptionValue []string

// Reservation is a fixed boot address for one MAC.
type Reservation struct {
	MAC     string     `yaml:"mac" json:"mac"`
	Address netip.Addr `yaml:"address" json:"address"`
}

// Pool modes (cluster.pools[].mode).
const (
	PoolFull  = "full"
	PoolProxy = "proxy"
)

// Proxy reports whether the pool is a proxyDHCP pool: boot options only,
// no addresses.
func (p Pool) Proxy() bool { return p.Mode == PoolProxy }

// Range is an inclusive address range inside a subnet.
type Range struct {
	Start netip.Addr `yaml:"start" json:"start"`
	End   netip.Addr `yaml:"end" json:"end"`
}

// Static is where each machine's InternalAddr comes from: the address its
// installed OS configures statically.
type Static struct {
	Subnet  netip.Prefix `yaml:"subnet" json:"subnet"`
	Range   Range        `yaml:"range" json:"range"`
	Gateway netip.Addr   `yaml:"gateway" json:"gateway"`
	DNS     []netip.Addr `yaml:"dns" json:"dns"`
}

// Profile is handed to the first Quantity machines, in config order.
type Profile struct {
	Name     string `yaml:"name" json:"name"`
	Quantity int    `yaml:"quantity" json:"quantity"`
	// Tags become the machine's metadata (rule-core: "true").
	Tags map[string]string `yaml:"tags" json:"tags"`
	// Install names the profile's own installer kernel, initrd and OS
	// image, each "artifact:NAME"; one left out is cluster.install's.
	Install ProfileInstall `yaml:"install" json:"install"`
}

// ProfileInstall is a profile's own OS: artifacts only.
type ProfileInstall struct {
	Kernel string `yaml:"kernel" json:"kernel,omitempty"`
	Initrd string `yaml:"initrd" json:"initrd,omitempty"`
	Image  string `yaml:"image" json:"image,omitempty"`
}

// ArtifactPrefix marks a value that names an artifact of the catalogue
// ("artifact:NAME") rather than a file under node.files_dir.
const ArtifactPrefix = "artifact:"

// ArtifactName is the artifact a value names, if it names one.
func ArtifactName(v string) (string, bool) {
	return strings.CutPrefix(v, ArtifactPrefix)
}

// ArtifactNameRE is what an artifact name must look like: it is an etcd
// key segment and appears in URLs and logs.
var ArtifactNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,127}$`)

// Roles of the install files, in the order they are used.
var InstallRoles = []string{"kernel", "initrd", "image"}

// Source is what the configuration names for role (kernel, initrd or
// image) of machines of profile: the profile's own artifact, else
// cluster.install's file or artifact.
func (c *Cluster) Source(profile, role string) string {
	for _, p := range c.Profiles {
		if p.Name == profile {
			if v := p.Install.get(role); v != "" {
				return v
			}
		}
	}
	return c.Install.get(role)
}

// Artifacts lists every artifact name the configuration uses, each once,
// sorted.
func (c *Cluster) Artifacts() []string {
	seen := map[string]bool{}
	var out []string
	add := func(v string) {
		if n, ok := ArtifactName(v); ok && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, r := range InstallRoles {
		add(c.Install.get(r))
		for _, p := range c.Profiles {
			add(p.Install.get(r))
		}
	}
	sort.Strings(out)
	return out
}

func (in Install) get(role string) string {
	switch role {
	case "kernel":
		return in.Kernel
	case "initrd":
		return in.Initrd
	case "image":
		return in.Image
	}
	return ""
}

func (in ProfileInstall) get(role string) string {
	return Install{Kernel: in.Kernel, Initrd: in.Initrd, Image: in.Image}.get(role)
}

// Source is what the profile itself names for role ("" when it takes
// cluster.install's).
func (in ProfileInstall) Source(role string) string { return in.get(role) }

// Install describes what the installer boots and writes.
type Install struct {
	// Kernel, Initrd and Image are each a file relative to FilesDir or
	// "artifact:NAME", an artifact of the catalogue.
	Kernel     string        `yaml:"kernel" json:"kernel"`           // installer kernel
	Initrd     string        `yaml:"initrd" json:"initrd"`           // installer initrd
	Image      string        `yaml:"image" json:"image"`             // OS image written to Disk
	Disk       string        `yaml:"disk" json:"disk"`               // install disk, e.g. /dev/sda
	KernelArgs string        `yaml:"kernel_args" json:"kernel_args"` // extra installer kernel arguments
	Timeout    time.Duration `yaml:"timeout" json:"timeout"`         // an install outlasting it is failed; default 30m
}

// Templates are Go text/template files, relative to FilesDir.
type Templates struct {
	FirstStage  string `yaml:"first_stage" json:"first_stage"`   // what the installer runs
	FinalConfig string `yaml:"final_config" json:"final_config"` // config written to the installed disk
	// FirstStageFormat and FinalConfigFormat say what each template
	// renders: FormatText (any text, served as rendered) or
	// FormatIgnition (YAML or JSON mirroring Ignition spec 3.3, converted
	// to Ignition JSON and validated before it is served). A first stage
	// in Ignition is the installer's Ignition config: the iPXE script
	// then passes its URL as ignition.config.url (Flatcar's PXE boot).
	FirstStageFormat  string `yaml:"first_stage_format" json:"first_stage_format"`
	FinalConfigFormat string `yaml:"final_config_format" json:"final_config_format"`
}

// What a template renders (cluster.templates.*_format).
const (
	FormatText     = "text"
	FormatIgnition = "ignition"
)

// Boot says which iPXE build each kind of firmware gets over TFTP. File
// names are relative to node.boot_files_dir; an empty name means that
// firmware gets an address but no boot file.
type Boot struct {
	BIOS  string `yaml:"bios" json:"bios"`   // client architecture 0; default undionly.kpxe
	EFI64 string `yaml:"efi64" json:"efi64"` // architectures 7 and 9 (x86-64 UEFI); default ipxe.efi
	EFI32 string `yaml:"efi32" json:"efi32"` // architecture 6 (IA32 UEFI); Debian ships none
	ARM64 string `yaml:"arm64" json:"arm64"` // architecture 11 (arm64 UEFI); Debian ships none
	// AnswerInstalledIPXE makes the leader answer the iPXE of an installed
	// machine (with the script URL, which then gets a local-boot script)
	// instead of staying silent. BIOS then reaches its disk in about 9 s
	// instead of 24 s; under UEFI it does not help.
	AnswerInstalledIPXE bool `yaml:"answer_installed_ipxe" json:"answer_installed_ipxe"`
}
