// Command mayu is one replica of the mayu network-boot service.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/mayu-boot/mayu/pkg/buildinfo"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/dhcp"
	"github.com/mayu-boot/mayu/pkg/ignition"
	"github.com/mayu-boot/mayu/pkg/render"
	"github.com/mayu-boot/mayu/pkg/server"
)

// version is set at build time with -ldflags "-X main.version=..."; when it
// is not, buildinfo reads what the Go toolchain recorded.
var version string

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	version := buildinfo.Version(version) // shadows the stamped one
	fl := flag.NewFlagSet("mayu", flag.ContinueOnError)
	fl.SetOutput(stderr)
	configPath := fl.String("config", "/etc/mayu/mayu.yaml", "configuration file")
	logFormat := fl.String("log-format", "text", "log format: text or json")
	logLevel := fl.String("log-level", "", "log level: debug, info, warn or error (default: node.log_level, or info)")
	check := fl.Bool("check", false, "validate the configuration and render the templates, then exit")
	checkEtcd := fl.Bool("etcd", false, "with -check: also reach etcd as start would, and find the artifacts the configuration names")
	showVersion := fl.Bool("version", false, "print the version and exit")
	usage := func(w io.Writer) {
		fmt.Fprintf(w, "usage: mayu [flags]\n\nmayu answers network-booting machines: DHCP, TFTP, iPXE scripts, installer\nfiles and node callbacks, with all state in etcd.\n\n")
		fl.SetOutput(w)
		fl.PrintDefaults()
	}
	fl.Usage = func() {} // printed below, where it belongs
	if err := fl.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			// Asked for: stdout (mayu -help | less), and not an error.
			usage(stdout)
			return 0
		}
		usage(stderr)
		return 2
	}
	if fl.NArg() > 0 {
		fmt.Fprintf(stderr, "mayu: unexpected argument %q (mayu takes only flags; see mayu -help)\n", fl.Arg(0))
		return 2
	}
	if *showVersion {
		fmt.Fprintln(stdout, "mayu", version)
		return 0
	}
	// The level can change while mayu runs (SIGHUP, node.log_level); the
	// flag, when given, wins over the file.
	level := new(slog.LevelVar)
	if *logLevel != "" {
		if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
			fmt.Fprintf(stderr, "mayu: -log-level %q: use debug, info, warn or error\n", *logLevel)
			return 2
		}
	}
	log, err := newLogger(stderr, *logFormat, level)
	if err != nil {
		fmt.Fprintln(stderr, "mayu:", err)
		return 2
	}
	cfg, err := config.Load(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, "mayu:", err)
		return 1
	}
	if *logLevel == "" {
		level.UnmarshalText([]byte(cfg.Node.LogLevel)) // validated by Load
	}
	if *check {
		warnings, err := server.Check(cfg)
		for _, w := range warnings {
			fmt.Fprintln(stderr, "mayu: warning:", w)
		}
		if *checkEtcd && err == nil {
			var note string
			warnings, note, err = server.CheckEtcd(context.Background(), cfg)
			for _, w := range warnings {
				fmt.Fprintln(stderr, "mayu: warning:", w)
			}
			if note != "" {
				fmt.Fprintln(stderr, "mayu:", note)
			}
		}
		if err != nil {
			// Every problem on a line of its own.
			for _, line := range strings.Split(err.Error(), "\n") {
				fmt.Fprintln(stderr, "mayu:", line)
			}
			fmt.Fprintf(stderr, "mayu: %s: %d problems\n", cfg.Path, strings.Count(err.Error(), "\n")+1)
			return 1
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
	// SIGHUP is caught before the (possibly long) start, so that a
	// `systemctl reload` meanwhile does not kill mayu (the default for
	// SIGHUP); it is acted on once the replica runs.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	srv, err := server.Start(ctx, cfg, log, version)
	if err != nil {
		log.Error("mayu cannot start", "err", err)
		return 1
	}
	// systemd (Type=notify): ready once etcd and every listener are up.
	if _, err := daemon.SdNotify(false, daemon.SdNotifyReady); err != nil {
		log.Warn("cannot notify systemd", "err", err)
	}
	// systemd (WatchdogSec=): fed while the replica proves it serves.
	if every, err := daemon.SdWatchdogEnabled(false); err == nil && every > 0 {
		go watchdog(ctx, every, srv.Alive, notify, log)
	}
	// SIGHUP: the log level, the admin API's tokens and TLS files (see
	// reload); a reload that fails keeps what was there.
	go func() {
		for range hup {
			reload(cfg, level, *logLevel != "", srv, log)
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

func newLogger(w io.Writer, format string, level slog.Leveler) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: level}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q: use text or json", format)
}

// notify sends one sd_notify state to systemd (NOTIFY_SOCKET).
func notify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}

// watchdog tells systemd the replica lives, three times per watchdog
// interval, each time alive answered within a third of it. A replica
// whose listeners hang (a deadlock, a stuck runtime) stops feeding it and
// systemd restarts it; an etcd outage does not count: boot files keep
// flowing, and Restart= would not bring etcd back.
func watchdog(ctx context.Context, every time.Duration, alive func(context.Context) error, notify func(string) error, log *slog.Logger) {
	t := time.NewTicker(every / 3)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		actx, cancel := context.WithTimeout(ctx, every/3)
		err := alive(actx)
		cancel()
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			if !failing {
				log.Warn("the replica does not answer its own health check: systemd's watchdog is not fed and will restart it", "err", err)
			}
			failing = true
			continue
		case failing:
			log.Info("the replica answers its health check again")
			failing = false
		}
		if err := notify(daemon.SdNotifyWatchdog); err != nil {
			log.Warn("cannot notify systemd's watchdog", "err", err)
		}
	}
}
