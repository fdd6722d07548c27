package etcd

import (
	"context"
	"log/slog"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Outage watching: every other log line about etcd comes from whatever
// call failed (an election, a lease write), so an operator reading the log
// after an outage could not tell when etcd came back. One line when the
// cluster stops answering, one when it answers again, with how long it
// was gone.
const (
	outageCheck   = time.Second
	outageTimeout = time.Second
	outageMisses  = 2 // consecutive failed checks before calling it an outage
)

func watchOutage(ctx context.Context, cli *clientv3.Client, probeKey string, log *slog.Logger, every, timeout time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	var misses int
	var since time.Time // first failed check of the current outage
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, timeout)
		_, err := cli.Get(cctx, probeKey, clientv3.WithCountOnly())
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil:
			if misses == 0 {
				since = time.Now()
			}
			misses++
			if misses == outageMisses {
				log.Warn("etcd does not answer: no DHCP answers and no machine changes until it does; boot files keep flowing",
					"error", err, "since", since.UTC().Format(time.RFC3339))
			}
		case misses >= outageMisses:
			log.Info("etcd answers again", "outage", time.Since(since).Round(100*time.Millisecond))
			misses = 0
		default:
			misses = 0
		}
	}
}
