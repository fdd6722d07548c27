package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/pkg/admin"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/dhcp"
	"github.com/mayu-boot/mayu/pkg/etcd"
	"github.com/mayu-boot/mayu/pkg/render"
	"github.com/mayu-boot/mayu/pkg/state"
)

// Check makes, without side effects, every check Start makes before it
// reaches etcd or binds a port (mayu -check): the admin credentials, the
// etcd client's files, every install file and template, the iPXE binaries,
// the templates rendered for a machine of every profile (and validated
// where they are Ignition), the DHCP interface. It returns every problem
// it finds, not the first, and the warnings start would log.
func Check(cfg *config.Config) (warnings []string, err error) {
	var problems []error
	reported := map[string]bool{} // keys with a problem: one line each
	var add func(err error)
	add = func(err error) {
		if err == nil {
			return
		}
		if errs := split(err); len(errs) > 1 {
			for _, e := range errs {
				add(e)
			}
			return
		}
		// A file that is missing fails both its hashing and the
		// rendering: said once, under its key.
		key, _, _ := strings.Cut(err.Error(), ":")
		if strings.HasPrefix(key, "cluster.") || strings.HasPrefix(key, "node.") {
			if reported[key] {
				return
			}
			reported[key] = true
		}
		problems = append(problems, err)
	}
	_, err = admin.LoadCredentials(cfg.Node)
	add(err)
	if cfg.Node.Admin.TokensFile == "" {
		warnings = append(warnings, "node.admin_token_file is deprecated: move its token to node.admin.tokens_file")
	}
	if cfg.Node.Admin.CertFile == "" {
		warnings = append(warnings, "the admin API speaks plain HTTP (no node.admin.cert_file): its tokens cross the network in clear text")
	}
	add(etcd.Check(cfg.Node.Etcd))

	files, err := os.OpenRoot(cfg.Node.FilesDir)
	if err != nil {
		add(fmt.Errorf("node.files_dir: %w", err))
	} else {
		defer files.Close()
	}
	boot, err := os.OpenRoot(cfg.Node.BootFilesDir)
	switch {
	case err != nil && cfg.Node.Ports.TFTP > 0:
		add(fmt.Errorf("node.boot_files_dir: %w (copy undionly.kpxe and ipxe.efi there, or set node.ports.tftp: 0)", err))
	case err == nil:
		defer boot.Close()
		for key, name := range bootFiles(cfg.Cluster.Boot) {
			if name == "" {
				continue
			}
			if _, err := boot.Stat(name); errors.Is(err, os.ErrNotExist) {
				warnings = append(warnings, fmt.Sprintf("%s: %s is not in node.boot_files_dir %s: machines of that firmware get no boot file", key, name, cfg.Node.BootFilesDir))
			}
		}
	}
	if files != nil {
		_, err := hashFiles(files, boot, cfg.Cluster)
		for _, e := range split(err) {
			if !strings.Contains(e.Error(), "node.boot_files_dir") {
				e = fmt.Errorf("%w (under node.files_dir %s)", e, cfg.Node.FilesDir)
			}
			add(e)
		}
		r, err := render.New(files.FS(), cfg.Cluster)
		if err != nil {
			add(err)
		} else {
			warnings = append(warnings, r.Warnings()...)
		}
	}
	if cfg.Node.Ports.DHCP > 0 {
		add(dhcp.CheckInterface(cfg.Node.Interface, cfg.Cluster.Pools))
		if w := interfaceOutsidePools(cfg); w != "" {
			warnings = append(warnings, w)
		}
		if w := dhcp.BootServerWarning(cfg.Cluster.Pools, cfg.Node.Ports.ProxyDHCP); w != "" {
			warnings = append(warnings, w)
		}
	}
	// The directories start creates and writes: the embedded etcd's and
	// the artifact cache.
	dirs := [][2]string{{"node.artifacts.cache_dir", cfg.Node.Artifacts.CacheDir}}
	if len(cfg.Node.Etcd.Endpoints) == 0 {
		dirs = append(dirs, [2]string{"node.data_dir", cfg.Node.DataDir})
	}
	for _, d := range dirs {
		switch err := checkWritableDir(d[0], d[1]); {
		case errors.Is(err, fs.ErrPermission):
			// The answer holds for who runs -check, which need not be
			// the user the service runs as (a CI job, a workstation).
			warnings = append(warnings, fmt.Sprintf("%v (as uid %d; the service's user may differ)", err, os.Geteuid()))
		default:
			add(err)
		}
	}
	warnings = append(warnings, exposedPorts(cfg)...)
	if _, how := peerAddress(cfg.Node); how != "" && len(cfg.Cluster.Artifacts()) > 0 {
		warnings = append(warnings, "node.artifacts.peer_address is not set: "+how)
	}
	return warnings, errors.Join(problems...)
}

// CheckEtcd connects to the configured etcd as start would (mayu -check
// -etcd): the endpoints answer, the credentials are accepted, and every
// artifact the configuration names is in the catalogue. The embedded etcd
// is started by mayu itself: nothing to reach before.
func CheckEtcd(ctx context.Context, cfg *config.Config) (warnings []string, note string, err error) {
	if len(cfg.Node.Etcd.Endpoints) == 0 {
		return nil, "etcd: embedded (no node.etcd.endpoints): mayu starts it, nothing to reach yet", nil
	}
	// What start would warn about (a password over http://) is shown.
	var logged warningsHandler
	conn, err := etcd.Open(ctx, cfg.Node, slog.New(&logged), nil)
	warnings = logged.lines
	if err != nil {
		return warnings, "", err
	}
	defer conn.Close()
	keys := state.Keys{Prefix: cfg.Node.Etcd.Prefix}
	var problems []error
	for _, name := range cfg.Cluster.Artifacts() {
		cctx, cancel := context.WithTimeout(ctx, cfg.Node.Etcd.RequestTimeout)
		resp, err := conn.Client.Get(cctx, keys.Artifact(name), clientv3.WithCountOnly())
		cancel()
		switch {
		case err != nil:
			problems = append(problems, fmt.Errorf("etcd: reading artifact %q: %w", name, err))
		case resp.Count == 0:
			problems = append(problems, fmt.Errorf("artifact %q is not in the catalogue (mayuctl artifact add)", name))
		}
	}
	if len(problems) > 0 {
		return warnings, "", errors.Join(problems...)
	}
	return warnings, fmt.Sprintf("etcd: %v answers; %d artifacts named are in the catalogue", cfg.Node.Etcd.Endpoints, len(cfg.Cluster.Artifacts())), nil
}

// split undoes errors.Join: one error per problem.
func split(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, split(e)...)
		}
		return out
	}
	return []error{err}
}

// checkWritableDir says whether start could create and write dir: it is
// a directory, or the nearest part of its path that exists is, and that
// is writable (access(2): a read-only file system or missing permission
// fail; -check creates nothing).
func checkWritableDir(key, dir string) error {
	for p := filepath.Clean(dir); ; p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		switch {
		case (errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)) && p != filepath.Dir(p):
			continue // created at start, if its parent allows: look there
		case err != nil:
			return fmt.Errorf("%s: %w", key, err)
		case !fi.IsDir():
			return fmt.Errorf("%s: %s is not a directory", key, p)
		}
		if err := syscall.Access(p, 2 /* W_OK */); err != nil {
			return fmt.Errorf("%s: %s is not writable: %w", key, p, err)
		}
		return nil
	}
}

// interfaceOutsidePools warns when node.interface has no address in a
// full pool's subnet: the leader then answers from its first address,
// and only relayed requests land in a pool.
func interfaceOutsidePools(cfg *config.Config) string {
	ifc, err := net.InterfaceByName(cfg.Node.Interface)
	if err != nil {
		return "" // an error of its own
	}
	addrs, _ := ifc.Addrs()
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			for _, pool := range cfg.Cluster.Pools {
				if pool.Subnet.Contains(p.Addr().Unmap()) {
					return ""
				}
			}
		}
	}
	return fmt.Sprintf("node.interface %s has no address in any pool's subnet: only relayed requests are answered", cfg.Node.Interface)
}

// exposedPorts warns when the admin API or the metrics port listens on
// every address or on the boot network: the metrics port has no
// connection caps (Prometheus and health checks must always get in), so a
// host on the boot network could fill it; the admin API belongs on a
// management network too.
func exposedPorts(cfg *config.Config) []string {
	var out []string
	for _, l := range []struct {
		key  string
		addr netip.Addr
	}{{"node.metrics_listen_address", cfg.Node.MetricsListenAddress}, {"node.admin_listen_address", cfg.Node.AdminListenAddress}} {
		if l.addr.IsUnspecified() {
			out = append(out, fmt.Sprintf("%s is %s: the port is reachable from the boot network; bind it to a management address", l.key, l.addr))
			continue
		}
		for _, pool := range cfg.Cluster.Pools {
			if pool.Subnet.Contains(l.addr) {
				out = append(out, fmt.Sprintf("%s %s is in the boot network %s: bind it to a management address", l.key, l.addr, pool.Subnet))
				break
			}
		}
	}
	return out
}

// warningsHandler keeps the warnings logged through it, as lines for
// -check to print.
type warningsHandler struct {
	mu    sync.Mutex
	lines []string
}

func (h *warningsHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelWarn }

func (h *warningsHandler) Handle(_ context.Context, r slog.Record) error {
	line := r.Message
	r.Attrs(func(a slog.Attr) bool { line += " " + a.String(); return true })
	h.mu.Lock()
	h.lines = append(h.lines, line)
	h.mu.Unlock()
	return nil
}

func (h *warningsHandler) WithAttrs(as []slog.Attr) slog.Handler {
	// Records through the derived handler land in the same list.
	return &derivedHandler{h, as}
}

func (h *warningsHandler) WithGroup(string) slog.Handler { return h }

type derivedHandler struct {
	root  *warningsHandler
	attrs []slog.Attr
}

func (d *derivedHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return d.root.Enabled(ctx, l)
}
func (d *derivedHandler) Handle(ctx context.Context, r slog.Record) error {
	r.AddAttrs(d.attrs...)
	return d.root.Handle(ctx, r)
}
func (d *derivedHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &derivedHandler{d.root, append(append([]slog.Attr(nil), d.attrs...), as...)}
}
func (d *derivedHandler) WithGroup(string) slog.Handler { return d }
