package artifact

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/mayu-boot/mayu/pkg/state"
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
	// PreviousSecret, when set, returns the cluster secret before the last
	// rotation while it is still valid (nil otherwise): peers are accepted
	// with it too, so a rotation does not stop the copies under way.
	PreviousSecret func(ctx context.Context) ([]byte, error)
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

// sessionTTL is the TTL (seconds) of the session that holds this
// replica's claims, holder announcements and progress: a replica that
// dies stops being a source, and loses its claims, within it.
const sessionTTL = 5

// Pauses: between reconciliations without news, and before asking a peer
// (or upstream) that failed again.
const (
	resync  = 2 * time.Second
	backoff = 5 * time.Second
	// noSpaceBackoff: an artifact that did not fit this replica's cache
	// is tried again after this long (an operator may have made room).
	noSpaceBackoff = time.Minute
)

// Manager keeps this replica's cache in step with the catalogue: it
// follows the catalogue and the holders (etcd watches), downloads what it
// holds the claim for from upstream, fetches what it lacks from a peer
// that holds it, announces what it holds, serves its peers, and removes
// cache files no artifact references.
//
// What the HTTP handlers read (Lookup, List, Holders, Progress, Has) is in
// memory, kept current by the watches: no etcd request per boot request.
type Manager struct {
	o    Options
	cat  *catalogue
	log  *slog.Logger
	met  *metrics
	kick chan struct{}

	mu       sync.Mutex
	synced   bool
	records  map[string]entry               // by name
	holders  map[string]map[string]Holder   // by digest, then replica
	progress map[string]map[string]Progress // by name, then replica
	active   map[string]*transfer           // transfers under way, by partial key
	pinned   map[string]int                 // digests and partial keys GC must keep (an upload or a commit under way)
	retryAt  map[string]time.Time           // an upstream name or a digest+"/"+peer: not before
	sess     *concurrency.Session           // nil while this replica has none
	held     map[string]bool                // digests announced on sess
}

// transfer is a download under way into the partial file key.
type transfer struct {
	cancel context.CancelFunc
	name   string // the record it is for
	create int64  // the record's create revision (upstream)
	sha    string // the digest (peer)
}

// NewManager returns a Manager; Run starts it.
func NewManager(o Options) *Manager {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Transfers <= 0 {
		o.Transfers = 2
	}
	if o.HTTP == nil {
		o.HTTP = &http.Client{Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       90 * time.Second,
		}}
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Manager{
		o:        o,
		cat:      &catalogue{cli: o.Client, keys: state.Keys{Prefix: o.Prefix}, timeout: o.Timeout},
		log:      o.Log,
		met:      newMetrics(o.Registerer),
		kick:     make(chan struct{}, 1),
		records:  map[string]entry{},
		holders:  map[string]map[string]Holder{},
		progress: map[string]map[string]Progress{},
		active:   map[string]*transfer{},
		pinned:   map[string]int{},
		retryAt:  map[string]time.Time{},
	}
}

// wake makes the reconciler look again soon.
func (m *Manager) wake() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// Run follows the catalogue until ctx ends. It first rehashes the cache
// (Cache.VerifyAll): nothing found on disk is served or offered to peers
// before its digest has been checked again.
func (m *Manager) Run(ctx context.Context) {
	if m.o.PeerURL == "" {
		m.log.Error("this replica has no peer URL: its peers cannot fetch artifacts from it, nor can machines be sent to it")
	}
	if _, err := m.o.Cache.VerifyAll(); err != nil {
		m.log.Error("verifying the artifact cache failed", "err", err)
	}
	var wg sync.WaitGroup
	for _, f := range m.followers() {
		wg.Add(1)
		go func() { defer wg.Done(); f.Run(ctx, m.o.Client) }()
	}
	state.Retry(ctx, time.Second, func(err error) {
		m.log.Warn("the artifact session in etcd failed, retrying", "err", err)
	}, m.session)
	wg.Wait()
}

// session runs the reconciler on one etcd session until ctx ends or the
// session is lost; its transfers end with it (their partial files stay, to
// resume).
func (m *Manager) session(ctx context.Context) error {
	// As pkg/replica: the lease is granted under ctx, so that a stop during
	// an outage does not wait for etcd, and revoked at the end, so that
	// claims and holder keys go at once, not after the TTL.
	gctx, cancel := context.WithTimeout(ctx, m.o.Timeout)
	grant, err := m.o.Client.Grant(gctx, sessionTTL)
	cancel()
	if err != nil {
		return state.Unavailable("artifact session", err)
	}
	sess, err := concurrency.NewSession(m.o.Client, concurrency.WithLease(grant.ID),
		concurrency.WithContext(context.WithoutCancel(ctx)))
	if err != nil {
		return state.Unavailable("artifact session", err)
	}
	sctx, stop := context.WithCancel(ctx)
	var workers sync.WaitGroup
	defer func() {
		stop()
		workers.Wait()
		m.mu.Lock()
		m.sess, m.held = nil, nil
		m.mu.Unlock()
		sess.Orphan()
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		m.o.Client.Revoke(rctx, grant.ID)
		cancel()
	}()
	m.mu.Lock()
	m.sess, m.held = sess, map[string]bool{}
	m.mu.Unlock()
	tick := time.NewTicker(resync)
	defer tick.Stop()
	for {
		m.reconcile(sctx, sess, &workers)
		select {
		case <-ctx.Done():
			return nil
		case <-sess.Done():
			return errors.New("artifact session lease lost")
		case <-m.kick:
		case <-tick.C:
		}
	}
}

// followers keep the catalogue, the holders and the progress in memory.
func (m *Manager) followers() []state.Follower {
	keys := m.cat.keys
	broken := func(what string) func(error) {
		return func(err error) { m.log.Warn("following "+what+" failed, retrying", "err", err) }
	}
	return []state.Follower{{
		Key: keys.Artifacts(), Prefix: true, Broken: broken("the artifact catalogue"),
		Load: func(kvs []*mvccpb.KeyValue) {
			recs := map[string]entry{}
			for _, kv := range kvs {
				if e, ok := m.decode(kv); ok {
					recs[e.rec.Name] = e
				}
			}
			m.mu.Lock()
			m.records, m.synced = recs, true
			m.mu.Unlock()
			m.wake()
		},
		Change: func(ev *clientv3.Event) {
			name := strings.TrimPrefix(string(ev.Kv.Key), keys.Artifacts())
			if ev.Type == clientv3.EventTypeDelete {
				m.forget(name, ev.Kv.ModRevision)
			} else if e, ok := m.decode(ev.Kv); ok {
				m.apply(e)
			}
			m.wake()
		},
	}, {
		Key: keys.ArtifactHolders(), Prefix: true, Broken: broken("the artifact holders"),
		Load: func(kvs []*mvccpb.KeyValue) {
			hs := map[string]map[string]Holder{}
			for _, kv := range kvs {
				m.setHolder(hs, kv, false)
			}
			m.mu.Lock()
			m.holders = hs
			m.mu.Unlock()
			m.wake()
		},
		Change: func(ev *clientv3.Event) {
			m.mu.Lock()
			m.setHolder(m.holders, ev.Kv, ev.Type == clientv3.EventTypeDelete)
			m.mu.Unlock()
			m.wake()
		},
	}, {
		Key: keys.ArtifactProgresses(), Prefix: true, Broken: broken("the artifact transfers"),
		Load: func(kvs []*mvccpb.KeyValue) {
			ps := map[string]map[string]Progress{}
			for _, kv := range kvs {
				m.setProgress(ps, kv, false)
			}
			m.mu.Lock()
			m.progress = ps
			m.mu.Unlock()
		},
		Change: func(ev *clientv3.Event) {
			m.mu.Lock()
			m.setProgress(m.progress, ev.Kv, ev.Type == clientv3.EventTypeDelete)
			m.mu.Unlock()
		},
	}}
}

func (m *Manager) decode(kv *mvccpb.KeyValue) (entry, bool) {
	e, err := decodeRecord(kv)
	name := strings.TrimPrefix(string(kv.Key), m.cat.keys.Artifacts())
	if err == nil && e.rec.Name != name {
		err = fmt.Errorf("%s names artifact %q", kv.Key, e.rec.Name)
	}
	if err != nil {
		m.log.Error("an artifact record in etcd is unreadable; ignored", "err", err)
		return entry{}, false
	}
	return e, true
}

// apply puts a record read (or just written) in memory, unless memory
// already has a later version.
func (m *Manager) apply(e entry) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.records[e.rec.Name]; !ok || cur.mod <= e.mod {
		m.records[e.rec.Name] = e
	}
}

// forget drops a record deleted at revision rev.
func (m *Manager) forget(name string, rev int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.records[name]; ok && cur.mod <= rev {
		delete(m.records, name)
	}
}

func (m *Manager) setHolder(hs map[string]map[string]Holder, kv *mvccpb.KeyValue, deleted bool) {
	sha, replica, ok := splitTwo(string(kv.Key), m.cat.keys.ArtifactHolders())
	if !ok {
		return
	}
	if deleted {
		delete(hs[sha], replica)
		if len(hs[sha]) == 0 {
			delete(hs, sha)
		}
		return
	}
	var h Holder
	if err := jsonUnmarshal(kv.Value, &h); err != nil || h.PeerURL == "" {
		m.log.Error("an artifact holder key in etcd is unreadable; ignored", "key", string(kv.Key), "err", err)
		return
	}
	h.Replica = replica // the key says who, whatever the value claims
	if hs[sha] == nil {
		hs[sha] = map[string]Holder{}
	}
	hs[sha][replica] = h
}

func (m *Manager) setProgress(ps map[string]map[string]Progress, kv *mvccpb.KeyValue, deleted bool) {
	name, replica, ok := splitTwo(string(kv.Key), m.cat.keys.ArtifactProgresses())
	if !ok {
		return
	}
	if deleted {
		delete(ps[name], replica)
		if len(ps[name]) == 0 {
			delete(ps, name)
		}
		return
	}
	var p Progress
	if jsonUnmarshal(kv.Value, &p) != nil {
		return
	}
	p.Replica = replica
	if ps[name] == nil {
		ps[name] = map[string]Progress{}
	}
	ps[name][replica] = p
}

// Synced reports whether the catalogue has been read once.
func (m *Manager) Synced() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.synced
}

// Lookup returns the catalogue record of name, as last seen.
func (m *Manager) Lookup(name string) (Record, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.records[name]
	return e.rec, ok
}

// List returns every record, by name.
func (m *Manager) List() []Record {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Record, 0, len(m.records))
	for _, e := range m.records {
		out = append(out, e.rec)
	}
	slices.SortFunc(out, func(a, b Record) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Holders returns the live replicas (this one included) holding sha256hex.
func (m *Manager) Holders(sha256hex string) []Holder {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.holdersLocked(sha256hex)
}

func (m *Manager) holdersLocked(sha256hex string) []Holder {
	out := make([]Holder, 0, len(m.holders[sha256hex]))
	for _, h := range m.holders[sha256hex] {
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b Holder) int { return strings.Compare(a.Replica, b.Replica) })
	return out
}

// Progress returns the transfers under way of name, one per replica.
func (m *Manager) Progress(name string) []Progress {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Progress, 0, len(m.progress[name]))
	for _, p := range m.progress[name] {
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Progress) int { return strings.Compare(a.Replica, b.Replica) })
	return out
}

// Has reports whether this replica holds verified bytes of sha256hex.
func (m *Manager) Has(sha256hex string) bool { return m.o.Cache.Has(sha256hex) }

// Open opens this replica's verified bytes of sha256hex.
func (m *Manager) Open(sha256hex string) (*os.File, error) { return m.o.Cache.Open(sha256hex) }

// Lacking returns the names among needed (Ready in the catalogue) whose
// bytes this replica does not hold although some peer has held them for
// longer than grace: such a replica should not be ready.
func (m *Manager) Lacking(needed []string, grace time.Duration) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, name := range needed {
		e, ok := m.records[name]
		if !ok || e.rec.Status != Ready || m.o.Cache.Has(e.rec.SHA256) {
			continue
		}
		for r, h := range m.holders[e.rec.SHA256] {
			if r != m.o.Replica && time.Since(h.Since) > grace {
				out = append(out, name)
				break
			}
		}
	}
	return out
}

// Add puts a Pending record in the catalogue; one replica then claims and
// downloads it. ErrExists when the name is taken, ErrInvalid (wrapped,
// saying what) for a bad name, URL, digest or keyring.
func (m *Manager) Add(ctx context.Context, req AddRequest, who string) (Record, error) {
	invalid := func(format string, a ...any) (Record, error) {
		return Record{}, fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	if err := CheckName(req.Name); err != nil {
		return invalid("%v", err)
	}
	for _, u := range []struct{ what, url string }{{"url", req.URL}, {"digests url", req.DigestsURL}, {"signature url", req.SigURL}} {
		if u.url == "" && u.what != "url" {
			continue
		}
		if err := checkURL(u.url); err != nil {
			return invalid("%s: %v", u.what, err)
		}
	}
	if req.SHA256 == "" && req.DigestsURL == "" && req.SigURL == "" {
		return invalid("nothing to verify the download against: give a sha256, a signed digests file (with a keyring) or a detached signature (with a keyring)")
	}
	if req.SHA256 != "" {
		if err := CheckSHA256(req.SHA256); err != nil {
			return invalid("%v", err)
		}
	}
	if (req.DigestsURL != "" || req.SigURL != "") && req.Keyring == "" {
		return invalid("a digests file or a signature needs a keyring (the armored public keys it must be signed with)")
	}
	if req.Keyring != "" {
		if _, err := ParseKeyring([]byte(req.Keyring)); err != nil {
			return invalid("keyring: %v", err)
		}
	}
	r := Record{
		Name:    req.Name,
		SHA256:  req.SHA256,
		Source:  Source{URL: req.URL, DigestsURL: req.DigestsURL, SigURL: req.SigURL, Keyring: req.Keyring},
		AddedBy: who, AddedAt: time.Now().UTC(), Status: Pending,
	}
	e, err := m.cat.create(ctx, r)
	if err != nil {
		return Record{}, err
	}
	m.apply(e)
	m.wake()
	return r, nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q is not an http or https URL", s)
	}
	if u.Host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	// The record (URL included) is in etcd and shown to every viewer of
	// the admin API: no credentials there.
	if u.User != nil {
		return fmt.Errorf("%q holds credentials, which would be stored in etcd and shown by mayuctl: put the file where it can be fetched without them, or upload it (--file)", u.Redacted())
	}
	return nil
}

// Upload streams body (size bytes, -1 when unknown) into this replica's
// cache, verifies it (against sha256hex when not empty), and only then
// puts a Ready record in the catalogue. Nothing is held in memory.
func (m *Manager) Upload(ctx context.Context, name string, body io.Reader, size int64, sha256hex, who string) (Record, error) {
	if err := CheckName(name); err != nil {
		return Record{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if sha256hex != "" {
		if err := CheckSHA256(sha256hex); err != nil {
			return Record{}, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	if _, ok := m.Lookup(name); ok { // the transaction below decides; this spares streaming for nothing
		return Record{}, fmt.Errorf("%w: %s (names are immutable: a new version is a new name)", ErrExists, name)
	}
	if size >= 0 {
		if err := m.o.Cache.Fits(size); err != nil {
			m.met.refused.WithLabelValues(refusedNoSpace).Inc()
			return Record{}, err
		}
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	key := "upload-" + hex.EncodeToString(rnd[:])
	m.pin(key)
	defer m.unpin(key)
	p, err := m.o.Cache.Begin(key)
	if err != nil {
		return Record{}, err
	}
	n, err := io.Copy(p, body)
	if err == nil && size >= 0 && n != size {
		err = fmt.Errorf("%w: the upload ended after %d of %d bytes", ErrInvalid, n, size)
	}
	if err != nil {
		p.Discard()
		return Record{}, fmt.Errorf("upload of %s: %w", name, err)
	}
	got, _ := p.Hashes()
	want, verified := sha256hex, "sha256 given by the operator"
	if want == "" {
		want, verified = got, "sha256 of the upload"
	}
	if want != got {
		p.Discard()
		m.met.refused.WithLabelValues(refusedSHA256).Inc()
		return Record{}, fmt.Errorf("%w: %w: %s: the operator gave sha256 %s, the upload has %s; nothing stored", ErrInvalid, ErrDigest, name, want, got)
	}
	m.pin(want)
	defer m.unpin(want)
	if err := p.Commit(want); err != nil {
		return Record{}, fmt.Errorf("upload of %s: %w", name, err)
	}
	r := Record{Name: name, SHA256: want, Size: n, Source: Source{Uploaded: true}, Verified: verified,
		AddedBy: who, AddedAt: time.Now().UTC(), Status: Ready}
	r.ReadyAt = r.AddedAt
	e, err := m.cat.create(ctx, r)
	if err != nil {
		m.wake() // the bytes go unless another record names them
		return Record{}, err
	}
	m.apply(e)
	m.announceNow(ctx, want)
	m.wake()
	return r, nil
}

// Remove deletes name from the catalogue unless inUse(name) gives a
// reason (ErrInUse, wrapped with it); every replica then removes the bytes
// if no other name has the same digest.
func (m *Manager) Remove(ctx context.Context, name string, inUse func(name string) string) error {
	if err := CheckName(name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if inUse != nil {
		if why := inUse(name); why != "" {
			return fmt.Errorf("%w: %s: %s", ErrInUse, name, why)
		}
	}
	rev, err := m.cat.remove(ctx, name)
	if err != nil {
		return err
	}
	m.forget(name, rev)
	m.wake()
	return nil
}

func (m *Manager) pin(key string) {
	m.mu.Lock()
	m.pinned[key]++
	m.mu.Unlock()
}

func (m *Manager) unpin(key string) {
	m.mu.Lock()
	if m.pinned[key]--; m.pinned[key] <= 0 {
		delete(m.pinned, key)
	}
	m.mu.Unlock()
}
