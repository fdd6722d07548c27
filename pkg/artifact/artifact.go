// Package artifact is what mayu hands machines, kept as consistent as its
// state: an artifact (installer kernel, initrd, OS image) has a name and
// is identified by its SHA-256. The catalogue in etcd maps names to
// digests (catalogue.go); each replica keeps the bytes in a
// content-addressed cache in its data directory (cache.go), fetched once
// from upstream by the one replica that holds the claim (fetch.go, with
// the upstream's own signed digests checked in verify.go) and copied
// replica to replica (manager.go, peer.go). Nothing is served before its
// digest has been checked on this replica.
package artifact

import (
	"errors"
	"regexp"
	"time"

	"github.com/mayu-boot/mayu/pkg/config"
)

// Status of an artifact in the catalogue.
const (
	// Pending: added with a URL, not yet downloaded and verified by the
	// replica holding the claim.
	Pending = "pending"
	// Ready: some replica holds verified bytes; SHA256 and Size are final.
	Ready = "ready"
	// Failed: the download was refused (wrong digest, bad signature, too
	// large for the cache); Error says why. Nothing was stored. Remove the
	// artifact and add it again.
	Failed = "failed"
)

// Record is an artifact's entry in the catalogue, at
// <prefix>artifacts/<name>. Names are immutable: once SHA256 is set it
// never changes, and a new version is a new name.
type Record struct {
	Name string `json:"name"`
	// SHA256 (hex, lower case) identifies the bytes. Empty while Pending
	// when the upstream publishes no SHA-256 (Flatcar's DIGESTS list
	// SHA-512): the downloader computes it.
	SHA256 string `json:"sha256,omitempty"`
	// Size in bytes; 0 while unknown.
	Size   int64  `json:"size,omitempty"`
	Source Source `json:"source"`
	// Verified says how the bytes were verified, for people:
	// "sha256 given by the operator", "SHA512 from DIGESTS.asc signed by
	// 0123ABCD...", "detached signature by 0123ABCD...", "sha256 of the upload".
	Verified string    `json:"verified,omitempty"`
	AddedBy  string    `json:"addedBy"`
	AddedAt  time.Time `json:"addedAt"`
	Status   string    `json:"status"`
	Error    string    `json:"error,omitempty"`
	// ReadyAt is when the first replica held verified bytes.
	ReadyAt time.Time `json:"readyAt,omitzero"`
}

// Source is where an artifact came from.
type Source struct {
	// URL of the file upstream; empty for an upload.
	URL string `json:"url,omitempty"`
	// Uploaded: streamed through the admin API by an operator.
	Uploaded bool `json:"uploaded,omitempty"`
	// DigestsURL is a clearsigned digests file in Flatcar's format
	// (<file>.DIGESTS.asc); SigURL a detached OpenPGP signature of the
	// file itself (<file>.sig). Either needs Keyring.
	DigestsURL string `json:"digestsUrl,omitempty"`
	SigURL     string `json:"sigUrl,omitempty"`
	// Keyring holds the armored OpenPGP public keys the signature must
	// come from (the operator's --keyring file).
	Keyring string `json:"keyring,omitempty"`
	// SHA512 (hex) is the digest the signed DIGESTS file gave.
	SHA512 string `json:"sha512,omitempty"`
}

// Holder is a replica that holds an artifact's verified bytes, at
// <prefix>artifact-holders/<sha256>/<replica> on that replica's session
// lease (a dead replica stops being a source by itself).
type Holder struct {
	Replica string `json:"replica"`
	// PeerURL is the replica's own base URL (http://<own address>:<http
	// port>), where peers fetch from and machines are redirected to.
	PeerURL string `json:"peerUrl"`
	// Since is when the replica first held the bytes.
	Since time.Time `json:"since"`
}

// Progress of one replica's transfer, at
// <prefix>artifact-progress/<name>/<replica> on its session lease.
type Progress struct {
	Replica string    `json:"replica"`
	From    string    `json:"from"` // "upstream" or the peer replica's name
	Bytes   int64     `json:"bytes"`
	Total   int64     `json:"total"` // 0 when unknown
	Updated time.Time `json:"updated"`
}

var sha256RE = regexp.MustCompile(`^[0-9a-f]{64}$`)

// CheckName refuses a name that cannot be a key segment or a file name.
func CheckName(name string) error {
	if !config.ArtifactNameRE.MatchString(name) {
		return errors.New("artifact name must be 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit")
	}
	return nil
}

// CheckSHA256 refuses anything but 64 lower-case hex digits.
func CheckSHA256(hex string) error {
	if !sha256RE.MatchString(hex) {
		return errors.New("sha256 must be 64 lower-case hex digits")
	}
	return nil
}

// ETag is the entity tag every replica answers for the same bytes.
func ETag(sha256hex string) string { return `"sha256:` + sha256hex + `"` }
