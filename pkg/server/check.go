package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

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
	}
	if _, how := peerAddress(cfg.Node); how != "" && len(cfg.Cluster.Artifacts()) > 0 {
		warnings = append(warnings, "node.artifacts.peer_address is not set: "+how)
	}
	return warnings, errors.Join(problems...)
}

// CheckEtcd connects to the configured etcd as start would (mayu -check
// -etcd): the endpoints answer, the credentials are accepted, and every
// artifact the configuration names is in the catalogue. The embedded etcd
// is started by mayu itself: nothing to reach before.
func CheckEtcd(ctx context.Context, cfg *config.Config) (note string, err error) {
	if len(cfg.Node.Etcd.Endpoints) == 0 {
		return "etcd: embedded (no node.etcd.endpoints): mayu starts it, nothing to reach yet", nil
	}
	conn, err := etcd.Open(ctx, cfg.Node, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err != nil {
		return "", err
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
		return "", errors.Join(problems...)
	}
	return fmt.Sprintf("etcd: %v answers; %d artifacts named are in the catalogue", cfg.Node.Etcd.Endpoints, len(cfg.Cluster.Artifacts())), nil
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
