// Package server is one mayu replica's lifecycle: connect to etcd, check
// the files and templates, open every listener, run until told to stop,
// then close everything. A failure while starting closes what was opened.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/pkg/admin"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/etcd"
	"github.com/mayu-boot/mayu/pkg/httpboot"
	"github.com/mayu-boot/mayu/pkg/registry"
	"github.com/mayu-boot/mayu/pkg/render"
)

// Server is a running replica.
type Server struct {
	cfg      *config.Config
	log      *slog.Logger
	conn     *etcd.Conn
	files    *os.Root
	registry *registry.Registry
	servers  []*http.Server
	errc     chan error
	stop     context.CancelFunc
	done     chan struct{}

	// Addresses the listeners bound, by name (http, admin, metrics);
	// useful when a port was 0.
	Addrs map[string]string
}

// Start brings a replica up. On error everything opened so far is closed.
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger) (_ *Server, err error) {
	s := &Server{cfg: cfg, log: log, errc: make(chan error, 4), done: make(chan struct{}), Addrs: map[string]string{}}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()

	adminToken, err := readToken(cfg.Node.AdminTokenFile)
	if err != nil {
		return nil, err
	}
	if s.files, err = os.OpenRoot(cfg.Node.FilesDir); err != nil {
		return nil, fmt.Errorf("node.files_dir: %w", err)
	}
	if err := checkFiles(s.files, cfg.Cluster.Install); err != nil {
		return nil, fmt.Errorf("%w (files are relative to node.files_dir %s)", err, cfg.Node.FilesDir)
	}
	rend, err := render.New(s.files.FS(), cfg.Cluster)
	if err != nil {
		return nil, fmt.Errorf("%w (files are relative to node.files_dir %s)", err, cfg.Node.FilesDir)
	}

	if s.conn, err = etcd.Open(ctx, cfg.Node, log); err != nil {
		return nil, err
	}
	s.registry = registry.New(s.conn.Client, registry.Options{
		Prefix: cfg.Node.Etcd.Prefix, Cluster: cfg.Cluster, Replica: cfg.Node.Name, Timeout: cfg.Node.Etcd.RequestTimeout,
	})
	// Make the cluster secret exist now, so the first boot does not race.
	if _, err := s.registry.Secret(ctx); err != nil {
		return nil, err
	}

	mayuURL := "http://" + net.JoinHostPort(cfg.Node.AdvertiseAddress.String(), strconv.Itoa(cfg.Node.Ports.HTTP))
	boot := httpboot.New(httpboot.Options{
		Registry: s.registry, Renderer: rend, Files: s.files, Cluster: cfg.Cluster, MayuURL: mayuURL, Log: log,
	})
	adminAPI := admin.New(admin.Options{Registry: s.registry, Config: cfg, Token: adminToken, Log: log})

	health := http.NewServeMux()
	health.Handle("/metrics", promhttp.Handler())
	health.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	health.HandleFunc("/readyz", s.readyz)

	for _, l := range []struct {
		name string
		port int
		h    http.Handler
	}{
		{"http", cfg.Node.Ports.HTTP, boot.Handler()},
		{"admin", cfg.Node.Ports.Admin, adminAPI},
		{"metrics", cfg.Node.Ports.Metrics, health},
	} {
		if err := s.listen(l.name, cfg.Node.ListenAddress, l.port, l.h); err != nil {
			return nil, err
		}
	}

	runCtx, stop := context.WithCancel(context.Background())
	s.stop = stop
	go s.sweepInstalls(runCtx)
	log.Info("mayu started", "replica", cfg.Node.Name, "advertise", mayuURL, "http", s.Addrs["http"],
		"admin", s.Addrs["admin"], "metrics", s.Addrs["metrics"], "config_hash", cfg.ClusterHash()[:12])
	return s, nil
}

func (s *Server) listen(name string, addr netip.Addr, port int, h http.Handler) error {
	ln, err := net.Listen("tcp", net.JoinHostPort(addr.String(), strconv.Itoa(port)))
	if err != nil {
		return fmt.Errorf("node.ports.%s: %w", name, err)
	}
	s.Addrs[name] = ln.Addr().String()
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: an OS image may take minutes to stream.
	}
	s.servers = append(s.servers, srv)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("%s listener: %w", name, err)
		}
	}()
	return nil
}

// readyz is ready when etcd answers.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if _, err := s.conn.Client.Get(ctx, "readyz-probe", clientv3.WithCountOnly()); err != nil {
		http.Error(w, "etcd unreachable: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ready")
}

// sweepInstalls fails installs that outlast cluster.install.timeout. Every
// replica sweeps; the registry's compare-and-swap makes that safe.
func (s *Server) sweepInstalls(ctx context.Context) {
	timeout := s.cfg.Cluster.Install.Timeout
	every := min(max(timeout/10, time.Second), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			ids, err := s.registry.ExpireInstalls(ctx, timeout)
			if err != nil && ctx.Err() == nil {
				s.log.Warn("install timeout sweep failed", "err", err)
			}
			for _, id := range ids {
				s.log.Info("machine state changed", "id", id, "state", "failed", "reason", "install timed out", "replica", s.cfg.Node.Name)
			}
		}
	}
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
// seconds), then etcd.
func (s *Server) Close() {
	if s.stop != nil {
		s.stop()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range s.servers {
		srv.Shutdown(ctx)
	}
	if s.conn != nil {
		s.conn.Close()
	}
	if s.files != nil {
		s.files.Close()
	}
}

func readToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("node.admin_token_file: %w (create it, e.g. `head -c 32 /dev/urandom | base64 > %s`)", err, path)
	}
	tok := strings.TrimSpace(string(data))
	if len(tok) < 16 {
		return "", fmt.Errorf("node.admin_token_file: %s holds %d characters; use a token of at least 16", path, len(tok))
	}
	return tok, nil
}

// checkFiles fails start-up on a missing installer file: a typo in the
// config should stop mayu now, not every machine later.
func checkFiles(root *os.Root, in config.Install) error {
	for _, f := range []struct{ key, name string }{
		{"cluster.install.kernel", in.Kernel},
		{"cluster.install.initrd", in.Initrd},
		{"cluster.install.image", in.Image},
	} {
		st, err := root.Stat(f.name)
		if err != nil {
			return fmt.Errorf("%s: %w", f.key, err)
		}
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%s: %s is not a regular file", f.key, f.name)
		}
	}
	return nil
}
