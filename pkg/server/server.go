// Package server is one mayu replica's lifecycle: connect to etcd, check
// the files and templates, open every listener, run until told to stop,
// then close everything. A failure while starting closes what was opened.
package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/pkg/admin"
	"github.com/mayu-boot/mayu/pkg/artifact"
	"github.com/mayu-boot/mayu/pkg/audit"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/dhcp"
	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/etcd"
	"github.com/mayu-boot/mayu/pkg/hostile"
	"github.com/mayu-boot/mayu/pkg/httpboot"
	"github.com/mayu-boot/mayu/pkg/httplimit"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/registry"
	"github.com/mayu-boot/mayu/pkg/render"
	"github.com/mayu-boot/mayu/pkg/replica"
	"github.com/mayu-boot/mayu/pkg/state"
	"github.com/mayu-boot/mayu/pkg/tftp"
)

// Server is a running replica.
type Server struct {
	cfg        *config.Config
	log        *slog.Logger
	conn       *etcd.Conn
	files      *os.Root
	bootFiles  *os.Root
	metrics    *prometheus.Registry // this replica's, served on /metrics
	registry   *registry.Registry
	known      *registry.Known // registered machines, followed on every replica
	servers    []*http.Server
	dhcp       *dhcp.Server
	tftp       *tftp.Server
	election   *election.Election
	replica    *replica.Replica
	artifacts  *artifact.Manager
	adminCreds *admin.Keeper
	errc       chan error
	stop       context.CancelFunc
	bg         sync.WaitGroup // background loops to join before etcd closes
	closeOnce  sync.Once

	// Addresses the listeners bound, by name (http, admin, metrics);
	// useful when a port was 0.
	Addrs map[string]string
}

// Start brings a replica up. On error everything opened so far is closed.
// version is announced to the other replicas.
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger, version string) (_ *Server, err error) {
	s := &Server{cfg: cfg, log: log, metrics: newRegistry(version), errc: make(chan error, 8), Addrs: map[string]string{}}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	if s.adminCreds, err = admin.NewKeeper(func() (*admin.Credentials, error) { return admin.LoadCredentials(cfg.Node) }, log); err != nil {
		return nil, err
	}
	if cfg.Node.Admin.TokensFile == "" {
		log.Warn("node.admin_token_file is deprecated: its token works as one token named admin-token-file with the role admin; move it to node.admin.tokens_file")
	}
	if cfg.Node.Admin.CertFile == "" {
		log.Warn("the admin API speaks plain HTTP (no node.admin.cert_file): its tokens cross the network in clear text")
	}
	if s.files, err = os.OpenRoot(cfg.Node.FilesDir); err != nil {
		return nil, fmt.Errorf("node.files_dir: %w", err)
	}
	// The boot files are needed with TFTP on; without it they are served
	// over HTTP (UEFI HTTP boot) only if the directory exists.
	if s.bootFiles, err = os.OpenRoot(cfg.Node.BootFilesDir); err != nil && cfg.Node.Ports.TFTP > 0 {
		return nil, fmt.Errorf("node.boot_files_dir: %w (copy undionly.kpxe and ipxe.efi there, or set node.ports.tftp: 0)", err)
	}
	// Every file served is hashed before anything is served: the digests
	// are announced (replicas given different files disagree), sent as
	// ETags and rendered into the first stage.
	hashStart := time.Now()
	served, err := hashFiles(s.files, s.bootFiles, cfg.Cluster)
	if err != nil {
		return nil, fmt.Errorf("%w (files are relative to node.files_dir %s)", err, cfg.Node.FilesDir)
	}
	var hashed int64
	for _, f := range served {
		hashed += f.Size
	}
	log.Info("files to serve hashed", "files", len(served), "bytes", hashed, "took", time.Since(hashStart).Round(time.Millisecond))
	rend, err := render.New(s.files.FS(), cfg.Cluster)
	if err != nil {
		return nil, fmt.Errorf("%w (files are relative to node.files_dir %s)", err, cfg.Node.FilesDir)
	}
	for _, w := range rend.Warnings() {
		log.Warn("template renders a config Ignition warns about", "warning", w)
	}

	if s.conn, err = etcd.Open(ctx, cfg.Node, log, s.metrics); err != nil {
		return nil, err
	}
	s.registry = registry.New(s.conn.Client, registry.Options{
		Prefix: cfg.Node.Etcd.Prefix, Cluster: cfg.Cluster, Replica: cfg.Node.Name, Timeout: cfg.Node.Etcd.RequestTimeout,
		Registerer: s.metrics,
	})
	// Bring etcd to this mayu's schema before anything is served: records
	// of an older one keep the tokens of installs in flight. Not while a
	// replica of an older schema runs: it would drop what the migration
	// adds each time it writes a record, and refuse the new tokens.
	if err := refuseOlderReplicas(ctx, s.conn.Client, cfg, log); err != nil {
		return nil, err
	}
	migrated, err := s.registry.UpgradeSchema(ctx)
	if err != nil {
		return nil, err
	}
	if len(migrated) > 0 {
		log.Info("etcd schema upgraded", "version", registry.SchemaVersion, "records", len(migrated))
	}
	// Make the cluster secret exist now, so the first boot does not race.
	if _, err := s.registry.Secrets(ctx); err != nil {
		return nil, err
	}

	mayuURL := "http://" + net.JoinHostPort(cfg.Node.AdvertiseAddress.String(), strconv.Itoa(cfg.Node.Ports.HTTP))
	if err := s.openArtifacts(); err != nil {
		return nil, err
	}
	boot := httpboot.New(httpboot.Options{
		Machines: s.registry, Installs: s.registry, Renderer: rend, Files: s.files, BootFiles: s.bootFiles, Digests: served,
		Cluster: cfg.Cluster, MayuURL: mayuURL, Log: log, Registerer: s.metrics,
		Artifacts: s.artifacts, Replica: cfg.Node.Name,
	})

	health := http.NewServeMux()
	// Serve what can be gathered when a part fails (mayu_machines while etcd
	// is unreachable): the etcd error counters matter most then.
	health.Handle("/metrics", promhttp.HandlerFor(s.metrics, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn), ErrorHandling: promhttp.ContinueOnError}))
	health.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	health.HandleFunc("/readyz", s.readyz)
	health.HandleFunc("/leader", s.leader)

	// Everything the health handlers look at exists before they serve.
	runCtx, stop := context.WithCancel(context.Background())
	s.stop = stop
	at := func(a netip.Addr, port int) string { return net.JoinHostPort(a.String(), strconv.Itoa(port)) }
	probe, warning := probeURL(cfg.Node)
	if warning != "" && cfg.Node.Deposition.On() {
		log.Warn(warning)
	}
	s.replica = replica.New(s.conn.Client, cfg, replica.Info{
		Version: version, Advertise: mayuURL, HTTP: at(cfg.Node.ListenAddress, cfg.Node.Ports.HTTP),
		Admin: at(cfg.Node.AdminListenAddress, cfg.Node.Ports.Admin), Metrics: at(cfg.Node.MetricsListenAddress, cfg.Node.Ports.Metrics),
		DHCP: cfg.Node.Ports.DHCP > 0, Started: time.Now().UTC(), Schema: registry.SchemaVersion, Files: served.Digests(),
		Probe: probe,
	}, log, s.metrics)
	s.background(func() { s.replica.Run(runCtx) })
	s.background(func() { s.artifacts.Run(runCtx) })
	// Every replica follows the cluster secret, so a rotation on any one
	// of them reaches all at once.
	s.background(func() { s.registry.FollowSecret(runCtx, log) })
	leases := lease.NewStore(s.conn.Client, state.Keys{Prefix: cfg.Node.Etcd.Prefix}, cfg.Node.Etcd.RequestTimeout)
	leases.Register(s.metrics)
	trail := audit.New(s.conn.Client, audit.Options{Prefix: cfg.Node.Etcd.Prefix, Replica: cfg.Node.Name,
		Timeout: cfg.Node.Etcd.RequestTimeout, MaxEntries: cfg.Node.Admin.Audit.MaxEntries, MaxAge: cfg.Node.Admin.Audit.MaxAge,
		Log: log, Registerer: s.metrics})
	s.background(func() { trail.Run(runCtx) })
	adminAPI := admin.New(admin.Options{Machines: s.registry, Leases: leases, Replicas: s.replica, Secret: s.registry, Artifacts: s.artifacts,
		Config: cfg, Credentials: s.adminCreds, Audit: trail, Log: log, Registerer: s.metrics})
	var adminTLS *tls.Config
	if s.adminCreds.Current().TLS() {
		adminTLS = s.adminCreds.TLSConfig()
	}
	if err := s.startTFTP(); err != nil {
		return nil, err
	}
	// Every replica follows the registered machines, DHCP or not: the
	// registration cap (cluster.self_registration.max_unfinished) counts
	// on it.
	s.known = registry.NewKnown()
	s.registry.UseKnown(s.known)
	s.background(func() { s.registry.FollowKnown(runCtx, s.known, log) })
	if err := s.startDHCP(runCtx, mayuURL, leases); err != nil {
		return nil, err
	}
	s.background(func() { s.sweepInstalls(runCtx) })
	s.background(func() { s.sweepRegistrations(runCtx) })

	lim := cfg.Node.Limits
	for _, l := range []struct {
		name string
		addr netip.Addr
		port int
		h    http.Handler
		lim  *httplimit.Limiter
		tls  *tls.Config
	}{
		{"http", cfg.Node.ListenAddress, cfg.Node.Ports.HTTP, withPeers(boot.Handler(), s.artifacts.PeerHandler()), httplimit.New("http", lim.HTTP, log, s.metrics), nil},
		{"admin", cfg.Node.AdminListenAddress, cfg.Node.Ports.Admin, adminAPI, httplimit.New("admin", lim.Admin, log, s.metrics), adminTLS},
		// No caps on the metrics port: Prometheus and keepalived's health
		// check must get in while the boot port is flooded. It belongs on
		// a management network, out of the boot network's reach
		// (node.metrics_listen_address).
		{"metrics", cfg.Node.MetricsListenAddress, cfg.Node.Ports.Metrics, health, nil, nil},
	} {
		if err := s.listen(runCtx, l.name, l.addr, l.port, l.h, l.lim, l.tls); err != nil {
			return nil, err
		}
	}
	warnDescriptors(log, cfg)
	log.Info("mayu started", "replica", cfg.Node.Name, "advertise", mayuURL, "http", s.Addrs["http"],
		"admin", s.Addrs["admin"], "metrics", s.Addrs["metrics"],
		"config_hash", s.replica.Self().ConfigHash[:12], "cluster_hash", cfg.ClusterHash()[:12], "image_sha256", served["cluster.install.image"].SHA256)
	return s, nil
}

func (s *Server) background(f func()) {
	s.bg.Add(1)
	go func() {
		defer s.bg.Done()
		f()
	}()
}

// startTFTP serves the boot-files directory on every replica.
func (s *Server) startTFTP() error {
	n := s.cfg.Node
	if n.Ports.TFTP == 0 {
		return nil
	}
	conn, err := net.ListenPacket("udp4", net.JoinHostPort(n.ListenAddress.String(), strconv.Itoa(n.Ports.TFTP)))
	if err != nil {
		return fmt.Errorf("node.ports.tftp: %w", err)
	}
	if s.tftp, err = tftp.New(n.BootFilesDir, n.Limits.TFTP, s.log, s.metrics); err != nil {
		conn.Close()
		return err
	}
	s.Addrs["tftp"] = conn.LocalAddr().String()
	go func() {
		if err := s.tftp.Serve(conn); err != nil {
			s.errc <- fmt.Errorf("tftp listener: %w", err)
		}
	}()
	return nil
}

// startDHCP opens the DHCP socket and campaigns for leadership: only the
// leader answers. A replica with DHCP disabled does not campaign.
func (s *Server) startDHCP(ctx context.Context, mayuURL string, leases dhcp.LeaseStore) error {
	n, cl := s.cfg.Node, s.cfg.Cluster
	if n.Ports.DHCP == 0 {
		return nil
	}
	installed := registry.NewInstalled()
	s.background(func() { s.registry.FollowInstalled(ctx, installed, s.log) })
	// A replica that may lead keeps the leases warm, so that winning
	// costs it a catch-up, not a read of every lease.
	if st, ok := leases.(*lease.Store); ok {
		s.background(func() { st.Follow(ctx, s.log) })
	}
	s.dhcp = dhcp.New(dhcp.Options{
		Interface: n.Interface, Port: n.Ports.DHCP, BootServerPort: n.Ports.ProxyDHCP, Advertise: n.AdvertiseAddress, Pools: cl.Pools,
		Policy:  dhcpPolicy(cl, mayuURL),
		Replica: n.Name, Leases: leases, Installed: installed, Known: s.known, Limits: cl.DHCP,
		Log: s.log, Registerer: s.metrics,
	})
	if err := s.dhcp.Listen(); err != nil {
		return err
	}
	s.Addrs["dhcp"] = s.dhcp.Addr().String()
	if a := s.dhcp.BootServerAddr(); a != nil {
		s.Addrs["proxy_dhcp"] = a.String()
	}
	s.background(func() {
		if err := s.dhcp.Serve(ctx); err != nil {
			s.errc <- err
		}
	})
	s.election = election.New(s.conn.Client, n.Etcd.Prefix, n.Name, n.ElectionTTL, s.log, s.metrics)
	// Campaign only while this replica's configuration agrees with the
	// leader's (or no leader publishes one).
	s.election.SetGate(s.replica.Eligible)
	if d := n.Deposition; d.On() {
		s.election.SetDeposition(election.Deposition{Interval: d.ProbeInterval, Timeout: d.ProbeTimeout, SuspectAfter: d.SuspectAfter,
			ProbeURL: s.replica.ProbeURL, Voters: s.replica.Voters})
		s.background(func() { s.election.Watch(ctx) })
	}
	s.background(func() {
		s.election.Run(ctx, func(ctx context.Context, f election.Fence) {
			if err := s.replica.Publish(ctx, f); err != nil {
				s.log.Warn("publishing the cluster configuration failed", "err", err)
			}
			s.dhcp.Lead(ctx, f)
		})
	})
	return nil
}

// listen serves h on addr:port under lim's limits (nil: header limits
// only), over TLS with tlsCfg if not nil; requests see ctx, which Close
// cancels (a mayuctl watch stream then ends).
func (s *Server) listen(ctx context.Context, name string, addr netip.Addr, port int, h http.Handler, lim *httplimit.Limiter, tlsCfg *tls.Config) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(addr.String(), strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("node.ports.%s: %w", name, err)
	}
	s.Addrs[name] = ln.Addr().String()
	var srv *http.Server
	if lim != nil {
		srv = lim.Server(h)
		ln = lim.Listener(ln)
	} else {
		srv = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
	}
	if tlsCfg != nil {
		// TLS above the limiter: the caps count connections before their
		// handshake, so a handshake flood is refused like any other.
		ln = tls.NewListener(ln, tlsCfg)
	}
	// The server's own errors (accept errors when descriptors run out,
	// failed TLS handshakes) in mayu's log, not the standard logger's.
	srv.ErrorLog = slog.NewLogLogger(s.log.Handler(), slog.LevelWarn)
	srv.BaseContext = func(net.Listener) context.Context { return ctx }
	s.servers = append(s.servers, srv)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("%s listener: %w", name, err)
		}
	}()
	return nil
}

// warnDescriptors says so when the connection caps and TFTP's sockets
// could take every descriptor the process may open: then a flood would
// make the replica deaf, embedded etcd included, before any cap refuses.
func warnDescriptors(log *slog.Logger, cfg *config.Config) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return
	}
	l := cfg.Node.Limits
	caps := uint64(l.HTTP.MaxConnections + l.Admin.MaxConnections)
	if cfg.Node.Ports.TFTP > 0 {
		caps += uint64(l.TFTP.MaxTransfers + l.TFTP.MaxPending)
	}
	const reserve = 1024 // etcd, its clients, files being served, DHCP
	if caps+reserve > rl.Cur {
		log.Warn("the connection limits can take every file descriptor: raise LimitNOFILE or lower node.limits",
			"descriptors", rl.Cur, "limits", caps, "reserve", reserve)
	}
}

// readyz is ready when etcd answers and this replica's configuration
// and files agree with the leader's; its listeners are up once Start returned.
// keepalived moves the virtual address away from a replica that is not.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.conn.Client.Get(ctx, s.cfg.Node.Etcd.Prefix+"readyz-probe", clientv3.WithCountOnly()); err != nil {
		http.Error(w, "not ready: etcd unreachable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	if m := s.replica.Mismatch(); m != "" {
		http.Error(w, "not ready: cluster configuration differs from the DHCP leader's: "+m, http.StatusServiceUnavailable)
		return
	}
	// Only a replica that lacks an artifact a peer has held for a while:
	// adding an artifact never makes every replica unready at once.
	if lacking := s.artifacts.Lacking(s.cfg.Cluster.Artifacts(), s.cfg.Node.Artifacts.MissingGrace); len(lacking) > 0 {
		http.Error(w, fmt.Sprintf("not ready: this replica still lacks artifacts a peer has held for over %s: %s (mayuctl artifact list shows the transfers)",
			s.cfg.Node.Artifacts.MissingGrace, strings.Join(lacking, ", ")), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// probeURL is where followers probe this replica while it leads: /leader
// on the metrics port, at the metrics listen address if it is one, else at
// the replica's own address (never the shared advertise address, unless
// nothing else is known).
func probeURL(n config.Node) (url, warning string) {
	a := n.MetricsListenAddress
	if a.IsLoopback() {
		return "", fmt.Sprintf("followers cannot probe this replica while it leads: its metrics port, which answers the probe, listens on %s (set node.metrics_listen_address to an address the replicas reach): a dead leader here is replaced after node.election_ttl", a)
	}
	if !a.IsValid() || a.IsUnspecified() {
		var shared string
		if a, shared = peerAddress(n); shared != "" {
			// A virtual address moves between replicas: probing it could
			// reach a follower. No probe: this replica, as leader, is
			// left to its session TTL.
			return "", "followers cannot probe this replica while it leads (its own address is unknown: set node.metrics_listen_address, node.listen_address, node.interface or node.artifacts.peer_address): a dead leader here is replaced after node.election_ttl"
		}
	}
	return "http://" + net.JoinHostPort(a.String(), strconv.Itoa(n.Ports.Metrics)) + "/leader", ""
}

// leader answers 200 only on the replica answering DHCP. Followers probe
// it (election.Deposition): it answers only while the process runs.
func (s *Server) leader(w http.ResponseWriter, r *http.Request) {
	if s.election != nil {
		if f, ok := s.election.Fence(); ok {
			if s.dhcp.Leading() {
				fmt.Fprintf(w, "leader %s (term %d)\n", s.cfg.Node.Name, f.Rev)
				return
			}
			// Elected, still loading its leases: the term is held.
			http.Error(w, fmt.Sprintf("elected %s (term %d), not answering DHCP yet", s.cfg.Node.Name, f.Rev), http.StatusServiceUnavailable)
			return
		}
	}
	http.Error(w, "not the DHCP leader", http.StatusServiceUnavailable)
}

// sweepInstalls fails installs that outlast cluster.install.timeout.
func (s *Server) sweepInstalls(ctx context.Context) {
	timeout := s.cfg.Cluster.Install.Timeout
	s.sweep(ctx, min(max(timeout/10, time.Second), 30*time.Second), "install timeout",
		func() ([]string, error) { return s.registry.ExpireInstalls(ctx, timeout) },
		func(id string) {
			s.log.Info("machine state changed", "id", id, "state", "failed", "reason", "install timed out", "replica", s.cfg.Node.Name)
		})
}

// sweepRegistrations deletes machines registered on first contact that
// were never installed and sat in configured or failed longer than
// cluster.self_registration.expire_after.
func (s *Server) sweepRegistrations(ctx context.Context) {
	after := s.cfg.Cluster.SelfRegistration.ExpireAfter
	s.sweep(ctx, min(max(after/10, time.Second), time.Minute), "registration expiry",
		func() ([]string, error) { return s.registry.ExpireRegistrations(ctx, after) },
		func(id string) {
			s.log.Info("machine deleted", "id", id, "reason", "registered on first contact, never installed", "after", after, "replica", s.cfg.Node.Name)
		})
}

// sweep runs one sweep every interval until ctx ends, and says what each
// changed. Every replica sweeps: each change is a transaction that checks
// its rule again, so a machine is changed once.
func (s *Server) sweep(ctx context.Context, every time.Duration, what string, run func() ([]string, error), changed func(id string)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			ids, err := run()
			if err != nil && ctx.Err() == nil {
				s.log.Warn(what+" sweep failed", "err", err)
			}
			for _, id := range ids {
				changed(id)
			}
		}
	}
}

// Alive proves the replica still serves: its metrics port, which has no
// connection caps (a flood on the boot port cannot make it fail), answers
// /healthz. The systemd watchdog is fed only while it does.
func (s *Server) Alive(ctx context.Context) error {
	a, ok := s.Addrs["metrics"]
	if !ok {
		return nil // no metrics port: nothing more to prove than a running process
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = "127.0.0.1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(host, port)+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("/healthz: %s", resp.Status)
	}
	return nil
}

// Reload reads the admin API's tokens file, certificate, key and client
// CA again (SIGHUP). If any of them cannot be read, the previous ones stay
// in use and the error says why.
func (s *Server) Reload() error {
	return s.adminCreds.Reload()
}

// Wait blocks until ctx ends or a listener fails.
func (s *Server) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case err := <-s.errc:
		return err
	}
}

// Close stops the listeners (letting requests in flight finish for a few
// seconds), then etcd. Calling it again does nothing.
func (s *Server) Close() { s.closeOnce.Do(s.close) }

func (s *Server) close() {
	// Stop DHCP first (resigning), then the listeners, then etcd.
	if s.stop != nil {
		s.stop()
	}
	s.bg.Wait()
	if s.tftp != nil {
		s.tftp.Shutdown()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range s.servers {
		if srv.Shutdown(ctx) != nil {
			srv.Close() // downloads still running: cut them before etcd goes
		}
	}
	if s.bootFiles != nil {
		s.bootFiles.Close()
	}
	if s.conn != nil {
		s.conn.Close()
	}
	if s.files != nil {
		s.files.Close()
	}
}

// refuseOlderReplicas stops a start while a replica of an older etcd
// schema is announced: the two would void each other's node tokens.
// Schema upgrades stop every replica of the old release first. The
// announcement of one that was killed outlives it by up to
// replica.AnnounceTTL, so an older one still announced is waited for that
// long before the start is refused. An unreadable announcement is logged
// and passed over: it says nothing of its schema.
func refuseOlderReplicas(ctx context.Context, cli *clientv3.Client, cfg *config.Config, log *slog.Logger) error {
	deadline := time.Now().Add(replica.AnnounceTTL + time.Second)
	for {
		others, err := replica.Announced(ctx, cli, state.Keys{Prefix: cfg.Node.Etcd.Prefix})
		if err != nil {
			return err
		}
		var older *replica.Info
		for _, o := range others {
			switch {
			case o.Unreadable:
				log.Warn("a replica announcement cannot be read; passed over", "replica", o.Name)
			case o.Name != cfg.Node.Name && o.Schema < registry.SchemaVersion:
				older = &o
			}
		}
		if older == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica %s (mayu %s) runs an older etcd schema than this mayu (%d): stop every replica of the older release, then start the new ones (docs/etcd.md, \"Schema versions and upgrades\")",
				hostile.Clip(older.Name, 64), hostile.Clip(older.Version, 64), registry.SchemaVersion)
		}
		log.Warn("waiting for a replica of an older etcd schema to go", "replica", older.Name, "version", older.Version)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
	}
}
