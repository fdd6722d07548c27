package etcd

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// A member that goes silent (its host's link cut, its process frozen)
// keeps its connection in the client: the kernel sees no reset, and gRPC's
// keepalive, which would notice, cannot ping more often than every 10 s.
// Until then the client's round robin sends every third call to it, and
// that call hangs until its deadline: a lease write at ACK, a deposition.
// followMembers asks each member, on a connection of its own, for a
// serializable read every memberCheck; a member that does not answer
// memberMisses times in a row is taken out of the client's endpoints, and
// put back as soon as it answers. The client always keeps at least one
// endpoint, and a member that refuses (its process gone) is left to gRPC,
// which notices that at once.
const (
	memberCheck   = 200 * time.Millisecond
	memberTimeout = 300 * time.Millisecond
	memberMisses  = 2
)

// followMembers runs until ctx ends; cfg is the client's configuration,
// endpoints its members.
func followMembers(ctx context.Context, cli *clientv3.Client, cfg clientv3.Config, endpoints []string, probeKey string, log *slog.Logger) {
	type member struct {
		cli    *clientv3.Client
		misses int
		out    bool
	}
	members := make([]member, len(endpoints))
	defer func() {
		for _, m := range members {
			if m.cli != nil {
				m.cli.Close()
			}
		}
	}()
	t := time.NewTicker(memberCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var wg sync.WaitGroup
		silent := make([]bool, len(endpoints))
		for i, ep := range endpoints {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if members[i].cli == nil {
					c := cfg
					c.Endpoints, c.Logger, c.DialTimeout = []string{ep}, zap.NewNop(), memberTimeout
					c.DialOptions = nil // no request metrics: these are not mayu's requests
					mc, err := clientv3.New(c)
					if err != nil {
						return // next time
					}
					members[i].cli = mc
				}
				cctx, cancel := context.WithTimeout(ctx, memberTimeout)
				defer cancel()
				_, err := members[i].cli.Get(cctx, probeKey, clientv3.WithSerializable(), clientv3.WithCountOnly())
				silent[i] = errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil
			}()
		}
		wg.Wait()
		changed := false
		for i := range members {
			m := &members[i]
			if silent[i] {
				m.misses++
			} else {
				m.misses = 0
			}
			if out := m.misses >= memberMisses; out != m.out {
				m.out, changed = out, true
				if out {
					log.Warn("etcd member does not answer: calls go to the others", "endpoint", endpoints[i])
				} else {
					log.Info("etcd member answers again", "endpoint", endpoints[i])
				}
			}
		}
		if !changed {
			continue
		}
		var in []string
		for i, m := range members {
			if !m.out {
				in = append(in, endpoints[i])
			}
		}
		if len(in) == 0 {
			in = slices.Clone(endpoints) // none answers: keep them all
		}
		cli.SetEndpoints(in...)
	}
}
