package main

import (
	"log/slog"

	"github.com/mayu-boot/mayu/pkg/config"
)

// reloader is what a SIGHUP reloads in the running replica: the admin
// API's tokens and TLS files (Reload logs what failed, keeping the old).
type reloader interface{ Reload() error }

// reload applies what can change without a restart (SIGHUP, `systemctl
// reload mayu`): node.log_level (unless -log-level was given) and the
// admin credentials files. Every other change in the file is named in the
// log as waiting for a restart, so an operator who edited the file is not
// left guessing whether it took. A file that no longer loads changes
// nothing but the credentials, which live in files of their own.
func reload(running *config.Config, level *slog.LevelVar, levelFromFlag bool, srv reloader, log *slog.Logger) {
	log.Info("SIGHUP: reloading", "config", running.Path)
	cfg, err := config.Load(running.Path)
	if err != nil {
		log.Error("SIGHUP: the configuration file does not load; the running one stays", "err", err)
	} else {
		for _, key := range config.Changed(running, cfg) {
			if key == "node.log_level" {
				continue
			}
			log.Warn("SIGHUP: this change takes effect at the next restart", "key", key)
		}
		if !levelFromFlag {
			var l slog.Level
			l.UnmarshalText([]byte(cfg.Node.LogLevel)) // validated by Load
			if l != level.Level() {
				level.Set(l)
				log.Info("SIGHUP: log level changed", "level", l.String())
			}
		}
	}
	srv.Reload()
}
