package etcd

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/url"
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
//
// Taking a member out of the endpoints is not enough for the streams
// already open on it: gRPC closes a removed member's connection only once
// its last stream ends (GracefulClose), and a stream to a silent member
// never ends. On it sit the calls a failover needs most: the session's
// lease keepalives (the session ends TTL after its last answer), the
// campaign's watch for its predecessor's deletion (the new leader does
// not learn it won), and the followed leases' watch (the new leader's
// catch-up waits for a progress notice that never comes). So the
// connections to a member taken out are closed as well: every stream on
// it fails at once, and etcd's client opens it again on a member that
// answers (a watch resumes from its next revision, the keepalives restart
// after half a second).
//
// A member is left out about 0.35 s after it went silent: a serializable
// read of one key answers within a few ms, tens on a loaded host, and two
// misses in a row are asked for, so that one slow answer moves nothing.
// Sooner matters: until then a third of the calls of a failover (a
// follower's verdict, the deposition, the new leader's first writes) go
// to the silent member and wait.
const (
	memberCheck   = 100 * time.Millisecond
	memberTimeout = 150 * time.Millisecond
	memberMisses  = 2
)

// dialed remembers the connections the client dialed, by address, so that
// those of a silent member can be closed. It hands gRPC the *net.TCPConn
// itself (gRPC sets TCP_USER_TIMEOUT only on one) and keeps the last few
// per address: gRPC holds one connection per member at a time, and
// closing one that gRPC already closed does nothing.
type dialed struct {
	mu    sync.Mutex
	conns map[string][]net.Conn
}

// keptPerAddress bounds what dialed remembers of one member.
const keptPerAddress = 4

func (d *dialed) dial(ctx context.Context, addr string) (net.Conn, error) {
	// The net.Dialer's defaults, as gRPC's own dialer (TCP keepalives on).
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	kept := d.conns[addr]
	if len(kept) >= keptPerAddress {
		kept = slices.Delete(kept, 0, len(kept)-keptPerAddress+1)
	}
	d.conns[addr] = append(kept, c)
	return c, nil
}

// cut closes every connection to the member at endpoint ep (an http:// or
// https:// URL: gRPC dials its host:port).
func (d *dialed) cut(ep string) {
	u, err := url.Parse(ep)
	if d == nil || err != nil {
		return
	}
	addr := u.Host
	d.mu.Lock()
	conns := d.conns[addr]
	delete(d.conns, addr)
	d.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// followMembers runs until ctx ends; cfg is the client's configuration,
// endpoints its members, conns what the client dialed (nil: nothing to
// close).
func followMembers(ctx context.Context, cli *clientv3.Client, cfg clientv3.Config, endpoints []string, conns *dialed, probeKey string, log *slog.Logger) {
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
		if len(in) < len(endpoints) {
			// Out of the endpoints first, so that gRPC does not dial it
			// again, then its streams moved (see above).
			for i, m := range members {
				if m.out {
					conns.cut(endpoints[i])
				}
			}
		}
	}
}
