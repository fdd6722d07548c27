package registry

import (
	"context"
	"log/slog"
	"strings"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/pkg/state"
)

// Installed is the set of MACs of machines that are installed or running,
// kept current by an etcd watch on the machine records. The DHCP hot path
// asks it, never etcd.
type Installed struct {
	mu     sync.RWMutex
	macs   map[string]string   // mac → machine id
	byID   map[string][]string // machine id → its installed MACs
	loaded bool
	ready  chan struct{}
}

// Has reports whether mac belongs to an installed or running machine.
func (s *Installed) Has(mac string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.macs[mac]
	return ok
}

// Ready is closed once the set was first loaded.
func (s *Installed) Ready() <-chan struct{} { return s.ready }

// Len is the number of installed MACs.
func (s *Installed) Len() int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return len(s.macs)
}

func (s *Installed) set(id string, macs []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.byID[id] {
		if s.macs[m] == id {
			delete(s.macs, m)
		}
	}
	delete(s.byID, id)
	if len(macs) > 0 {
		s.byID[id] = macs
		for _, m := range macs {
			s.macs[m] = id
		}
	}
}

// NewInstalled is an empty set, to be filled by FollowInstalled.
func NewInstalled() *Installed {
	return &Installed{macs: map[string]string{}, byID: map[string][]string{}, ready: make(chan struct{})}
}

// FollowInstalled loads the installed MACs into s and follows changes
// until ctx ends; it returns then. After a watch failure (compaction, etcd
// outage, an etcd leader election) it loads them again.
func (r *Registry) FollowInstalled(ctx context.Context, s *Installed, log *slog.Logger) {
	state.Follower{
		Key: r.keys.Machines(), Prefix: true,
		Load: func(kvs []*mvccpb.KeyValue) {
			// Build the new set aside and swap it in at once: no moment in
			// which an installed machine's MAC looks unknown.
			macs, byID := map[string]string{}, map[string][]string{}
			for _, kv := range kvs {
				if m, err := r.decode(string(kv.Key), kv.Value); err == nil && m.HasBeenInstalled() {
					byID[m.ID] = m.MACs
					for _, mac := range m.MACs {
						macs[mac] = m.ID
					}
				}
			}
			s.mu.Lock()
			s.macs, s.byID = macs, byID
			s.mu.Unlock()
			if !s.loaded {
				s.loaded = true
				close(s.ready)
			}
		},
		Change: func(ev *clientv3.Event) {
			id := strings.TrimPrefix(string(ev.Kv.Key), r.keys.Machines())
			if ev.Type == clientv3.EventTypeDelete {
				s.set(id, nil)
				return
			}
			m, err := r.decode(string(ev.Kv.Key), ev.Kv.Value)
			if err != nil || !m.HasBeenInstalled() {
				s.set(id, nil)
				return
			}
			s.set(id, m.MACs)
		},
		Broken: func(err error) { log.Warn("following installed machines: reloading", "err", err) },
	}.Run(ctx, r.cli)
}
