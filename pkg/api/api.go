// Package api is the contract of mayu's admin API: the wire types every
// route sends and receives, and a client. It links nothing of the server
// (no etcd, gRPC, DHCP or Prometheus), so that mayuctl and any other
// client build from the wire types alone; pkg/admin serves them.
//
//	GET    /api/v1/machines[?limit=&continue=]  MachineList, one page
//	POST   /api/v1/machines                  AddRequest → machine.Machine
//	GET    /api/v1/machines/{id}             machine.Machine
//	DELETE /api/v1/machines/{id}[?force=true] Deleted
//	POST   /api/v1/machines/{id}/reinstall   machine.Machine
//	POST   /api/v1/machines/{id}/metadata    {"key":"value"} → machine.Machine
//	POST   /api/v1/machines/{id}/macs        AddMACRequest → machine.Machine
//	POST   /api/v1/secret/rotate             SecretRotation
//	GET    /api/v1/config                    ConfigView
//	GET    /api/v1/leases                    []Lease
//	GET    /api/v1/replicas                  ReplicasView
//	GET    /api/v1/watch                     Event, one JSON value a line
//	GET    /api/v1/audit[?machine=ID&limit=N] AuditList, newest first
//	GET    /api/v1/artifacts                 ArtifactList
//	POST   /api/v1/artifacts                 AddArtifactRequest → Artifact (pending)
//	GET    /api/v1/artifacts/{name}          Artifact
//	PUT    /api/v1/artifacts/{name}[?sha256=HEX] the bytes (application/octet-stream) → Artifact (ready)
//	DELETE /api/v1/artifacts/{name}          Deleted
//
// Every error answer is an ErrorBody.
package api

import (
	"net/netip"
	"time"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/machine"
)

// MachineList is the answer to GET /api/v1/machines.
type MachineList struct {
	Machines []*machine.Machine `json:"machines"`
	// Corrupt are records that could not be read; they are reported rather
	// than failing the whole list so one bad key does not blind the operator.
	Corrupt []CorruptRecord `json:"corrupt"`
	// Continue, on every page but the last, is the token that asks for
	// the next one (?continue=). The pages of one listing are read at
	// one etcd revision.
	Continue string `json:"continue,omitempty"`
}

// CorruptRecord is an etcd key holding a machine record mayu cannot read.
type CorruptRecord struct {
	Key   string `json:"key"`
	Error string `json:"error"`
}

// AddRequest is the body of POST /api/v1/machines.
type AddRequest struct {
	ID   string   `json:"id"`
	MACs []string `json:"macs,omitempty"`
}

// AddMACRequest is the body of POST /api/v1/machines/{id}/macs.
type AddMACRequest struct {
	MAC string `json:"mac"`
}

// SecretRotation is the answer to POST /api/v1/secret/rotate. It never
// holds a secret.
type SecretRotation struct {
	Rotated time.Time `json:"rotated"`
	// PreviousValidUntil is when tokens made with the previous secret
	// stop opening anything (cluster.install.timeout after the rotation);
	// zero if there was none.
	PreviousValidUntil time.Time `json:"previousValidUntil,omitzero"`
	Replica            string    `json:"replica"`
}

// ConfigView is the answer to GET /api/v1/config: the cluster
// configuration the DHCP leader publishes (or, with no leader, the
// answering replica's own).
type ConfigView struct {
	// Hash of the cluster part.
	Hash string `json:"hash" yaml:"hash"`
	// Leader that publishes it; empty when no leader publishes one.
	Leader string `json:"leader" yaml:"leader"`
	// Replica that answered, its own hash, and whether they agree.
	Replica     string         `json:"replica" yaml:"replica"`
	ReplicaHash string         `json:"replicaHash" yaml:"replica_hash"`
	Matches     bool           `json:"matches" yaml:"matches"`
	Cluster     config.Cluster `json:"cluster" yaml:"cluster"`
}

// Lease is one DHCP lease in the answer to GET /api/v1/leases.
type Lease struct {
	IP       netip.Addr `json:"ip"`
	MAC      string     `json:"mac"`
	Expiry   time.Time  `json:"expiry"`
	Hostname string     `json:"hostname,omitempty"` // as the client sent it
	Leader   string     `json:"leader"`             // the replica that granted it
	Machine  string     `json:"machine,omitempty"`  // the machine its MAC belongs to
	Expired  bool       `json:"expired"`
}

// Event is one line of GET /api/v1/watch: a machine changed.
type Event struct {
	Time      time.Time     `json:"time"`
	ID        string        `json:"id"`
	State     machine.State `json:"state"`
	PrevState machine.State `json:"prevState,omitempty"`
	Replica   string        `json:"replica,omitempty"`
	Reason    string        `json:"reason,omitempty"`
	MACs      []string      `json:"macs,omitempty"`
	Deleted   bool          `json:"deleted,omitempty"`
}

// ReplicasView is the answer to GET /api/v1/replicas.
type ReplicasView struct {
	Leader        string `json:"leader"` // empty: no DHCP leader now
	PublishedHash string `json:"publishedHash"`
	// PublishedFiles are the leader's file digests (Replica.Files).
	PublishedFiles map[string]string `json:"publishedFiles,omitempty"`
	Replicas       []Replica         `json:"replicas"`
}

// Replica is one announced replica: what it announces, whether it leads
// DHCP now and whether its cluster configuration is the published one.
type Replica struct {
	Name          string    `json:"name"`
	Version       string    `json:"version"`
	ConfigHash    string    `json:"configHash"`
	Advertise     string    `json:"advertise"`
	HTTP          string    `json:"http"`
	Admin         string    `json:"admin"`
	Metrics       string    `json:"metrics"`
	DHCP          bool      `json:"dhcp"` // takes part in the election
	Started       time.Time `json:"started"`
	Leader        bool      `json:"leader"`
	ConfigMatches bool      `json:"configMatches"`
	// MissingArtifacts are the artifacts the configuration names, held by
	// some replica, that this one does not hold (yet).
	MissingArtifacts []string `json:"missingArtifacts,omitempty"`
	// Files are the SHA-256 (hex) of the local files the replica serves,
	// by the configuration key naming them; ConfigHash covers them.
	Files map[string]string `json:"files,omitempty"`
	// FilesDiffer are the keys of the files whose digest differs from
	// the leader's (one only one of them has included).
	FilesDiffer []string `json:"filesDiffer,omitempty"`
}

// AddArtifactRequest is POST /api/v1/artifacts: one replica downloads URL
// and verifies it against SHA256, or the clearsigned digests file
// DigestsURL, or the detached signature SigURL (the last two with the
// armored public keys in Keyring).
type AddArtifactRequest struct {
	Name       string `json:"name"`
	URL        string `json:"url"`
	SHA256     string `json:"sha256,omitempty"`
	DigestsURL string `json:"digestsUrl,omitempty"`
	SigURL     string `json:"sigUrl,omitempty"`
	Keyring    string `json:"keyring,omitempty"`
}

// ArtifactList is the answer to GET /api/v1/artifacts.
type ArtifactList struct {
	Artifacts []Artifact `json:"artifacts"`
	// Replicas are the replicas announced now, so a client can tell who
	// lacks what.
	Replicas []string `json:"replicas"`
}

// Artifact is an artifact of the catalogue, where its bytes are and
// what uses it.
type Artifact struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256,omitempty"`
	Size   int64  `json:"size,omitempty"`
	// Status is pending (not downloaded yet), ready or failed.
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	URL    string `json:"url,omitempty"`
	// Uploaded: streamed through the admin API.
	Uploaded   bool               `json:"uploaded,omitempty"`
	DigestsURL string             `json:"digestsUrl,omitempty"`
	SigURL     string             `json:"sigUrl,omitempty"`
	SHA512     string             `json:"sha512,omitempty"`
	Verified   string             `json:"verified,omitempty"`
	AddedBy    string             `json:"addedBy"`
	AddedAt    time.Time          `json:"addedAt"`
	ReadyAt    time.Time          `json:"readyAt,omitzero"`
	Holders    []ArtifactHolder   `json:"holders"`
	Progress   []ArtifactProgress `json:"progress"`
	// UsedBy are the configuration keys that name it.
	UsedBy []string `json:"usedBy"`
}

// ArtifactHolder is a replica holding an artifact's verified bytes.
type ArtifactHolder struct {
	Replica string    `json:"replica"`
	PeerURL string    `json:"peerUrl"`
	Since   time.Time `json:"since"`
}

// ArtifactProgress is a transfer under way.
type ArtifactProgress struct {
	Replica string    `json:"replica"`
	From    string    `json:"from"`
	Bytes   int64     `json:"bytes"`
	Total   int64     `json:"total"`
	Updated time.Time `json:"updated"`
}

// Deleted is the answer to DELETE /api/v1/machines/{id}.
type Deleted struct {
	ID string `json:"deleted"`
}

// ErrorBody is every error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

// Roles of the admin API's callers.
const (
	RoleViewer = "viewer" // reads: GET (list, status, watch, audit, …)
	RoleAdmin  = "admin"  // any change
)

// How a caller of the admin API was identified (AuditEntry.Via).
const (
	ViaToken       = "token"
	ViaCertificate = "certificate"
)

// AuditEntry is one change made (or refused) through the admin API, as
// the audit trail in etcd keeps it.
type AuditEntry struct {
	// ID is its key under audit/: the time and a random suffix.
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	// Who is the token's name or the client certificate's subject, as Via
	// says; Role is the role it had.
	Who  string `json:"who"`
	Via  string `json:"via"`
	Role string `json:"role"`
	// Remote is the caller's address; Replica the replica that answered.
	Remote  string `json:"remote"`
	Replica string `json:"replica"`
	// Method, Route (the route's template) and Path (as sent) say what was
	// asked; Machine is the machine it named, if any.
	Method  string `json:"method"`
	Route   string `json:"route"`
	Path    string `json:"path"`
	Machine string `json:"machine,omitempty"`
	// Summary is the start of the query and the request body.
	Summary string `json:"summary,omitempty"`
	// Status is the HTTP status of the answer; 0 means the result was never
	// recorded (the change started; the replica failed or etcd went away).
	Status int `json:"status"`
}

// AuditList is the answer to GET /api/v1/audit.
type AuditList struct {
	Entries []AuditEntry `json:"entries"`
}
