package artifact

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Errors of the catalogue, for the admin API to map to statuses.
var (
	ErrExists   = errors.New("artifact exists") // names are immutable
	ErrNotFound = errors.New("no such artifact")
	ErrInUse    = errors.New("artifact in use")
	ErrInvalid  = errors.New("invalid artifact request")
)

// Options of a Manager.
type Options struct {
	Client  *clientv3.Client
	Prefix  string        // node.etcd.prefix
	Timeout time.Duration // one etcd request
	Replica string        // node.name
	// PeerURL is this replica's own base URL, announced to its peers
	// (never the shared virtual address).
	PeerURL string
	Cache   *Cache
	// Secret returns the cluster secret; peers authenticate with an HMAC
	// under it.
	Secret func(ctx context.Context) ([]byte, error)
	// Transfers bounds this replica's concurrent downloads. Default 2.
	Transfers int
	// HTTP is the client for upstream and peers (default: one with
	// sensible dial and header timeouts, no overall timeout).
	HTTP       *http.Client
	Log        *slog.Logger
	Registerer prometheus.Registerer
}

// AddRequest is `mayuctl artifact add NAME --url ...`.
type AddRequest struct {
	Name       string `json:"name"`
	URL        string `json:"url"`
	SHA256     string `json:"sha256,omitempty"`
	DigestsURL string `json:"digestsUrl,omitempty"`
	SigURL     string `json:"sigUrl,omitempty"`
	Keyring    string `json:"keyring,omitempty"` // armored public keys
}

// Manager keeps this replica's cache in step with the catalogue: it
// follows the catalogue and the holders (etcd watches), downloads what it
// holds the claim for from upstream, fetches what it lacks from a peer
// that holds it, announces what it holds, serves its peers, and removes
// cache files no artifact references.
type Manager struct {
	// SKELETON: helper B fills this in.
}

// NewManager returns a Manager; Run starts it.
func NewManager(o Options) *Manager { panic("skeleton") }

// Run follows the catalogue until ctx ends.
func (m *Manager) Run(ctx context.Context) { panic("skeleton") }

// Synced reports whether the catalogue has been read once.
func (m *Manager) Synced() bool { panic("skeleton") }

// Lookup returns the catalogue record of name, as last seen.
func (m *Manager) Lookup(name string) (Record, bool) { panic("skeleton") }

// List returns every record, by name.
func (m *Manager) List() []Record { panic("skeleton") }

// Holders returns the live replicas (this one included) holding sha256hex.
func (m *Manager) Holders(sha256hex string) []Holder { panic("skeleton") }

// Progress returns the transfers under way of name, one per replica.
func (m *Manager) Progress(name string) []Progress { panic("skeleton") }

// Has reports whether this replica holds verified bytes of sha256hex.
func (m *Manager) Has(sha256hex string) bool { panic("skeleton") }

// Open opens this replica's verified bytes of sha256hex.
func (m *Manager) Open(sha256hex string) (*os.File, error) { panic("skeleton") }

// Lacking returns the names among needed (Ready in the catalogue) whose
// bytes this replica does not hold although some peer has held them for
// longer than grace: such a replica should not be ready.
func (m *Manager) Lacking(needed []string, grace time.Duration) []string { panic("skeleton") }

// Add puts a Pending record in the catalogue; one replica then claims and
// downloads it. ErrExists when the name is taken, ErrInvalid (wrapped,
// saying what) for a bad name, URL, digest or keyring.
func (m *Manager) Add(ctx context.Context, req AddRequest, who string) (Record, error) { panic("skeleton") }

// Upload streams body (size bytes, -1 when unknown) into this replica's
// cache, verifies it (against sha256hex when not empty), and only then
// puts a Ready record in the catalogue. Nothing is held in memory.
func (m *Manager) Upload(ctx context.Context, name string, body io.Reader, size int64, sha256hex, who string) (Record, error) {
	panic("skeleton")
}

// Remove deletes name from the catalogue unless inUse(name) gives a
// reason (ErrInUse, wrapped with it); every replica then removes the bytes
// if no other name has the same digest.
func (m *Manager) Remove(ctx context.Context, name string, inUse func(name string) string) error {
	panic("skeleton")
}

// PeerHandler serves GET and HEAD /peer/artifacts/{sha256} to peer
// replicas that authenticate (Authorization: Mayu-Peer ...), with Range.
func (m *Manager) PeerHandler() http.Handler { panic("skeleton") }
