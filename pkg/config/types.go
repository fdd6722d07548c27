// Package config reads mayu's one YAML file. The file has two parts:
// node-local settings (addresses, ports, data directory, etcd) that differ
// from replica to replica, and cluster-wide settings (pools, profiles,
// install, templates) that every replica must carry identically; the hash of
// the cluster-wide part is how replicas notice a mismatch.
package config

import (
	"net/netip"
	"time"
)

// Config is the whole file.
type Config struct {
	Node    Node    `yaml:"node"`
	Cluster Cluster `yaml:"cluster"`

	// Path is the file the config was read from; not part of the YAML.
	Path string `yaml:"-"`
}

// Node holds what differs between replicas.
type Node struct {
	// Name identifies this replica in state history and logs. Default: the host name.
	Name string `yaml:"name"`
	// Interface is the network interface DHCP listens on.
	Interface string `yaml:"interface"`
	// ListenAddress is the address TFTP, HTTP and admin listeners bind to (default 0.0.0.0).
	ListenAddress netip.Addr `yaml:"listen_address"`
	// AdvertiseAddress is the address machines are told to use for TFTP and
	// HTTP: the VRRP virtual address where there is one. Required.
	AdvertiseAddress netip.Addr `yaml:"advertise_address"`
	// DataDir holds the embedded etcd's data. Default /var/lib/mayu.
	DataDir string `yaml:"data_dir"`
	// FilesDir is the root every cluster-wide file path is relative to.
	// Default /usr/share/mayu/files. Nothing outside it is ever served.
	FilesDir string `yaml:"files_dir"`
	// BootFilesDir holds the iPXE binaries served over TFTP (and over HTTP
	// under /tftp/ for UEFI HTTP boot). Default /usr/share/mayu/boot.
	BootFilesDir string `yaml:"boot_files_dir"`
	// ElectionTTL is the etcd session TTL of the DHCP leader election: a
	// leader that stops renewing is replaced after at most this long.
	// Default 3s.
	ElectionTTL time.Duration `yaml:"election_ttl"`
	// AdminTokenFile holds the bearer token of the admin API. Required.
	AdminTokenFile string `yaml:"admin_token_file"`
	Etcd           Etcd   `yaml:"etcd"`
	Ports          Ports  `yaml:"ports"`
}

// Etcd says where state lives.
type Etcd struct {
	// Endpoints of an external etcd cluster; none means an embedded
	// single-member etcd in DataDir.
	Endpoints []string `yaml:"endpoints"`
	// Prefix every key lives under. Default /mayu/.
	Prefix string `yaml:"prefix"`
	// DialTimeout bounds connecting to etcd. Default 5s.
	DialTimeout time.Duration `yaml:"dial_timeout"`
	// RequestTimeout bounds one etcd request. Default 5s.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	Embedded       Embedded      `yaml:"embedded"`
}

// Embedded configures the embedded etcd (used when Endpoints is empty).
type Embedded struct {
	// ClientURL the embedded etcd listens on. Default http://127.0.0.1:2379.
	ClientURL string `yaml:"client_url"`
	// PeerURL the embedded etcd listens on. Default http://127.0.0.1:2380.
	PeerURL string `yaml:"peer_url"`
	// QuotaBytes is the backend space quota. Default 2 GiB.
	QuotaBytes int64 `yaml:"quota_bytes"`
	// CompactionRetention is the periodic auto-compaction window. Default 1h.
	CompactionRetention time.Duration `yaml:"compaction_retention"`
}

// Ports of the listeners. 0 for DHCP or TFTP disables that listener.
type Ports struct {
	DHCP    int `yaml:"dhcp"`    // default 67
	TFTP    int `yaml:"tftp"`    // default 69
	HTTP    int `yaml:"http"`    // boot files and node callbacks; default 4081
	Admin   int `yaml:"admin"`   // admin API; default 4080
	Metrics int `yaml:"metrics"` // /metrics and health; default 4082
}

// Registration policy values.
const (
	RegistrationOpen          = "open"
	RegistrationPreregistered = "preregistered"
)

// Cluster holds what every replica must agree on.
type Cluster struct {
	Pools     []Pool    `yaml:"pools"`
	Static    Static    `yaml:"static"`
	Profiles  []Profile `yaml:"profiles"`
	Install   Install   `yaml:"install"`
	Boot      Boot      `yaml:"boot"`
	Templates Templates `yaml:"templates"`
	// TemplateVars are handed to templates as .Vars.
	TemplateVars map[string]string `yaml:"template_vars"`
	// SecretTemplateVars names the TemplateVars that must never be logged or
	// shown by `mayuctl config`.
	SecretTemplateVars []string `yaml:"secret_template_vars"`
	// Registration is "open" (register any machine on first contact, the
	// default) or "preregistered" (only machines added with `mayuctl add`).
	Registration string `yaml:"registration"`
}

// Pool is one DHCP subnet, for the short-lived boot addresses.
type Pool struct {
	Subnet    netip.Prefix  `yaml:"subnet"`
	Range     Range         `yaml:"range"`
	Router    netip.Addr    `yaml:"router"`
	DNS       []netip.Addr  `yaml:"dns"`
	LeaseTime time.Duration `yaml:"lease_time"` // default 1h
}

// Range is an inclusive address range inside a subnet.
type Range struct {
	Start netip.Addr `yaml:"start"`
	End   netip.Addr `yaml:"end"`
}

// Static is where each machine's InternalAddr comes from: the address its
// installed OS configures statically.
type Static struct {
	Subnet  netip.Prefix `yaml:"subnet"`
	Range   Range        `yaml:"range"`
	Gateway netip.Addr   `yaml:"gateway"`
	DNS     []netip.Addr `yaml:"dns"`
}

// Profile is handed to the first Quantity machines, in config order.
type Profile struct {
	Name     string `yaml:"name"`
	Quantity int    `yaml:"quantity"`
	// Tags become the machine's metadata (rule-core: "true").
	Tags map[string]string `yaml:"tags"`
}

// Install describes what the installer boots and writes.
type Install struct {
	Kernel     string        `yaml:"kernel"`      // installer kernel, relative to FilesDir
	Initrd     string        `yaml:"initrd"`      // installer initrd, relative to FilesDir
	Image      string        `yaml:"image"`       // OS image written to Disk, relative to FilesDir
	Disk       string        `yaml:"disk"`        // install disk, e.g. /dev/sda
	KernelArgs string        `yaml:"kernel_args"` // extra installer kernel arguments
	Timeout    time.Duration `yaml:"timeout"`     // an install outlasting it is failed; default 30m
}

// Templates are Go text/template files, relative to FilesDir.
type Templates struct {
	FirstStage  string `yaml:"first_stage"`  // shell script the installer runs
	FinalConfig string `yaml:"final_config"` // config written to the installed disk
}

// Boot says which iPXE build each kind of firmware gets over TFTP. File
// names are relative to node.boot_files_dir; an empty name means that
// firmware gets an address but no boot file.
type Boot struct {
	BIOS  string `yaml:"bios"`  // client architecture 0; default undionly.kpxe
	EFI64 string `yaml:"efi64"` // architectures 7 and 9 (x86-64 UEFI); default ipxe.efi
	EFI32 string `yaml:"efi32"` // architecture 6 (IA32 UEFI); Debian ships none
	ARM64 string `yaml:"arm64"` // architecture 11 (arm64 UEFI); Debian ships none
	// AnswerInstalledIPXE makes the leader answer the iPXE of an installed
	// machine (with the script URL, which then gets a local-boot script)
	// instead of staying silent. BIOS then reaches its disk in about 9 s
	// instead of 24 s; under UEFI it does not help.
	AnswerInstalledIPXE bool `yaml:"answer_installed_ipxe"`
}
