// Package httpboot is everything a machine meets over HTTP, in boot order:
// the chain script DHCP points iPXE at, the per-machine iPXE script (which
// identifies or registers the machine and hands out its token), the
// installer kernel and initrd, the first-stage script, the OS image, the
// final config, and the installed / failed / boot-complete callbacks.
//
// Any replica answers any of it: all state is in etcd.
package httpboot

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayu-boot/mayu/pkg/artifact"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/digest"
	"github.com/mayu-boot/mayu/pkg/hostile"
	"github.com/mayu-boot/mayu/pkg/identity"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/metrics"
	"github.com/mayu-boot/mayu/pkg/registry"
	"github.com/mayu-boot/mayu/pkg/render"
	"github.com/mayu-boot/mayu/pkg/tftp"
	"github.com/mayu-boot/mayu/pkg/token"
	"github.com/mayu-boot/mayu/pkg/web"
)

// Machines is what the boot flow needs of the machine registry
// (registry.Registry).
type Machines interface {
	Get(ctx context.Context, id string) (*machine.Machine, error)
	ByMAC(ctx context.Context, mac string) (*machine.Machine, error)
	// Register creates the machine, or returns it with created=false if
	// it exists.
	Register(ctx context.Context, reg registry.Registration) (m *machine.Machine, created bool, err error)
	// AttachMAC records a MAC the machine sent; registry.ErrInstalled once
	// it is installed or running.
	AttachMAC(ctx context.Context, id, mac string) (*machine.Machine, error)
	// Update applies change as one transaction; machine.ErrUnchanged
	// from change writes nothing.
	Update(ctx context.Context, id string, change func(*machine.Machine) error) (*machine.Machine, error)
	// Secrets are the cluster secrets node tokens are made and checked
	// with, as every replica follows them.
	Secrets(ctx context.Context) (token.Keys, error)
	// Replica is this replica's name, recorded with every change.
	Replica() string
}

// Installs counts the installs this replica sees end (registry.Registry
// owns the counters, mayu_installs_*).
type Installs interface {
	CountInstallCompleted()
	CountInstallFailed(reason string)
}

type noCount struct{}

func (noCount) CountInstallCompleted()    {}
func (noCount) CountInstallFailed(string) {}

// Server answers nodes.
type Server struct {
	reg      Machines
	installs Installs
	render   *render.Renderer
	files    *os.Root
	boot     *os.Root
	digests  digest.Set
	cluster  config.Cluster
	mayuURL  string
	log      *slog.Logger
	now      func() time.Time
	metrics  *nodeMetrics

	artifacts       Artifacts // nil: no catalogue
	replica         string    // this replica's name, never a peer to redirect to
	artifactMetrics *artifactMetrics

	registerer prometheus.Registerer // for the HTTP request metrics
}

// Options configure a Server.
type Options struct {
	Machines Machines
	Installs Installs // nil: not counted
	Renderer *render.Renderer
	Files    *os.Root // the files directory
	// BootFiles is the boot-files directory (the TFTP root), served under
	// /tftp/ for UEFI HTTP boot.
	BootFiles *os.Root
	// Digests are the files hashed at start, by configuration key: they
	// are served with their digest as ETag, and refused once changed on
	// disk. The image's digest is rendered into the first stage and kept
	// in the machine's record with the kernel's and initrd's.
	Digests digest.Set
	Cluster config.Cluster
	MayuURL string // http://<advertise address>:<http port>
	Log     *slog.Logger
	// Registerer is where the HTTP request metrics go (nil: nowhere);
	// install outcomes are counted by the Registry.
	Registerer prometheus.Registerer
	// Artifacts is the artifact catalogue and this replica's cache (nil:
	// none, and an artifact the configuration names is answered 503).
	Artifacts Artifacts
	// Replica is this replica's name (node.name).
	Replica string
}

// New returns a Server.
func New(o Options) *Server {
	if o.Installs == nil {
		o.Installs = noCount{}
	}
	return &Server{reg: o.Machines, installs: o.Installs, render: o.Renderer, files: o.Files, boot: o.BootFiles, digests: o.Digests,
		cluster: o.Cluster, mayuURL: o.MayuURL, log: o.Log, now: time.Now, registerer: o.Registerer, metrics: newMetrics(o.Registerer, o.Digests),
		artifacts: o.Artifacts, replica: o.Replica, artifactMetrics: newArtifactMetrics(o.Registerer)}
}

// Handler routes the boot flow.
func (s *Server) Handler() http.Handler {
	r := mux.NewRouter()
	metrics.InstrumentRouter(r, s.registerer)
	r.HandleFunc("/boot.ipxe", s.chain).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/ipxe", s.ipxe).Methods(http.MethodGet)
	r.HandleFunc("/boot/kernel", s.source("cluster.install.kernel", s.cluster.Install.Kernel)).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/boot/initrd", s.source("cluster.install.initrd", s.cluster.Install.Initrd)).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/boot/image", s.source("cluster.install.image", s.cluster.Install.Image)).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/boot/artifacts/{name}", s.artifactByName).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/tftp/{name}", s.bootFile).Methods(http.MethodGet, http.MethodHead)
	node := r.PathPrefix("/machines/{id}").Subrouter()
	node.HandleFunc("/first-stage", s.node(s.firstStage)).Methods(http.MethodGet)
	node.HandleFunc("/final-config", s.node(s.finalConfig)).Methods(http.MethodGet)
	node.HandleFunc("/installed", s.node(s.installed)).Methods(http.MethodPost)
	node.HandleFunc("/failed", s.node(s.failed)).Methods(http.MethodPost)
	node.HandleFunc("/boot-complete", s.node(s.bootComplete)).Methods(http.MethodPost)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpError(w, http.StatusNotFound, "no such boot resource: "+clip(r.URL.Path))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpError(w, http.StatusMethodNotAllowed, r.Method+" is not allowed on "+clip(r.URL.Path))
	})
	// gorilla/mux would answer a path with "." or ".." segments with a
	// redirect to the cleaned path; no boot resource has one, so refuse it.
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		for _, seg := range strings.Split(req.URL.Path, "/") {
			if seg == ".." || seg == "." {
				httpError(w, http.StatusBadRequest, "path must not contain '.' or '..' segments")
				return
			}
		}
		r.ServeHTTP(w, req)
	})
}

func (s *Server) chain(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write(render.ChainScript(s.mayuURL))
}

// bootFile serves an iPXE binary over HTTP to UEFI HTTP boot clients.
func (s *Server) bootFile(w http.ResponseWriter, r *http.Request) {
	if s.boot == nil {
		httpError(w, http.StatusNotFound, "no boot-files directory configured")
		return
	}
	name, err := tftp.Name(mux.Vars(r)["name"])
	if err != nil {
		httpError(w, http.StatusBadRequest, err.Error())
		return
	}
	key := "node.boot_files_dir"
	d, hashed := s.digests.Named(name, "cluster.boot.bios", "cluster.boot.efi64", "cluster.boot.efi32", "cluster.boot.arm64")
	if hashed {
		key = d.Key
	}
	s.serveFrom(w, r, s.boot, key, name, d, hashed)
}

func (s *Server) file(key, name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { s.serveFile(w, r, key, name) }
}

// ipxe identifies (or registers) the machine and answers the script it
// needs now. Its answers are always scripts with status 200, since iPXE
// shows nothing of an error body: a machine that cannot proceed gets a
// script that says why on its console and asks again later.
func (s *Server) ipxe(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	m, err := s.identify(r.Context(), r)
	if err != nil {
		s.log.Warn("machine refused", "err", err, "mac", clip(r.URL.Query().Get("mac")), "remote", r.RemoteAddr)
		w.Write(render.WaitScript(s.mayuURL, forNode(err)))
		return
	}
	switch {
	case m.HasBeenInstalled():
		// Never the installer again without an explicit reinstall.
		w.Write(render.LocalBootScript(m.ID))
	case m.State == machine.Failed:
		w.Write(render.WaitScript(s.mayuURL, fmt.Sprintf("the install of %s failed (%s); run `mayuctl reinstall %s` to try again", m.ID, m.FailReason, m.ID)))
	default:
		c, err := s.context(r.Context(), m)
		if err != nil {
			s.log.Error("cannot make node token", "id", m.ID, "err", err)
			w.Write(render.WaitScript(s.mayuURL, forNode(err)))
			return
		}
		w.Write(s.render.InstallerScript(c, s.cluster.Install.KernelArgs))
	}
}

// identify applies the identity rules to what iPXE sent, then finds the
// machine by id, else by MAC (an operator may pre-register by MAC), else
// registers it if the policy allows.
func (s *Server) identify(ctx context.Context, r *http.Request) (*machine.Machine, error) {
	q := r.URL.Query()
	serial, err := identity.DecodeSerial(q.Get("serial"))
	if err != nil {
		return nil, err
	}
	// What a machine sends is stored, logged and compared escaped from
	// here on: a serial with a control character cannot be a valid id
	// either way, and its escaped form is what the record keeps.
	serial = hostile.Text(serial, identity.MaxSerial)
	uuid := strings.ToLower(q.Get("uuid"))
	if err := identity.CheckUUID(uuid); err != nil {
		return nil, err
	}
	mac := ""
	if raw := q.Get("mac"); raw != "" {
		if mac, err = identity.NormalizeMAC(raw); err != nil {
			return nil, err
		}
	}
	id, _, err := identity.Resolve(identity.Input{Serial: serial, UUID: uuid, MAC: mac})
	if err != nil {
		return nil, fmt.Errorf("this machine cannot be identified: %w", err)
	}
	m, err := s.reg.Get(ctx, id)
	byMAC := false
	if errors.Is(err, registry.ErrNotFound) && mac != "" {
		m, err = s.reg.ByMAC(ctx, mac)
		byMAC = err == nil
	}
	if errors.Is(err, registry.ErrNotFound) {
		if s.cluster.Registration == config.RegistrationPreregistered {
			return nil, fmt.Errorf("machine %s (MAC %s) is not registered and registration is %q: add it with `mayuctl add %s`", id, mac, config.RegistrationPreregistered, id)
		}
		var macs []string
		if mac != "" {
			macs = []string{mac}
		}
		var created bool
		m, created, err = s.reg.Register(ctx, registry.Registration{
			ID: id, Serial: serial, UUID: uuid, MACs: macs, Arch: hostile.Text(q.Get("arch"), registry.MaxArch),
		})
		if err == nil && created {
			s.log.Info("machine registered", "id", m.ID, "mac", mac, "state", m.State, "profile", m.Profile,
				"address", m.InternalAddr, "replica", s.reg.Replica())
		}
	}
	if err != nil {
		return nil, err
	}
	// The request must send the record's serial and UUID (those it has),
	// or it gets nothing of it, least of all its token. By MAC, that is
	// all it shares with the record; by id, the serial may be read off a
	// chassis label, and the UUID is what tells the machine from someone
	// who wants its token or to attach MACs to it.
	if err := m.Mismatch(serial, uuid); err != nil {
		s.metrics.refused.WithLabelValues(refusedIdentity).Inc()
		s.log.Warn("identity refused: serial or UUID disagree with the record", "err", err, "id", m.ID, "mac", mac,
			"by_mac", byMAC, "serial", clip(serial), "uuid", uuid, "remote", r.RemoteAddr)
		return nil, errIdentity(mac)
	}
	if probe := *m; probe.TakeIdentity(serial, uuid) {
		// A record an operator added: its first contact fixes its serial
		// and UUID. Checked again in the transaction, so of two machines
		// racing for it one is refused.
		m, err = s.reg.Update(ctx, m.ID, func(m *machine.Machine) error {
			if err := m.Mismatch(serial, uuid); err != nil {
				return err
			}
			if !m.TakeIdentity(serial, uuid) {
				return machine.ErrUnchanged
			}
			return nil
		})
		var mm *machine.IdentityMismatchError
		if errors.As(err, &mm) {
			s.metrics.refused.WithLabelValues(refusedIdentity).Inc()
			s.log.Warn("identity refused: serial or UUID disagree with the record", "err", err, "id", mm.ID, "mac", mac, "remote", r.RemoteAddr)
			return nil, errIdentity(mac)
		}
		if err != nil {
			return nil, err
		}
		s.log.Info("machine identified", "id", m.ID, "serial", clip(m.Serial), "uuid", m.UUID, "mac", mac)
	}
	if mac != "" && !m.HasMAC(mac) {
		return s.attach(ctx, r, m, mac)
	}
	return m, nil
}

// attach records a new MAC of a machine that is not installed yet. An
// installed or running machine gets none from a boot request: DHCP would
// then ignore whatever hardware has that MAC. Only an operator adds one
// (mayuctl add-mac).
func (s *Server) attach(ctx context.Context, r *http.Request, m *machine.Machine, mac string) (*machine.Machine, error) {
	refuse := func(m *machine.Machine) (*machine.Machine, error) {
		s.metrics.refused.WithLabelValues(refusedAttach).Inc()
		s.log.Warn("new MAC not attached to an installed machine (an operator can: mayuctl add-mac)", "id", m.ID, "state", m.State,
			"mac", mac, "remote", r.RemoteAddr)
		return m, nil
	}
	if m.HasBeenInstalled() {
		return refuse(m)
	}
	got, err := s.reg.AttachMAC(ctx, m.ID, mac)
	var taken *registry.MACTakenError
	switch {
	case errors.Is(err, registry.ErrInstalled):
		// Installed since it was read: answer from what it is now.
		if m, err = s.reg.Get(ctx, m.ID); err != nil {
			return nil, err
		}
		return refuse(m)
	case errors.As(err, &taken):
		s.metrics.refused.WithLabelValues(refusedMACTaken).Inc()
		s.log.Warn("request refused: its MAC belongs to another machine", "id", m.ID, "mac", mac, "owner", taken.Owner, "remote", r.RemoteAddr)
		return nil, errIdentity(mac)
	}
	return got, err
}

// errIdentity is all a request learns when its MAC belongs to a machine
// it does not match: nothing of that machine, not even its id.
func errIdentity(mac string) error {
	return fmt.Errorf("this machine (MAC %s) matches a registered machine whose serial or UUID differ from this one's: an operator must resolve it (mayuctl delete the other machine if the NIC moved)", mac)
}

// forNode is what an iPXE script may say of err: never etcd's own words
// (the caller is not authenticated); the log has them.
func forNode(err error) string {
	var corrupt *registry.CorruptError
	switch {
	case errors.As(err, &corrupt):
		return "mayu cannot read this machine's record: an operator must fix it"
	case web.Status(err) == http.StatusServiceUnavailable:
		return "mayu cannot reach its state store; retrying"
	}
	return err.Error()
}

// subject is what a machine's token is bound to.
func subject(m *machine.Machine) token.Subject {
	return token.Subject{ID: m.ID, Nonce: m.TokenNonce, Generation: m.Generation, Legacy: m.LegacyToken}
}

func (s *Server) context(ctx context.Context, m *machine.Machine) (render.Context, error) {
	keys, err := s.reg.Secrets(ctx)
	if err != nil {
		return render.Context{}, err
	}
	c := s.render.Context(m, keys.Make(subject(m)), s.mayuURL)
	c.Image.SHA256, c.Image.Size = s.digestOf(m.Profile, machine.ArtifactImage)
	return c, nil
}

// digestOf is the SHA-256 and size of what this replica installs role
// (kernel, initrd, image) with on machines of profile: the artifact's from
// the catalogue, else the local file's as hashed at start; "" when the
// artifact is not ready yet.
func (s *Server) digestOf(profile, role string) (string, int64) {
	if name, ok := config.ArtifactName(s.cluster.Source(profile, role)); ok {
		if s.artifacts != nil {
			if rec, ok := s.artifacts.Lookup(name); ok && rec.Status == artifact.Ready {
				return rec.SHA256, rec.Size
			}
		}
		return "", 0
	}
	if d, ok := s.digests["cluster.install."+role]; ok {
		return d.SHA256, d.Size
	}
	return "", 0
}

// installArtifacts are the digests of what this replica installs a
// machine of profile with, by role (machine.Artifacts).
func (s *Server) installArtifacts(profile string) map[string]string {
	out := map[string]string{}
	for _, role := range []string{machine.ArtifactKernel, machine.ArtifactInitrd, machine.ArtifactImage} {
		if sum, _ := s.digestOf(profile, role); sum != "" {
			out[role] = sum
		}
	}
	return out
}

// nodeCall is a request from a machine that proved it holds its token.
type nodeCall struct {
	w       http.ResponseWriter
	r       *http.Request
	machine *machine.Machine
}

// node checks the machine id and its token before a node callback runs.
func (s *Server) node(h func(nodeCall)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id := mux.Vars(r)["id"]
		if err := identity.Check(id); err != nil {
			httpError(w, http.StatusBadRequest, err.Error())
			return
		}
		tok := r.URL.Query().Get("token")
		if bearer, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
			tok = bearer
		}
		if tok == "" {
			s.metrics.refused.WithLabelValues(refusedToken).Inc()
			httpError(w, http.StatusUnauthorized, "this call needs the machine's token (?token= or Authorization: Bearer), as handed out in its iPXE script")
			return
		}
		// The token is checked before anything is said of the id: an
		// unknown id, an unreadable record and a wrong token get the same
		// 403, and no caller without a token hears etcd's own words.
		m, err := s.reg.Get(r.Context(), id)
		var corrupt *registry.CorruptError
		switch {
		case errors.Is(err, registry.ErrNotFound):
			m = nil
		case errors.As(err, &corrupt):
			s.log.Error("node call for an unreadable record", "id", id, "err", err)
			m = nil
		case err != nil:
			s.unavailable(w, err)
			return
		}
		match := token.NoMatch
		if m != nil {
			keys, err := s.reg.Secrets(r.Context())
			if err != nil {
				s.unavailable(w, err)
				return
			}
			match = keys.Match(subject(m), tok, s.now())
		}
		if !match.Ok() {
			s.metrics.refused.WithLabelValues(refusedToken).Inc()
			s.log.Warn("node call with a wrong token refused", "id", id, "known", m != nil, "path", r.URL.Path, "remote", r.RemoteAddr)
			httpError(w, http.StatusForbidden, "this token does not open machine "+id+" (a reinstall rotates it)")
			return
		}
		s.metrics.accept(match)
		h(nodeCall{w: w, r: r, machine: m})
	}
}

// installOnly refuses install-time calls from a machine that is installed:
// its token then opens nothing but boot-complete.
func installOnly(c nodeCall) bool {
	if c.machine.HasBeenInstalled() {
		httpError(c.w, http.StatusForbidden, fmt.Sprintf("machine %s is %s: its token opens only boot-complete; run `mayuctl reinstall %s` to install it again", c.machine.ID, c.machine.State, c.machine.ID))
		return false
	}
	return true
}

func (s *Server) firstStage(c nodeCall) {
	if !installOnly(c) {
		return
	}
	artifacts := s.installArtifacts(c.machine.Profile)
	// Without the image's digest the first stage cannot check what it
	// writes: the machine asks again once the artifact is ready.
	if _, isArtifact := config.ArtifactName(s.cluster.Source(c.machine.Profile, machine.ArtifactImage)); isArtifact && artifacts[machine.ArtifactImage] == "" {
		s.log.Warn("first stage held back: the image artifact is not ready", "id", c.machine.ID,
			"image", s.cluster.Source(c.machine.Profile, machine.ArtifactImage))
		unavailable(c.w, fmt.Sprintf("the OS image of machine %s (%s) is not ready yet", c.machine.ID, s.cluster.Source(c.machine.Profile, machine.ArtifactImage)))
		return
	}
	if c.machine.State == machine.Failed {
		// Nothing to render: a 4xx is final to Flatcar's Ignition, which
		// would retry a 5xx every few seconds until a power cycle.
		httpError(c.w, http.StatusConflict, fmt.Sprintf("machine %s is failed (%s): run `mayuctl reinstall %s` to try again", c.machine.ID, c.machine.FailReason, c.machine.ID))
		return
	}
	// Both configs are rendered, and validated where they are Ignition,
	// before the machine becomes installing: one that does not fails the
	// machine before its installer runs anything, let alone touches the
	// disk. An installing machine asking again had them checked then; what
	// is served is checked again as it is rendered.
	if c.machine.State != machine.Installing && !s.configsRender(c) {
		return
	}
	m, ok := s.change(c, machine.Installing, func(m *machine.Machine) error {
		return m.StartInstallWith(s.reg.Replica(), s.now(), artifacts)
	})
	if ok {
		s.renderFor(c, m, s.render.FirstStage, contentType(s.render.FirstStageIsIgnition(), "text/x-shellscript"))
	}
}

// IgnitionType is the media type of an Ignition config.
const IgnitionType = "application/vnd.coreos.ignition+json"

func contentType(ignition bool, text string) string {
	if ignition {
		return IgnitionType
	}
	return text
}

// configsRender renders the machine's first stage and final config and
// reports whether both did; if not, the machine is failed (failConfig)
// and the node has its answer.
func (s *Server) configsRender(c nodeCall) bool {
	rc, err := s.context(c.r.Context(), c.machine)
	if err != nil {
		s.storeError(c.w, err)
		return false
	}
	for _, f := range []func(render.Context) ([]byte, error){s.render.FirstStage, s.render.FinalConfig} {
		if _, err := f(rc); err != nil {
			s.failConfig(c, err)
			return false
		}
	}
	return true
}

// failConfig answers a config that does not render for the machine (a
// template that fails to execute for it, or an Ignition config that does
// not validate): the machine becomes failed with the reason, which
// `mayuctl status` shows, the node gets the message and nothing else.
// An operator fixes the template or the machine's metadata, then runs
// `mayuctl reinstall`.
func (s *Server) failConfig(c nodeCall, renderErr error) {
	reason := "config: " + renderErr.Error()
	gen := c.machine.Generation
	changed := false
	_, err := s.reg.Update(c.r.Context(), c.machine.ID, func(m *machine.Machine) error {
		if m.Generation != gen {
			return errStaleToken
		}
		err := m.MarkConfigFailed(reason, s.reg.Replica(), s.now())
		changed = err == nil
		return err
	})
	if changed {
		s.installs.CountInstallFailed(failedConfig)
	}
	// Logged as an error once, when the machine becomes failed. Flatcar's
	// Ignition retries a 5xx every few seconds until the machine is power
	// cycled: those repeats are not news.
	level := slog.LevelDebug
	if changed || (err != nil && !errors.Is(err, machine.ErrUnchanged)) {
		level = slog.LevelError
	}
	s.log.Log(c.r.Context(), level, "machine's config does not render: machine failed", "id", c.machine.ID, "err", renderErr,
		"recorded", err == nil || errors.Is(err, machine.ErrUnchanged), "record_err", err)
	httpError(c.w, http.StatusInternalServerError, fmt.Sprintf("the config of machine %s does not render, the machine is failed (fix it, then `mayuctl reinstall %s`): %s",
		c.machine.ID, c.machine.ID, renderErr))
}

// failedConfig is the mayu_installs_failed_total reason of a machine whose
// config does not render or validate.
const failedConfig = "config"

func (s *Server) finalConfig(c nodeCall) {
	if !installOnly(c) {
		return
	}
	if c.machine.State != machine.Installing {
		httpError(c.w, http.StatusConflict, fmt.Sprintf("machine %s is %s, not installing: fetch the first-stage script first", c.machine.ID, c.machine.State))
		return
	}
	s.renderFor(c, c.machine, s.render.FinalConfig, contentType(s.render.FinalConfigIsIgnition(), "text/plain; charset=utf-8"))
}

func (s *Server) installed(c nodeCall) {
	if c.machine.State == machine.Installed { // a retried announcement
		web.JSON(c.w, http.StatusOK, stateOf(c.machine))
		return
	}
	if !installOnly(c) {
		return
	}
	if m, ok := s.change(c, machine.Installed, func(m *machine.Machine) error {
		return m.MarkInstalled(s.reg.Replica(), s.now())
	}); ok {
		web.JSON(c.w, http.StatusOK, stateOf(m))
	}
}

func (s *Server) failed(c nodeCall) {
	if !installOnly(c) {
		return
	}
	body, _ := io.ReadAll(io.LimitReader(c.r.Body, 1024))
	reason := "installer reported an error"
	if text := strings.TrimSpace(string(body)); text != "" {
		// Stored escaped; it reaches the iPXE script of the machine's
		// later boots only through render's allow-list.
		reason = "installer reported: " + hostile.Text(text, machine.MaxReason-len("installer reported: ")-3)
	}
	if m, ok := s.change(c, machine.Failed, func(m *machine.Machine) error {
		return m.MarkFailed(reason, s.reg.Replica(), s.now())
	}); ok {
		web.JSON(c.w, http.StatusOK, stateOf(m))
	}
}

func (s *Server) bootComplete(c nodeCall) {
	if m, ok := s.change(c, machine.Running, func(m *machine.Machine) error {
		return m.BootComplete(s.reg.Replica(), s.now())
	}); ok {
		web.JSON(c.w, http.StatusOK, stateOf(m))
	}
}

// change applies one state transition as a compare-and-swap and answers
// the errors; ok means the caller may answer success.
func (s *Server) change(c nodeCall, to machine.State, f func(*machine.Machine) error) (*machine.Machine, bool) {
	gen := c.machine.Generation
	changed := false
	m, err := s.reg.Update(c.r.Context(), c.machine.ID, func(m *machine.Machine) error {
		if m.Generation != gen {
			// A reinstall raced this call: the token it carried is stale.
			return errStaleToken
		}
		err := f(m)
		changed = err == nil
		return err
	})
	if err != nil {
		s.storeError(c.w, err)
		return nil, false
	}
	if changed {
		switch to {
		case machine.Installed:
			s.installs.CountInstallCompleted()
		case machine.Failed:
			s.installs.CountInstallFailed("installer")
		}
		s.log.Info("machine state changed", "id", m.ID, "mac", strings.Join(m.MACs, ","), "state", to, "replica", s.reg.Replica())
	}
	return m, true
}

var errStaleToken = errors.New("the machine was reinstalled meanwhile: its token is stale")

func (s *Server) renderFor(c nodeCall, m *machine.Machine, f func(render.Context) ([]byte, error), contentType string) {
	rc, err := s.context(c.r.Context(), m)
	if err != nil {
		s.storeError(c.w, err)
		return
	}
	out, err := f(rc)
	if err != nil {
		// Never served: the machine cannot be installed as configured.
		s.failConfig(nodeCall{w: c.w, r: c.r, machine: m}, err)
		return
	}
	c.w.Header().Set("Content-Type", contentType)
	c.w.Write(out)
}

// storeError turns a registry error into an answer a node can act on;
// etcd's own words go only to the log.
func (s *Server) storeError(w http.ResponseWriter, err error) {
	code := web.Status(err)
	switch {
	case errors.Is(err, errStaleToken):
		code = http.StatusConflict
	case code == http.StatusServiceUnavailable:
		s.unavailable(w, err)
		return
	case code >= 500:
		s.log.Error("state store error", "err", err)
		err = errors.New(forNode(err))
	}
	httpError(w, code, err.Error())
}

// unavailable answers 503 without detail: the node retries.
func (s *Server) unavailable(w http.ResponseWriter, err error) {
	s.log.Warn("state store unavailable", "err", err)
	httpError(w, http.StatusServiceUnavailable, "mayu cannot reach its state store, retry")
}

// clip keeps what a machine sent short in answers and logs.
func clip(s string) string { return hostile.Clip(s, 200) }
