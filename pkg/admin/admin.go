// Package admin is mayu's admin API: JSON over HTTP, every call behind a
// bearer token. It is a thin adapter over the registry; mayuctl (and curl)
// are its clients.
//
//	GET    /api/v1/machines                  list, with the corrupt records skipped
//	POST   /api/v1/machines                  pre-register {"id":..., "macs":[...]}
//	GET    /api/v1/machines/{id}             one machine
//	DELETE /api/v1/machines/{id}             delete, freeing its address and profile slot
//	POST   /api/v1/machines/{id}/reinstall   back to configured
//	POST   /api/v1/machines/{id}/metadata    {"key":"value"}; "" deletes the key
//	GET    /api/v1/config                    the cluster config this replica publishes
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/status"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/dhcp"
	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/identity"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/metrics"
	"github.com/mayu-boot/mayu/pkg/registry"
	"github.com/mayu-boot/mayu/pkg/replica"
)

// Limits on what an operator may send.
const (
	// maxBody bounds every request body; the largest legitimate one (a
	// metadata update) is far smaller.
	maxBody = 64 << 10
	// maxMetadataValue keeps one value from bloating the machine record,
	// which every replica reads on every boot of that machine.
	maxMetadataValue = 1024
)

// metadataKey is what a metadata key must look like: it ends up in
// templates and shell scripts, so it is kept to a safe alphabet.
var metadataKey = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._/-]{0,62}$`)

// Options configure the admin API.
type Options struct {
	Registry *registry.Registry
	// Config is this replica's configuration; /api/v1/config shows its
	// cluster part, secrets redacted.
	Config *config.Config
	// Token is the bearer token every call must carry. Empty refuses every
	// call: an admin API without credentials is never served.
	Token string
	Log   *slog.Logger
	// Etcd and Prefix reach the replicas' announcements and the leader's
	// published configuration.
	Etcd   *clientv3.Client
	Prefix string
	// Registerer is where the HTTP request metrics go (nil: nowhere).
	Registerer prometheus.Registerer
}

// MachineList is the answer to GET /api/v1/machines.
type MachineList struct {
	Machines []*machine.Machine `json:"machines"`
	// Corrupt are records that could not be read; they are reported rather
	// than failing the whole list so one bad key does not blind the operator.
	Corrupt []CorruptRecord `json:"corrupt"`
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

// LeaseView is one DHCP lease in the answer to GET /api/v1/leases.
type LeaseView struct {
	dhcp.Lease
	Machine string `json:"machine,omitempty"` // the machine its MAC belongs to
	Expired bool   `json:"expired"`
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
	Leader        string        `json:"leader"` // empty: no DHCP leader now
	PublishedHash string        `json:"publishedHash"`
	Replicas      []ReplicaView `json:"replicas"`
}

// ReplicaView is one announced replica.
type ReplicaView struct {
	replica.Info
	Leader        bool `json:"leader"`
	ConfigMatches bool `json:"configMatches"`
}

// Deleted is the answer to DELETE /api/v1/machines/{id}.
type Deleted struct {
	ID string `json:"deleted"`
}

// ErrorBody is every error answer.
type ErrorBody struct {
	Error string `json:"error"`
}

type api struct {
	reg    *registry.Registry
	cfg    *config.Config
	log    *slog.Logger
	etcd   *clientv3.Client
	prefix string
}

// New returns the admin API handler.
func New(o Options) http.Handler {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if o.Token == "" {
		log.Warn("admin API has no token configured: every call is refused (set node.admin_token_file)")
	}
	a := &api{reg: o.Registry, cfg: o.Config, log: log, etcd: o.Etcd, prefix: o.Prefix}

	r := mux.NewRouter()
	metrics.InstrumentRouter(r, o.Registerer)
	// Match on the escaped path so that an id like "..%2Fx" reaches the
	// handler as one segment and is refused by identity.Check. No path
	// cleaning either: "machines/.." is refused as an id rather than
	// redirected to some other route.
	r.UseEncodedPath()
	r.SkipClean(true)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such admin API route %s %s (the API lives under /api/v1/)", r.Method, r.URL.Path))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s", r.Method, r.URL.Path))
	})
	// Full paths rather than a subrouter: mux answers 405 for a wrong
	// method only on routes of the router itself.
	r.HandleFunc("/api/v1/machines", a.list).Methods(http.MethodGet)
	r.HandleFunc("/api/v1/machines", a.add).Methods(http.MethodPost)
	r.HandleFunc("/api/v1/machines/{id}", a.get).Methods(http.MethodGet)
	r.HandleFunc("/api/v1/machines/{id}", a.delete).Methods(http.MethodDelete)
	r.HandleFunc("/api/v1/machines/{id}/reinstall", a.reinstall).Methods(http.MethodPost)
	r.HandleFunc("/api/v1/machines/{id}/metadata", a.setMetadata).Methods(http.MethodPost)
	r.HandleFunc("/api/v1/config", a.config).Methods(http.MethodGet)
	r.HandleFunc("/api/v1/replicas", a.replicas).Methods(http.MethodGet)
	r.HandleFunc("/api/v1/leases", a.leases).Methods(http.MethodGet)
	r.HandleFunc("/api/v1/watch", a.watch).Methods(http.MethodGet)

	// Authentication wraps the whole router, so even an unknown route says
	// nothing to a caller without the token.
	return requireToken(o.Token, r)
}

// requireToken refuses every request that does not carry the bearer token.
func requireToken(token string, next http.Handler) http.Handler {
	// Comparing digests keeps the comparison constant-time in the token's
	// length too.
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="mayu"`)
		if token == "" {
			writeError(w, http.StatusUnauthorized, "this mayu replica has no admin token configured, so its admin API refuses every call: set node.admin_token_file in its config and restart it")
			return
		}
		got, ok := bearer(r.Header.Get("Authorization"))
		if !ok {
			writeError(w, http.StatusUnauthorized, "authentication required: send the admin token (the content of node.admin_token_file) as \"Authorization: Bearer <token>\"")
			return
		}
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			writeError(w, http.StatusUnauthorized, "the admin token was refused: send the content of node.admin_token_file as \"Authorization: Bearer <token>\"")
			return
		}
		w.Header().Del("WWW-Authenticate")
		next.ServeHTTP(w, r)
	})
}

// bearer extracts the token of an Authorization header; the scheme is
// case-insensitive (RFC 6750).
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

func (a *api) list(w http.ResponseWriter, r *http.Request) {
	ms, bad, err := a.reg.List(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	// Empty arrays rather than null, so clients need no special case.
	out := MachineList{Machines: ms, Corrupt: []CorruptRecord{}}
	if out.Machines == nil {
		out.Machines = []*machine.Machine{}
	}
	for _, c := range bad {
		out.Corrupt = append(out.Corrupt, CorruptRecord{Key: c.Key, Error: c.Error()})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) get(w http.ResponseWriter, r *http.Request) {
	id, ok := machineID(w, r)
	if !ok {
		return
	}
	m, err := a.reg.Get(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, m)
}

func (a *api) add(w http.ResponseWriter, r *http.Request) {
	var req AddRequest
	if !decodeBody(w, r, &req) {
		return
	}
	if err := identity.Check(req.ID); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// Normalise and de-duplicate here: the registry writes one index key
	// per MAC in a single transaction, and etcd refuses a transaction that
	// puts the same key twice.
	var macs []string
	seen := map[string]bool{}
	for _, s := range req.MACs {
		mac, err := identity.NormalizeMAC(s)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		if !seen[mac] {
			seen[mac] = true
			macs = append(macs, mac)
		}
	}
	m, created, err := a.reg.Register(r.Context(), registry.Registration{ID: req.ID, MACs: macs, Preregistered: true})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	if !created {
		writeError(w, http.StatusConflict, fmt.Sprintf("machine %s is already registered (state %s); `mayuctl delete %s` first to register it afresh", m.ID, m.State, m.ID))
		return
	}
	a.log.Info("machine added by an operator", "id", m.ID, "address", m.InternalAddr, "profile", m.Profile, "macs", m.MACs, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusCreated, m)
}

func (a *api) reinstall(w http.ResponseWriter, r *http.Request) {
	id, ok := machineID(w, r)
	if !ok {
		return
	}
	replica := a.reg.Replica()
	// Reinstall answers ErrUnchanged for a machine already configured; the
	// registry then writes nothing and returns it, which is success here.
	m, err := a.reg.Update(r.Context(), id, func(m *machine.Machine) error {
		return m.Reinstall(replica, time.Now())
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("machine state changed", "id", id, "mac", strings.Join(m.MACs, ","), "state", m.State, "replica", a.reg.Replica(),
		"reason", "reinstall requested", "generation", m.Generation, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, m)
}

func (a *api) setMetadata(w http.ResponseWriter, r *http.Request) {
	id, ok := machineID(w, r)
	if !ok {
		return
	}
	var kv map[string]string
	if !decodeBody(w, r, &kv) {
		return
	}
	if len(kv) == 0 {
		writeError(w, http.StatusBadRequest, `the body sets no metadata: send {"key":"value"} (an empty value deletes the key)`)
		return
	}
	for k, v := range kv {
		if !metadataKey.MatchString(k) {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("metadata key %q is not valid: it must match %s", clip(k), metadataKey))
			return
		}
		if len(v) > maxMetadataValue {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("the value of metadata key %q is %d bytes; at most %d are allowed", k, len(v), maxMetadataValue))
			return
		}
	}
	m, err := a.reg.Update(r.Context(), id, func(m *machine.Machine) error {
		changed := false
		for k, v := range kv {
			old, had := m.Metadata[k]
			switch {
			case v == "" && had:
				delete(m.Metadata, k)
				changed = true
			case v != "" && (!had || old != v):
				m.Metadata[k] = v
				changed = true
			}
		}
		if !changed {
			return machine.ErrUnchanged
		}
		return nil
	})
	if err != nil {
		a.fail(w, r, err)
		return
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	// Keys only: values may be anything an operator chose to store.
	a.log.Info("metadata changed", "id", id, "keys", keys, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, m)
}

func (a *api) delete(w http.ResponseWriter, r *http.Request) {
	id, ok := machineID(w, r)
	if !ok {
		return
	}
	// Deleting an installed machine forgets that it is installed: its next
	// network boot installs it again and its address goes to another
	// machine. That takes an explicit force.
	if r.URL.Query().Get("force") != "true" {
		m, err := a.reg.Get(r.Context(), id)
		var corrupt *registry.CorruptError
		if err != nil && !errors.As(err, &corrupt) {
			a.fail(w, r, err)
			return
		}
		if err == nil && m.HasBeenInstalled() {
			writeError(w, http.StatusConflict, fmt.Sprintf("machine %s is %s: deleting it lets its next network boot install it again and frees its address %s for another machine; use `mayuctl delete --force %s` if that is what you want", id, m.State, m.InternalAddr, id))
			return
		}
	}
	if err := a.reg.Delete(r.Context(), id); err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("machine deleted by an operator", "id", id, "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, Deleted{ID: id})
}

func (a *api) config(w http.ResponseWriter, r *http.Request) {
	if a.cfg == nil {
		writeError(w, http.StatusServiceUnavailable, "this replica was started without a configuration to show")
		return
	}
	own := a.cfg.ClusterHash()
	view := ConfigView{Hash: own, Replica: a.cfg.Node.Name, ReplicaHash: own, Matches: true, Cluster: a.cfg.Redacted()}
	if a.etcd != nil {
		p, err := replica.ReadPublished(r.Context(), a.etcd, a.prefix)
		if err != nil {
			a.fail(w, r, fmt.Errorf("read the published configuration: %w%w", err, registry.ErrUnavailable))
			return
		}
		if p != nil {
			view.Hash, view.Leader, view.Cluster, view.Matches = p.Hash, p.Replica, p.Cluster, p.Hash == own
		}
	}
	writeJSON(w, http.StatusOK, view)
}

func (a *api) replicas(w http.ResponseWriter, r *http.Request) {
	if a.etcd == nil {
		writeError(w, http.StatusServiceUnavailable, "this replica was started without etcd")
		return
	}
	list, err := replica.List(r.Context(), a.etcd, a.prefix)
	if err == nil {
		var view ReplicasView
		view.Leader, err = election.Leader(r.Context(), a.etcd, a.prefix)
		var p *replica.Published
		if err == nil {
			p, err = replica.ReadPublished(r.Context(), a.etcd, a.prefix)
		}
		if err == nil {
			if p != nil {
				view.PublishedHash = p.Hash
			}
			view.Replicas = []ReplicaView{}
			for _, i := range list {
				view.Replicas = append(view.Replicas, ReplicaView{Info: i, Leader: i.Name == view.Leader,
					ConfigMatches: p == nil || p.Hash == i.ConfigHash})
			}
			writeJSON(w, http.StatusOK, view)
			return
		}
	}
	a.fail(w, r, fmt.Errorf("read the replicas: %w%w", err, registry.ErrUnavailable))
}

// machineID returns the {id} of the route, refusing a malformed one with
// 400 before it reaches etcd.
func machineID(w http.ResponseWriter, r *http.Request) (string, bool) {
	id, err := url.PathUnescape(mux.Vars(r)["id"])
	if err == nil {
		err = identity.Check(id)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return "", false
	}
	return id, true
}

// decodeBody reads one JSON value of at most maxBody bytes into v,
// refusing unknown fields so a typo is an error rather than ignored.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil && dec.More() {
		err = errors.New("unexpected data after the JSON value")
	}
	var tooBig *http.MaxBytesError
	switch {
	case err == nil:
		return true
	case errors.As(err, &tooBig):
		writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("the request body is larger than %d bytes", maxBody))
	case errors.Is(err, io.EOF):
		writeError(w, http.StatusBadRequest, "the request needs a JSON body")
	default:
		writeError(w, http.StatusBadRequest, "the request body is not valid: "+err.Error())
	}
	return false
}

// fail turns a registry error into an answer.
func (a *api) fail(w http.ResponseWriter, r *http.Request, err error) {
	var (
		corrupt    *registry.CorruptError
		macTaken   *registry.MACTakenError
		transition *machine.TransitionError
	)
	switch {
	case errors.Is(err, registry.ErrNotFound):
		id, _ := url.PathUnescape(mux.Vars(r)["id"])
		writeError(w, http.StatusNotFound, fmt.Sprintf("machine %s is not registered (`mayuctl list` shows the machines that are)", id))
	case errors.As(err, &corrupt):
		a.log.Error("corrupt machine record", "key", corrupt.Key, "err", corrupt.Err)
		writeError(w, http.StatusInternalServerError, corrupt.Error())
	case errors.As(err, &macTaken), errors.As(err, &transition),
		errors.Is(err, registry.ErrExhausted), errors.Is(err, registry.ErrExists):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, registry.ErrConflict):
		writeError(w, http.StatusConflict, err.Error())
	case r.Context().Err() != nil:
		// The caller went away; nobody reads the answer.
		writeError(w, http.StatusServiceUnavailable, "request canceled")
	case storeUnavailable(err):
		a.log.Warn("admin call failed: etcd unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusServiceUnavailable, err.Error())
	default:
		a.log.Error("admin call failed", "method", r.Method, "path", r.URL.Path, "err", err)
		writeError(w, http.StatusInternalServerError, err.Error())
	}
}

// storeUnavailable reports whether err came from etcd rather than from the
// request: the registry does not mark these, so recognise what clientv3
// returns (its ContextError: a server error, a gRPC status, or the request
// timeout).
func storeUnavailable(err error) bool {
	if errors.Is(err, registry.ErrUnavailable) {
		return true
	}
	var etcdErr rpctypes.EtcdError
	if errors.As(err, &etcdErr) {
		return true
	}
	if _, ok := status.FromError(err); ok {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, context.Canceled) || // a closed etcd client
		errors.Is(err, clientv3.ErrNoAvailableEndpoints)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ") // readable with plain curl
	// Never rendered as HTML (nosniff above), so "<secret>" may stay
	// readable instead of becoming \u003csecret\u003e.
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client is gone; nothing to tell it
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, ErrorBody{Error: msg})
}

// clip keeps hostile input from flooding an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

func (a *api) leases(w http.ResponseWriter, r *http.Request) {
	if a.etcd == nil {
		writeError(w, http.StatusServiceUnavailable, "this replica was started without etcd")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()
	resp, err := a.etcd.Get(ctx, a.prefix+"leases/", clientv3.WithPrefix())
	if err != nil {
		a.fail(w, r, fmt.Errorf("read the leases: %w%w", err, registry.ErrUnavailable))
		return
	}
	macs, err := a.etcd.Get(ctx, a.prefix+"macs/", clientv3.WithPrefix())
	if err != nil {
		a.fail(w, r, fmt.Errorf("read the MAC index: %w%w", err, registry.ErrUnavailable))
		return
	}
	owners := map[string]string{}
	for _, kv := range macs.Kvs {
		var o struct{ Machine string }
		if json.Unmarshal(kv.Value, &o) == nil {
			owners[strings.TrimPrefix(string(kv.Key), a.prefix+"macs/")] = o.Machine
		}
	}
	now := time.Now()
	out := []LeaseView{}
	for _, kv := range resp.Kvs {
		var l dhcp.Lease
		if json.Unmarshal(kv.Value, &l) != nil || !l.IP.IsValid() {
			continue // reported by the leader when it loads leases
		}
		out = append(out, LeaseView{Lease: l, Machine: owners[l.MAC], Expired: !now.Before(l.Expiry)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	writeJSON(w, http.StatusOK, out)
}

// watch streams machine changes as JSON lines (an etcd watch on the
// machine records) until the client goes away.
func (a *api) watch(w http.ResponseWriter, r *http.Request) {
	if a.etcd == nil {
		writeError(w, http.StatusServiceUnavailable, "this replica was started without etcd")
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming is not supported here")
		return
	}
	dir := a.prefix + "machines/"
	ctx := clientv3.WithRequireLeader(r.Context())
	ch := a.etcd.Watch(ctx, dir, clientv3.WithPrefix(), clientv3.WithPrevKV())
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	enc := json.NewEncoder(w)
	for resp := range ch {
		if err := resp.Err(); err != nil {
			enc.Encode(ErrorBody{Error: "etcd watch ended: " + err.Error()})
			return
		}
		for _, ev := range resp.Events {
			e := Event{Time: time.Now().UTC(), ID: strings.TrimPrefix(string(ev.Kv.Key), dir)}
			var prev machine.Machine
			if ev.PrevKv != nil && json.Unmarshal(ev.PrevKv.Value, &prev) == nil {
				e.PrevState = prev.State
			}
			if ev.Type == clientv3.EventTypeDelete {
				e.Deleted, e.State = true, e.PrevState
			} else {
				var m machine.Machine
				if json.Unmarshal(ev.Kv.Value, &m) != nil {
					e.Reason = "unreadable record"
				} else {
					e.State, e.Replica, e.MACs = m.State, m.LastReplica, m.MACs
					if n := len(m.History); n > 0 {
						e.Time, e.Reason = m.History[n-1].At, m.History[n-1].Reason
					}
					if m.State == e.PrevState && ev.PrevKv != nil {
						continue // metadata, a MAC, a reboot: not a state change
					}
				}
			}
			if enc.Encode(e) != nil {
				return
			}
		}
		flusher.Flush()
	}
}
