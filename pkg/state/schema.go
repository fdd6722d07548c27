// Package state is how mayu keeps its state in etcd: every key it writes is
// declared here once (the schema, documented key for key in docs/etcd.md,
// which a test holds to this file), errors from etcd are marked the same
// way everywhere, and the two loops everything that follows etcd needs
// (retry after a failure, follow a key range through broken watches) are
// written once.
//
// Each key space has one owner, the only package that reads or writes it;
// other packages ask the owner through its methods.
package state

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Keys builds the keys under one prefix (node.etcd.prefix, default
// "/mayu/", always ending in "/").
type Keys struct{ Prefix string }

// Key spaces, relative to the prefix. Layout lists them with their owners.
const (
	machinesDir  = "machines/"
	macsDir      = "macs/"
	addressesDir = "addresses/"
	profilesDir  = "profiles/"
	allocDir     = "alloc/"
	secretKey    = "cluster/secret"
	schemaKey    = "schema"
	leasesDir    = "leases/"
	electionDir  = "election/"
	suspectsDir  = "suspects/"
	deposedDir   = "deposed/"
	replicasDir  = "replicas/"
	configKey    = "config"
	auditDir     = "audit/"

	artifactsDir        = "artifacts/"
	artifactClaimsDir   = "artifact-claims/"
	artifactHoldersDir  = "artifact-holders/"
	artifactProgressDir = "artifact-progress/"
)

// Space is one key space of the schema.
type Space struct {
	// Pattern is the key relative to the prefix, with <placeholders>, as
	// docs/etcd.md writes it.
	Pattern string
	// Owner is the package that writes it (and the only one that reads it).
	Owner string
}

// Layout is every key mayu writes, in the order docs/etcd.md lists them.
var Layout = []Space{
	{machinesDir + "<id>", "registry"},
	{macsDir + "<mac>", "registry"},
	{addressesDir + "<ip>", "registry"},
	{profilesDir + "<name>/<slot>", "registry"},
	{allocDir + "addresses/next", "registry"},
	{allocDir + "addresses/free/<ip>", "registry"},
	{allocDir + "profiles/<name>/next", "registry"},
	{allocDir + "profiles/<name>/free/<slot>", "registry"},
	{secretKey, "registry"},
	{schemaKey, "registry"},
	{leasesDir + "<ip>", "lease"},
	{electionDir + "<lease id>", "election"},
	{suspectsDir + "<term>/<replica>", "election"},
	{deposedDir + "<term>", "election"},
	{replicasDir + "<name>", "replica"},
	{configKey, "replica"},
	{auditDir + "<time>-<random>", "audit"},
	{artifactsDir + "<name>", "artifact"},
	{artifactClaimsDir + "<name>", "artifact"},
	{artifactHoldersDir + "<sha256>/<replica>", "artifact"},
	{artifactProgressDir + "<name>/<replica>", "artifact"},
}

// Machines is the directory of machine records.
func (k Keys) Machines() string { return k.Prefix + machinesDir }

// Machine is one machine record.
func (k Keys) Machine(id string) string { return k.Machines() + id }

// MACs is the MAC index: which machine a MAC belongs to.
func (k Keys) MACs() string { return k.Prefix + macsDir }

// MAC is one MAC index entry.
func (k Keys) MAC(mac string) string { return k.MACs() + mac }

// Addresses is the index of static InternalAddrs held.
func (k Keys) Addresses() string { return k.Prefix + addressesDir }

// Address is who holds one static address.
func (k Keys) Address(ip string) string { return k.Addresses() + ip }

// Profiles is the directory of profile slots.
func (k Keys) Profiles() string { return k.Prefix + profilesDir }

// ProfileSlot is who holds one slot of a profile.
func (k Keys) ProfileSlot(name string, slot int) string {
	return k.Profiles() + name + "/" + strconv.Itoa(slot)
}

// AddressCursor is the static address allocator's cursor: the lowest
// address never handed out (all above it are free).
func (k Keys) AddressCursor() string { return k.Prefix + allocDir + "addresses/next" }

// FreeAddresses is the directory of static addresses freed below the
// cursor; a free key's name sorts like the address (FreeAddress).
func (k Keys) FreeAddresses() string { return k.Prefix + allocDir + "addresses/free/" }

// FreeAddress is one freed static address. Its name is the address with
// each octet padded to three digits (010.003.000.007), so that etcd's key
// order is address order and the lowest free address is one ranged read.
func (k Keys) FreeAddress(ip netip.Addr) string {
	b := ip.As4()
	return fmt.Sprintf("%s%03d.%03d.%03d.%03d", k.FreeAddresses(), b[0], b[1], b[2], b[3])
}

// SlotCursor is a profile's slot allocator cursor.
func (k Keys) SlotCursor(name string) string {
	return k.Prefix + allocDir + "profiles/" + name + "/next"
}

// FreeSlots is the directory of a profile's slots freed below its cursor.
func (k Keys) FreeSlots(name string) string {
	return k.Prefix + allocDir + "profiles/" + name + "/free/"
}

// FreeSlot is one freed slot, zero-padded so that key order is slot order.
func (k Keys) FreeSlot(name string, slot int) string {
	return fmt.Sprintf("%s%010d", k.FreeSlots(name), slot)
}

// Secret is the cluster secret node tokens are made with.
func (k Keys) Secret() string { return k.Prefix + secretKey }

// Schema is the version of the layout of what mayu keeps in etcd.
func (k Keys) Schema() string { return k.Prefix + schemaKey }

// Leases is the directory of DHCP leases.
func (k Keys) Leases() string { return k.Prefix + leasesDir }

// Lease is the lease of one address.
func (k Keys) Lease(ip netip.Addr) string { return k.Leases() + ip.String() }

// Election is the election's key prefix, without the trailing "/" that
// concurrency.NewElection adds itself.
func (k Keys) Election() string { return k.Prefix + electionDir[:len(electionDir)-1] }

// Suspects is the directory of one leadership term's suspicions: the
// followers that see its leader time out (term: the leader key's create
// revision).
func (k Keys) Suspects(term int64) string {
	return k.Prefix + suspectsDir + strconv.FormatInt(term, 10) + "/"
}

// Suspect is one follower's verdict that term's leader is unresponsive.
func (k Keys) Suspect(term int64, replica string) string { return k.Suspects(term) + replica }

// Deposed marks that a follower ended term (its value names which): a
// repeated deposition that finds the term over reads it to learn whether
// its own earlier attempt did.
func (k Keys) Deposed(term int64) string {
	return k.Prefix + deposedDir + strconv.FormatInt(term, 10)
}

// Replicas is the directory of replica announcements.
func (k Keys) Replicas() string { return k.Prefix + replicasDir }

// Replica is one replica's announcement.
func (k Keys) Replica(name string) string { return k.Replicas() + name }

// Config is the cluster configuration the DHCP leader publishes.
func (k Keys) Config() string { return k.Prefix + configKey }

// Audit is the directory of the admin API's audit trail. Its keys sort by
// time, so the oldest entries are one key range.
func (k Keys) Audit() string { return k.Prefix + auditDir }

// AuditEntry is one entry of the audit trail.
func (k Keys) AuditEntry(id string) string { return k.Audit() + id }

// Artifacts is the artifact catalogue: name → digest, size, source.
func (k Keys) Artifacts() string { return k.Prefix + artifactsDir }

// Artifact is one artifact's catalogue record.
func (k Keys) Artifact(name string) string { return k.Artifacts() + name }

// ArtifactClaims is the directory of download claims.
func (k Keys) ArtifactClaims() string { return k.Prefix + artifactClaimsDir }

// ArtifactClaim names the replica downloading an artifact from upstream.
func (k Keys) ArtifactClaim(name string) string { return k.ArtifactClaims() + name }

// ArtifactHolders is the directory of which replica holds which bytes.
func (k Keys) ArtifactHolders() string { return k.Prefix + artifactHoldersDir }

// ArtifactHolder says that replica holds verified bytes of sha256hex.
func (k Keys) ArtifactHolder(sha256hex, replica string) string {
	return k.ArtifactHolders() + sha256hex + "/" + replica
}

// ArtifactProgresses is the directory of transfers under way.
func (k Keys) ArtifactProgresses() string { return k.Prefix + artifactProgressDir }

// ArtifactProgress is one replica's transfer of one artifact.
func (k Keys) ArtifactProgress(name, replica string) string {
	return k.ArtifactProgresses() + name + "/" + replica
}

// Match reports whether key is one the schema declares: each <placeholder>
// of a pattern stands for one non-empty path segment.
func (k Keys) Match(key string) bool {
	rest, ok := strings.CutPrefix(key, k.Prefix)
	if !ok {
		return false
	}
	got := strings.Split(rest, "/")
	for _, s := range Layout {
		want := strings.Split(s.Pattern, "/")
		if len(want) != len(got) {
			continue
		}
		match := true
		for i, w := range want {
			if got[i] == "" || (!strings.HasPrefix(w, "<") && w != got[i]) {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}
