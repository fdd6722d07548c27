// Command mayu is one replica of the mayu network-boot service.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/dhcp"
	"github.com/mayu-boot/mayu/pkg/etcd"
	"github.com/mayu-boot/mayu/pkg/ignition"
	"github.com/mayu-boot/mayu/pkg/render"
	"github.com/mayu-boot/mayu/pkg/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fl := flag.NewFlagSet("mayu", flag.ContinueOnError)
	fl.SetOutput(stderr)
	configPath := fl.String("config", "/etc/mayu/mayu.yaml", "configuration file")
	logFormat := fl.String("log-format", "text", "log format: text or json")
	logLevel := fl.String("log-level", "info", "log level: debug, info, warn or error")
	check := fl.Bool("check", false, "validate the configuration and render the templates, then exit")
	showVersion := fl.Bool("version", false, "print the version and exit")
	fl.Usage = func() {
		fmt.Fprintf(stderr, "usage: mayu [flags]\n\nmayu answers network-booting machines: DHCP, TFTP, iPXE scripts, installer\nfiles and node callbacks, with all state in etcd.\n\n")
		fl.PrintDefaults()
	}
	if err := fl.Parse(args); err != nil {
		return 2
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "mayu: unexpected argument %q (mayu takes only flags; see mayu -help)\n", fl.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stderr, "mayu", version)
		return 0
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintln(stderr, "mayu:", err)
		return 2
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, "mayu:", err)
		return 1
	}
	if *check {
		warnings, err := checkConfig(cfg)
		if err != nil {
			fmt.Fprintln(stderr, "mayu:", err)
			return 1
		}
		for _, w := range warnings {
			fmt.Fprintln(stderr, "mayu: warning:", w)
		}
		samples := len(render.Samples(cfg.Cluster))
		for _, t := range []struct{ key, format string }{
			{"cluster.templates.first_stage", cfg.Cluster.Templates.FirstStageFormat},
			{"cluster.templates.final_config", cfg.Cluster.Templates.FinalConfigFormat},
		} {
			if t.format == config.FormatIgnition {
				fmt.Fprintf(stderr, "mayu: %s: valid Ignition %s for %d sample machines (one per profile)\n", t.key, ignition.Version, samples)
			}
		}
		fmt.Fprintf(stderr, "mayu: %s is valid (cluster config hash %s)\n", cfg.Path, cfg.ClusterHash())
		for _, l := range cfg.Node.Limits.Summary() {
			fmt.Fprintln(stderr, "mayu:", l)
		}
		printOffers(stderr, cfg)
		return 0
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv, err := server.Start(ctx, cfg, log, version)
	if err != nil {
		log.Error("mayu cannot start", "err", err)
		return 1
	}
	// systemd (Type=notify): ready once etcd and every listener are up.
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("cannot notify systemd", "err", err)
	}
	// SIGHUP reloads the admin API's tokens and TLS files; a reload that
	// fails keeps the previous ones (Reload logs why).
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	go func() {
		for range hup {
			log.Info("SIGHUP: reloading the admin credentials")
			srv.Reload()
		}
	}()
	err = srv.Wait(ctx)
	log.Info("mayu stopping")
	daemon.SdNotify(false, daemon.SdNotifyStopping)
	srv.Close()
	if err != nil {
		log.Error("mayu stopped", "err", err)
		return 1
	}
	return 0
}

// checkConfig checks what -check promises; the warnings are Ignition's
// on the sample machine's configs, which do not stop mayu.
func checkConfig(cfg *config.Config) ([]string, error) {
	// The etcd certificates and password file are read as at start.
	if err := etcd.Check(cfg.Node.Etcd); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(cfg.Node.FilesDir)
	if err != nil {
		return nil, fmt.Errorf("node.files_dir: %w", err)
	}
	defer root.Close()
	r, err := render.New(root.FS(), cfg.Cluster)
	if err != nil {
		return nil, err
	}
	return r.Warnings(), nil
}

// printOffers shows, per pool, the OFFER each kind of boot client gets:
// the reply the leader's own code builds for a sample DISCOVER of that
// firmware, options by code, and the configured options it leaves out.
func printOffers(w io.Writer, cfg *config.Config) {
	for i, pool := range server.PreviewDHCP(cfg) {
		pc := cfg.Cluster.Pools[i]
		fmt.Fprintf(w, "mayu: cluster.pools[%d] %s: the OFFER each kind of client gets (server identifier: the leader's own address; %s here)\n",
			i, pc.Subnet, cfg.Node.AdvertiseAddress)
		for _, pv := range pool {
			if pv.Offer == nil {
				fmt.Fprintf(w, "mayu:   %s: no answer (%s)\n", pv.Client, pv.Why)
				continue
			}
			o := pv.Offer
			fmt.Fprintf(w, "mayu:   %s: yiaddr %s, siaddr %s, file %q\n", pv.Client, o.YourIPAddr, o.ServerIPAddr, o.BootFileName)
			for _, l := range dhcp.DescribeOptions(o, pc) {
				fmt.Fprintf(w, "mayu:     %s\n", l)
			}
			for _, l := range pv.NotSent {
				fmt.Fprintf(w, "mayu:     not sent: %s\n", l)
			}
		}
	}
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: use text or json", format)
}
