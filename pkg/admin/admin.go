// Package admin is mayu's admin API: JSON over HTTP or HTTPS, every call
// behind credentials (named bearer tokens with a role, viewer or admin;
// client certificates where configured), every change recorded in the
// audit trail (pkg/audit). It is a thin adapter over the registry; mayuctl
// (and curl) are its clients.
//
//	GET    /api/v1/machines[?limit=&continue=]  one page of the list, with the corrupt records skipped
//	POST   /api/v1/machines                  pre-register {"id":..., "macs":[...]}
//	GET    /api/v1/machines/{id}             one machine
//	DELETE /api/v1/machines/{id}             delete, freeing its address and profile slot
//	POST   /api/v1/machines/{id}/reinstall   back to configured
//	POST   /api/v1/machines/{id}/metadata    {"key":"value"}; "" deletes the key
//	POST   /api/v1/machines/{id}/macs        {"mac":...}: add a MAC, in any state
//	POST   /api/v1/secret/rotate             a new cluster secret for node tokens
//	GET    /api/v1/config                    the cluster config this replica publishes
//	GET    /api/v1/audit                     the audit trail, newest first (?machine=, ?limit=)
//	GET    /api/v1/artifacts                 the artifact catalogue, where the bytes are, transfers
//	POST   /api/v1/artifacts                 add from upstream {"name", "url", "sha256"|"digestsUrl"|"sigUrl", "keyring"}
//	GET    /api/v1/artifacts/{name}          one artifact
//	PUT    /api/v1/artifacts/{name}          upload the bytes (?sha256= to check them against)
//	DELETE /api/v1/artifacts/{name}          remove, unless the configuration names it
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/hostile"
	"github.com/mayu-boot/mayu/pkg/identity"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/metrics"
	"github.com/mayu-boot/mayu/pkg/registry"
	"github.com/mayu-boot/mayu/pkg/replica"
	"github.com/mayu-boot/mayu/pkg/state"
	"github.com/mayu-boot/mayu/pkg/web"
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
// The same rule holds for profile tags (config.MetadataKey).
var metadataKey = config.MetadataKey

// Machines is what the admin API needs of the machine registry
// (registry.Registry).
type Machines interface {
	List(ctx context.Context) ([]*machine.Machine, []*registry.CorruptError, error)
	// ListPage is one page of the machines after a continue token.
	ListPage(ctx context.Context, limit int, cont string) (*registry.Page, error)
	Get(ctx context.Context, id string) (*machine.Machine, error)
	Register(ctx context.Context, reg registry.Registration) (m *machine.Machine, created bool, err error)
	Update(ctx context.Context, id string, change func(*machine.Machine) error) (*machine.Machine, error)
	Delete(ctx context.Context, id string) error
	// AddMAC records another MAC of a machine in any state: the only way
	// a MAC joins a machine that is installed (DHCP then ignores it).
	AddMAC(ctx context.Context, id, mac string) (*machine.Machine, error)
	// MACOwners maps every known MAC to its machine's id.
	MACOwners(ctx context.Context) (map[string]string, error)
	// Watch calls f with every change to a machine until ctx ends.
	Watch(ctx context.Context, f func(registry.Change), broken func(error))
	Replica() string
}

// Secret rotates the cluster secret node tokens are made with
// (registry.Registry).
type Secret interface {
	RotateSecret(ctx context.Context) (registry.Rotation, error)
}

// Leases lists the DHCP leases (lease.Store).
type Leases interface {
	List(ctx context.Context) ([]lease.Lease, error)
}

// Replicas is the view of the replicas and of the configuration the DHCP
// leader publishes (replica.Replica).
type Replicas interface {
	Replicas(ctx context.Context) ([]replica.Info, error)
	Published(ctx context.Context) (*replica.Published, error)
	Leader(ctx context.Context) (string, error)
	// Self is what this replica announces; its ConfigHash covers the
	// files it serves too.
	Self() replica.Info
}

// Auditor is the audit trail (audit.Store).
type Auditor interface {
	// Begin records a change about to be made (or, with a Status, one
	// refused) and returns the entry with its ID.
	Begin(ctx context.Context, e api.AuditEntry) (api.AuditEntry, error)
	// Finish records the result of a change Begin recorded.
	Finish(ctx context.Context, e api.AuditEntry) error
	List(ctx context.Context, machine string, limit int) ([]api.AuditEntry, error)
}

// maxAuditLimit bounds one audit listing.
const maxAuditLimit = 10000

// Options configure the admin API.
type Options struct {
	Machines Machines
	Leases   Leases
	Replicas Replicas
	Secret   Secret // nil: rotate-secret answers 503
	// Artifacts is the artifact catalogue (nil: its routes answer 503).
	Artifacts Artifacts
	// Config is this replica's configuration; /api/v1/config shows its
	// cluster part, secrets redacted.
	Config *config.Config
	// Credentials are who may call, as the replica's SIGHUP reloads them.
	// Nil: Token, one admin token (for tests and tools).
	Credentials *Keeper
	// Token is one bearer token with the role admin, used when Credentials
	// is nil. Empty refuses every call: an admin API without credentials
	// is never served.
	Token string
	// Audit is where every change is recorded; without it no change is
	// made.
	Audit Auditor
	Log   *slog.Logger
	// Registerer is where the HTTP request metrics go (nil: nowhere).
	Registerer prometheus.Registerer
}

type handler struct {
	reg       Machines
	leases    Leases
	replicas  Replicas
	secret    Secret
	artifacts Artifacts
	cfg       *config.Config
	log       *slog.Logger
	creds     *Keeper
	audit     Auditor
	replica   string // recorded in audit entries
	metrics   *adminMetrics
}

// New returns the admin API handler.
func New(o Options) http.Handler {
	_, h := build(o)
	return h
}

// build returns the admin API's handler state and its front door.
func build(o Options) (*handler, http.Handler) {
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	creds := o.Credentials
	if creds == nil {
		creds = StaticKeeper(NewTokenCredentials("admin", o.Token))
	}
	if c := creds.Current(); len(c.tokens) == 0 && len(c.subjects) == 0 {
		log.Warn("admin API has no token configured: every call is refused (set node.admin.tokens_file)")
	}
	a := &handler{reg: o.Machines, leases: o.Leases, replicas: o.Replicas, secret: o.Secret, artifacts: o.Artifacts, cfg: o.Config, log: log,
		creds: creds, audit: o.Audit, metrics: newMetrics(o.Registerer)}
	creds.metrics = a.metrics
	if o.Machines != nil {
		a.replica = o.Machines.Replica()
	}
	return a, a.guard(a.router(o.Registerer))
}

// router has every route of the admin API, without the front door (guard).
func (a *handler) router(reg prometheus.Registerer) *mux.Router {
	r := mux.NewRouter()
	metrics.InstrumentRouter(r, reg)
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
	r.HandleFunc("/api/v1/machines/{id}/macs", a.addMAC).Methods(http.MethodPost)
	r.HandleFunc("/api/v1/secret/rotate", a.rotateSecret).Methods(http.MethodPost)
	r.HandleFunc("/api/v1/config", a.config).Methods(http.MethodGet)
	r.HandleFunc("/api/v1/replicas", a.replicasView).Methods(http.MethodGet)
	r.HandleFunc("/api/v1/leases", a.leasesView).Methods(http.MethodGet)
	r.HandleFunc("/api/v1/watch", a.watch).Methods(http.MethodGet)
	r.HandleFunc("/api/v1/audit", a.auditView).Methods(http.MethodGet)
	r.HandleFunc("/api/v1/artifacts", a.artifactList).Methods(http.MethodGet)
	r.HandleFunc("/api/v1/artifacts", a.artifactAdd).Methods(http.MethodPost)
	r.HandleFunc("/api/v1/artifacts/{name}", a.artifactGet).Methods(http.MethodGet)
	r.HandleFunc("/api/v1/artifacts/{name}", a.artifactUpload).Methods(http.MethodPut)
	r.HandleFunc("/api/v1/artifacts/{name}", a.artifactRemove).Methods(http.MethodDelete)
	return r
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

// auditView lists the audit trail, newest first: ?machine= keeps the
// entries naming one machine, ?limit= bounds how many.
func (a *handler) auditView(w http.ResponseWriter, r *http.Request) {
	if a.audit == nil {
		writeError(w, http.StatusServiceUnavailable, "this replica has no audit trail")
		return
	}
	q := r.URL.Query()
	machine := q.Get("machine")
	if machine != "" {
		if err := identity.Check(machine); err != nil {
			writeError(w, http.StatusBadRequest, "machine: "+err.Error())
			return
		}
	}
	limit := 0
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxAuditLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q: give a number from 1 to %d", clip(s), maxAuditLimit))
			return
		}
		limit = n
	}
	entries, err := a.audit.List(r.Context(), machine, limit)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	web.JSON(w, http.StatusOK, api.AuditList{Entries: entries})
}

// list answers one page of machines: ?limit= (default
// registry.DefaultPageSize, at most registry.MaxPageSize) and ?continue=
// (the token of the page before); the answer's continue is the next
// page's token, absent on the last page.
func (a *handler) list(w http.ResponseWriter, r *http.Request) {
	limit := 0
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > registry.MaxPageSize {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q: give a number from 1 to %d", clip(v), registry.MaxPageSize))
			return
		}
		limit = n
	}
	p, err := a.reg.ListPage(r.Context(), limit, r.URL.Query().Get("continue"))
	if err != nil {
		a.fail(w, r, err)
		return
	}
	// Empty arrays rather than null, so clients need no special case.
	out := api.MachineList{Machines: p.Machines, Corrupt: []api.CorruptRecord{}, Continue: p.Continue}
	if out.Machines == nil {
		out.Machines = []*machine.Machine{}
	}
	for _, c := range p.Corrupt {
		out.Corrupt = append(out.Corrupt, api.CorruptRecord{Key: c.Key, Error: c.Error()})
	}
	web.JSON(w, http.StatusOK, out)
}

func (a *handler) get(w http.ResponseWriter, r *http.Request) {
	id, ok := machineID(w, r)
	if !ok {
		return
	}
	m, err := a.reg.Get(r.Context(), id)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	web.JSON(w, http.StatusOK, m)
}

func (a *handler) add(w http.ResponseWriter, r *http.Request) {
	var req api.AddRequest
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
	web.JSON(w, http.StatusCreated, m)
}

func (a *handler) reinstall(w http.ResponseWriter, r *http.Request) {
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
	web.JSON(w, http.StatusOK, m)
}

func (a *handler) setMetadata(w http.ResponseWriter, r *http.Request) {
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
	web.JSON(w, http.StatusOK, m)
}

// addMAC adds a MAC to a machine in any state. A boot request never adds
// one to an installed or running machine (its new MAC would make DHCP
// ignore whatever hardware has it); an operator does it here.
func (a *handler) addMAC(w http.ResponseWriter, r *http.Request) {
	id, ok := machineID(w, r)
	if !ok {
		return
	}
	var req api.AddMACRequest
	if !decodeBody(w, r, &req) {
		return
	}
	mac, err := identity.NormalizeMAC(req.MAC)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	m, err := a.reg.AddMAC(r.Context(), id, mac)
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("MAC added by an operator", "id", id, "mac", mac, "state", m.State, "remote", r.RemoteAddr)
	web.JSON(w, http.StatusOK, m)
}

// rotateSecret replaces the cluster secret node tokens are made with; the
// previous one stays valid for cluster.install.timeout.
func (a *handler) rotateSecret(w http.ResponseWriter, r *http.Request) {
	if a.secret == nil {
		writeError(w, http.StatusServiceUnavailable, "this replica was started without etcd")
		return
	}
	rot, err := a.secret.RotateSecret(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	a.log.Info("cluster secret rotated", "previous_valid_until", rot.PreviousUntil, "remote", r.RemoteAddr)
	web.JSON(w, http.StatusOK, api.SecretRotation{Rotated: rot.Rotated, PreviousValidUntil: rot.PreviousUntil, Replica: rot.Replica})
}

func (a *handler) delete(w http.ResponseWriter, r *http.Request) {
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
	web.JSON(w, http.StatusOK, api.Deleted{ID: id})
}

func (a *handler) config(w http.ResponseWriter, r *http.Request) {
	if a.cfg == nil {
		writeError(w, http.StatusServiceUnavailable, "this replica was started without a configuration to show")
		return
	}
	own := a.cfg.ClusterHash()
	if a.replicas != nil {
		own = a.replicas.Self().ConfigHash
	}
	view := api.ConfigView{Hash: own, Replica: a.cfg.Node.Name, ReplicaHash: own, Matches: true, Cluster: a.cfg.Redacted()}
	if a.replicas != nil {
		p, err := a.replicas.Published(r.Context())
		if err != nil {
			a.fail(w, r, err)
			return
		}
		if p != nil {
			view.Hash, view.Leader, view.Cluster, view.Matches = p.Hash, p.Replica, p.Cluster, p.Hash == own
		}
	}
	web.JSON(w, http.StatusOK, view)
}

func (a *handler) replicasView(w http.ResponseWriter, r *http.Request) {
	if a.replicas == nil {
		writeError(w, http.StatusServiceUnavailable, "this replica was started without etcd")
		return
	}
	list, err := a.replicas.Replicas(r.Context())
	var view api.ReplicasView
	if err == nil {
		view.Leader, err = a.replicas.Leader(r.Context())
	}
	var p *replica.Published
	if err == nil {
		p, err = a.replicas.Published(r.Context())
	}
	if err != nil {
		a.fail(w, r, err)
		return
	}
	var published map[string]string
	if p != nil {
		view.PublishedHash, view.PublishedFiles, published = p.Hash, p.Files, p.Files
	}
	view.Replicas = []api.Replica{}
	missing := a.missingArtifacts()
	for _, i := range list {
		rv := replicaView(i, i.Name == view.Leader, p == nil || p.Hash == i.ConfigHash, published)
		rv.MissingArtifacts = missing(i.Name)
		view.Replicas = append(view.Replicas, rv)
	}
	web.JSON(w, http.StatusOK, view)
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

// fail turns an error of the registry, the machine rules or etcd into an
// answer (web.Status).
func (a *handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := web.Status(err)
	msg := err.Error()
	switch {
	case code == http.StatusNotFound:
		id, _ := url.PathUnescape(mux.Vars(r)["id"])
		msg = fmt.Sprintf("machine %s is not registered (`mayuctl list` shows the machines that are)", id)
	case r.Context().Err() != nil:
		// The caller went away; nobody reads the answer.
		code, msg = http.StatusServiceUnavailable, "request canceled"
	case code == http.StatusServiceUnavailable:
		a.log.Warn("admin call failed: etcd unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
	case code >= 500:
		a.log.Error("admin call failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	writeError(w, code, msg)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	web.JSON(w, code, api.ErrorBody{Error: msg})
}

// clip keeps hostile input from flooding an error message.
func clip(s string) string { return hostile.Clip(s, 80) }

func (a *handler) leasesView(w http.ResponseWriter, r *http.Request) {
	if a.leases == nil {
		writeError(w, http.StatusServiceUnavailable, "this replica was started without etcd")
		return
	}
	ls, err := a.leases.List(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	owners, err := a.reg.MACOwners(r.Context())
	if err != nil {
		a.fail(w, r, err)
		return
	}
	now := time.Now()
	out := []api.Lease{}
	for _, l := range ls {
		out = append(out, leaseView(l, owners[l.MAC], !now.Before(l.Expiry)))
	}
	web.JSON(w, http.StatusOK, out)
}

// watch streams machine state changes as JSON lines until the client goes
// away.
func (a *handler) watch(w http.ResponseWriter, r *http.Request) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, http.StatusInternalServerError, "streaming is not supported here")
		return
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher.Flush()
	enc := json.NewEncoder(w)
	ctx, stop := context.WithCancel(r.Context())
	defer stop()
	a.reg.Watch(ctx, func(c registry.Change) {
		e := api.Event{Time: time.Now().UTC(), ID: c.ID, Deleted: c.Deleted}
		if c.Prev != nil {
			e.PrevState = c.Prev.State
		}
		switch {
		case c.Deleted:
			e.State = e.PrevState
		case c.Err != nil:
			e.Reason = "unreadable record"
		default:
			m := c.Machine
			if m.State == e.PrevState && c.Prev != nil {
				return // metadata, a MAC, a reboot: not a state change
			}
			e.State, e.Replica, e.MACs = m.State, m.LastReplica, m.MACs
			if n := len(m.History); n > 0 {
				e.Time, e.Reason = m.History[n-1].At, m.History[n-1].Reason
			}
		}
		if enc.Encode(e) != nil {
			stop() // the client is gone
			return
		}
		flusher.Flush()
	}, func(err error) {
		if errors.Is(err, state.ErrEventsLost) {
			// The client must not think it saw every change: end the
			// stream, as an etcd watch that cannot resume does.
			enc.Encode(api.ErrorBody{Error: err.Error()})
			stop()
			return
		}
		// The stream goes on once the watch is back.
		a.log.Warn("admin watch: etcd watch broken, resuming", "err", err)
	})
}
