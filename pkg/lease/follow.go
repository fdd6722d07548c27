package lease

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/pkg/state"
)

// A replica that may lead keeps a copy of every lease current by a watch
// (Follow), so that when it wins it does not read 100,000 leases (15 MB)
// from etcd before its first answer: Load only makes sure the copy has
// seen every change up to etcd's revision at that moment. That is enough:
// a lease is durable before its ACK, and a deposed leader's writes fail
// their fence from the moment its leader key is gone, which is before
// this replica won; so every lease that counts is at or below the
// revision Load reads, and the copy holds it once it has caught up.

// warm is the followed copy of the leases.
type warm struct {
	mu      sync.Mutex
	leases  map[string]Lease // key → lease
	bad     map[string]error // key → why it is skipped
	rev     int64            // every change up to rev is applied
	loaded  bool
	advance chan struct{} // closed (and replaced) when rev moves
}

func (w *warm) moved(rev int64) {
	if rev > w.rev {
		w.rev = rev
		close(w.advance)
		w.advance = make(chan struct{})
	}
}

// catchUpTimeout bounds how long Load waits for the followed copy to
// reach the current revision before it reads every lease instead.
const catchUpTimeout = 2 * time.Second

// Follow keeps a copy of every lease current until ctx ends; Load uses
// it from its first load on. A broken watch loads every lease again
// (state.Follower), a compacted one included.
//
// While this replica leads (Leading), the copy is dropped and the watch
// stopped: the leader's own table is the truth then, and the copy would
// cost it a second set of every lease on its heap (a longer garbage
// collection under load: with 100,000 leases, DHCP answers up to 230 ms
// late instead of 76) and a decode of each lease it writes. Once it no
// longer leads, the copy is loaded again, ready for a later term; a
// replica that wins again before that load is done reads every lease
// itself (as a replica just started does).
func (s *Store) Follow(ctx context.Context, log *slog.Logger) {
	for ctx.Err() == nil {
		s.mu.Lock()
		leading, changed := s.leading, s.leadingChange
		s.mu.Unlock()
		if leading {
			select {
			case <-changed:
			case <-ctx.Done():
			}
			continue
		}
		fctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-changed:
				cancel()
			case <-fctx.Done():
			}
		}()
		s.follow(fctx, log)
		cancel()
	}
}

// Followed reports whether the followed copy is loaded (Load may answer
// from it once it has caught up).
func (s *Store) Followed() bool {
	s.mu.Lock()
	w := s.warm
	s.mu.Unlock()
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.loaded
}

// Leading tells Follow whether this replica leads (the DHCP leader's
// term, from its first answer to its last).
func (s *Store) Leading(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.leading != on {
		s.leading = on
		close(s.leadingChange)
		s.leadingChange = make(chan struct{})
	}
}

// follow is Follow until ctx ends.
func (s *Store) follow(ctx context.Context, log *slog.Logger) {
	w := &warm{leases: map[string]Lease{}, bad: map[string]error{}, advance: make(chan struct{})}
	s.mu.Lock()
	s.warm = w
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.warm = nil
		s.mu.Unlock()
	}()
	dir := s.keys.Leases()
	state.Follower{
		Key: dir, Prefix: true,
		Load: func(kvs []*mvccpb.KeyValue) {
			leases, bad := make(map[string]Lease, len(kvs)), map[string]error{}
			for _, kv := range kvs {
				if l, err := s.decode(dir, kv); err != nil {
					bad[string(kv.Key)] = err
				} else {
					leases[string(kv.Key)] = l
				}
			}
			w.mu.Lock()
			w.leases, w.bad, w.loaded = leases, bad, true
			w.mu.Unlock()
		},
		Change: func(ev *clientv3.Event) {
			key := string(ev.Kv.Key)
			w.mu.Lock()
			defer w.mu.Unlock()
			delete(w.leases, key)
			delete(w.bad, key)
			if ev.Type == clientv3.EventTypeDelete {
				return
			}
			if l, err := s.decode(dir, ev.Kv); err != nil {
				w.bad[key] = err
			} else {
				w.leases[key] = l
			}
		},
		Progress: func(rev int64) {
			w.mu.Lock()
			w.moved(rev)
			w.mu.Unlock()
		},
		Broken: func(err error) {
			w.mu.Lock()
			w.loaded = false // until the reload, Load reads etcd
			w.mu.Unlock()
			if log != nil {
				log.Warn("following the DHCP leases: reloading", "err", err)
			}
		},
	}.Run(ctx, s.cli)
}

// fromWarm returns the followed copy once it has seen etcd's current
// revision; ok is false when there is none (not followed, not loaded, or
// not caught up in time): the caller reads etcd.
func (s *Store) fromWarm(ctx context.Context) (leases []Lease, bad []error, ok bool, err error) {
	s.mu.Lock()
	w := s.warm
	s.mu.Unlock()
	if w == nil {
		return nil, nil, false, nil
	}
	w.mu.Lock()
	loaded, seen := w.loaded, w.rev
	w.mu.Unlock()
	if !loaded {
		// Not loaded yet (a replica just started, or its watch broke):
		// waiting for that load is no faster than reading the leases.
		return nil, nil, false, nil
	}
	// One read gives etcd's current revision, how many leases it holds
	// (a range's count is of every key in it, whatever the revision
	// filter: etcd filters the keys it returns), and whether any was
	// written since the copy's revision.
	cctx, cancel := context.WithTimeout(ctx, s.timeout)
	resp, err := s.cli.Get(cctx, s.keys.Leases(), clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithMinModRev(seen+1), clientv3.WithLimit(1))
	cancel()
	if err != nil {
		return nil, nil, false, state.Unavailable("read the leases' revision", err)
	}
	want, count := resp.Header.Revision, resp.Count
	// None written since the copy's revision: every lease etcd holds at
	// want is in the copy as it is, and the copy holds no other when the
	// counts agree (a delete it has not seen yet: they do not). The copy
	// need not wait for its watch then: a watch that etcd's client set up
	// again (its member cut off) resumes from a revision in the past, and
	// etcd sends it its events, or the progress asked for, only at its
	// next resync, up to 0.1 s later; a new leader waited that long to
	// answer.
	unwritten := len(resp.Kvs) == 0
	deadline := time.NewTimer(catchUpTimeout)
	defer deadline.Stop()
	for {
		w.mu.Lock()
		held := int64(len(w.leases) + len(w.bad))
		caughtUp := w.rev >= want
		// Early: not caught up, but nothing was written since, and no
		// delete is missing (one is: wait for the watch).
		early := !caughtUp && unwritten && held == count
		if w.loaded && caughtUp && held != count {
			// A copy that lacks a lease etcd holds (an etcd server that
			// sent the progress notice ahead of queued events: etcd
			// issue 15220, fixed in 3.5.8) would give its address
			// again: read etcd instead.
			w.mu.Unlock()
			return nil, nil, false, nil
		}
		if w.loaded && (caughtUp || early) {
			leases = make([]Lease, 0, len(w.leases))
			for _, l := range w.leases {
				leases = append(leases, l)
			}
			for _, e := range w.bad {
				bad = append(bad, e)
			}
			w.mu.Unlock()
			return leases, bad, true, nil
		}
		advance := w.advance
		w.mu.Unlock()
		// An idle watch says how far it is only when asked.
		// (Its watch is on a stream of its own: state.Follower.Progress.)
		state.RequestProgress(ctx, s.cli, s.keys.Leases())
		select {
		case <-advance:
		case <-time.After(20 * time.Millisecond):
		case <-deadline.C:
			return nil, nil, false, nil
		case <-ctx.Done():
			return nil, nil, false, ctx.Err()
		}
	}
}

// decode reads one lease key.
func (s *Store) decode(dir string, kv *mvccpb.KeyValue) (Lease, error) {
	var l Lease
	if err := json.Unmarshal(kv.Value, &l); err != nil || !l.IP.IsValid() || l.MAC == "" ||
		strings.TrimPrefix(string(kv.Key), dir) != l.IP.String() {
		return Lease{}, fmt.Errorf("lease %s in etcd is corrupt; it is ignored (delete it with etcdctl)", kv.Key)
	}
	return l, nil
}
