package registry

import (
	"context"
	"log/slog"
	"slices"
	"sort"
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
//
// A record that cannot be read keeps its MACs silenced: its last known
// installed MACs, and those the MAC index gives it (all a replica that
// just started knows of it). Its state is unknown, and answering a machine
// that may be installed would install it again; staying silent costs a
// machine that was not installed only its install, until an operator
// fixes or deletes the record. Deleting it un-silences its MACs.
func (r *Registry) FollowInstalled(ctx context.Context, s *Installed, log *slog.Logger) {
	dir := r.keys.Machines()
	state.Follower{
		Key: dir, Prefix: true,
		Load: func(kvs []*mvccpb.KeyValue) {
			// Build the new set aside and swap it in at once: no moment in
			// which an installed machine's MAC looks unknown.
			macs, byID := map[string]string{}, map[string][]string{}
			var corrupt []string
			for _, kv := range kvs {
				m, err := r.decode(string(kv.Key), kv.Value)
				switch {
				case err != nil:
					corrupt = append(corrupt, strings.TrimPrefix(string(kv.Key), dir))
				case m.HasBeenInstalled():
					byID[m.ID] = m.MACs
				}
			}
			for _, id := range corrupt {
				byID[id] = r.corruptMACs(ctx, s, id, log)
			}
			for id, ms := range byID {
				for _, mac := range ms {
					macs[mac] = id
				}
			}
			s.mu.Lock()
			s.macs, s.byID = macs, byID
			s.mu.Unlock()
			if !s.loaded {
				s.loaded = true
				close(s.ready)
			}
			if r.afterInstalledLoad != nil {
				r.afterInstalledLoad()
			}
		},
		Change: func(ev *clientv3.Event) {
			id := strings.TrimPrefix(string(ev.Kv.Key), dir)
			if ev.Type == clientv3.EventTypeDelete {
				s.set(id, nil)
				return
			}
			m, err := r.decode(string(ev.Kv.Key), ev.Kv.Value)
			switch {
			case err != nil:
				s.set(id, r.corruptMACs(ctx, s, id, log))
			case m.HasBeenInstalled():
				s.set(id, m.MACs)
			default:
				s.set(id, nil)
			}
		},
		Broken:   func(err error) { log.Warn("following installed machines: reloading", "err", err) },
		Resynced: r.resynced("installed", log),
	}.Run(ctx, r.cli)
}

// corruptMACs are the MACs to keep silent for the unreadable record of id:
// those s last knew as installed, and those the MAC index points at id.
func (r *Registry) corruptMACs(ctx context.Context, s *Installed, id string, log *slog.Logger) []string {
	s.mu.RLock()
	macs := append([]string(nil), s.byID[id]...)
	s.mu.RUnlock()
	owners, err := r.MACOwners(ctx)
	if err != nil {
		log.Warn("machine record unreadable, and the MAC index too: keeping the MACs last known silenced",
			"key", r.keys.Machine(id), "macs", len(macs), "err", err)
	}
	for mac, owner := range owners {
		if owner == id && !slices.Contains(macs, mac) {
			macs = append(macs, mac)
		}
	}
	sort.Strings(macs)
	log.Warn("machine record unreadable: DHCP stays silent to its MACs until it is fixed or deleted",
		"key", r.keys.Machine(id), "macs", strings.Join(macs, ","))
	return macs
}
