package registry

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/pkg/state"
)

// Known is the set of MACs of every registered machine, whatever its
// state, kept current by an etcd watch on the machine records. The DHCP
// leader asks it, never etcd: a known MAC is not charged against a relay's
// new-client budget, and may ask for an address without an offer. It also
// counts the unfinished machines (machine.Unfinished), which Register
// caps at cluster.self_registration.max_unfinished.
type Known struct {
	loaded     chan struct{} // closed by FollowKnown's first load
	loadOnce   sync.Once
	mu         sync.RWMutex
	macs       map[string]string   // mac → machine id
	byID       map[string][]string // machine id → its MACs
	unfinished map[string]bool     // ids of unfinished machines
	pending    int                 // places reserved by registrations under way
}

// NewKnown is an empty set, to be filled by FollowKnown.
func NewKnown() *Known {
	return &Known{macs: map[string]string{}, byID: map[string][]string{}, unfinished: map[string]bool{},
		loaded: make(chan struct{})}
}

// reserve takes a place under max for a registration under way, if the
// unfinished machines and the registrations under way leave one.
func (k *Known) reserve(max int) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.unfinished)+k.pending >= max {
		return false
	}
	k.pending++
	return true
}

// unreserve gives a place back once its registration ended.
func (k *Known) unreserve() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.pending--
}

// waitLoaded waits for the first load of the records: until then the
// unfinished count would read 0.
func (k *Known) waitLoaded(ctx context.Context) error {
	select {
	case <-k.loaded:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return state.Unavailable("load the machine records", errors.New("no answer from etcd yet"))
	}
}

// Unfinished is how many machines registered on first contact are not
// installed yet, as far as the watch has seen.
func (k *Known) Unfinished() int {
	k.mu.RLock()
	defer k.mu.RUnlock()
	return len(k.unfinished)
}

// Ready is closed once the records were first loaded: until then every
// MAC reads as unregistered.
func (k *Known) Ready() <-chan struct{} { return k.loaded }

// Has reports whether mac belongs to a registered machine.
func (k *Known) Has(mac string) bool {
	k.mu.RLock()
	defer k.mu.RUnlock()
	_, ok := k.macs[mac]
	return ok
}

func (k *Known) set(id string, macs []string, unfinished bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if unfinished {
		k.unfinished[id] = true
	} else {
		delete(k.unfinished, id)
	}
	for _, m := range k.byID[id] {
		if k.macs[m] == id {
			delete(k.macs, m)
		}
	}
	delete(k.byID, id)
	if len(macs) > 0 {
		k.byID[id] = macs
		for _, m := range macs {
			k.macs[m] = id
		}
	}
}

// FollowKnown loads the registered machines' MACs into k and follows
// changes until ctx ends. An unreadable record keeps the MACs last seen
// for it: a machine stays known while an operator repairs its record.
//
// Register counts on k from then on for cluster.self_registration's cap
// (UseKnown makes it count before this goroutine is scheduled).
func (r *Registry) FollowKnown(ctx context.Context, k *Known, log *slog.Logger) {
	r.UseKnown(k)
	state.Follower{
		Key: r.keys.Machines(), Prefix: true, Resynced: r.resynced("known", log),
		Load: func(kvs []*mvccpb.KeyValue) {
			macs, byID, unfinished := map[string]string{}, map[string][]string{}, map[string]bool{}
			k.mu.RLock()
			for _, kv := range kvs {
				id := strings.TrimPrefix(string(kv.Key), r.keys.Machines())
				ms := k.byID[id]
				if m, err := r.decode(string(kv.Key), kv.Value); err == nil {
					ms = m.MACs
					if m.Unfinished() {
						unfinished[id] = true
					}
				} else if k.unfinished[id] {
					unfinished[id] = true
				}
				byID[id] = ms
				for _, mac := range ms {
					macs[mac] = id
				}
			}
			k.mu.RUnlock()
			k.mu.Lock()
			k.macs, k.byID, k.unfinished = macs, byID, unfinished
			k.mu.Unlock()
			k.loadOnce.Do(func() { close(k.loaded) })
		},
		Change: func(ev *clientv3.Event) {
			id := strings.TrimPrefix(string(ev.Kv.Key), r.keys.Machines())
			if ev.Type == clientv3.EventTypeDelete {
				k.set(id, nil, false)
				return
			}
			if m, err := r.decode(string(ev.Kv.Key), ev.Kv.Value); err == nil {
				k.set(id, m.MACs, m.Unfinished())
			}
		},
		Broken: func(err error) { log.Warn("following registered machines: reloading", "err", err) },
	}.Run(ctx, r.cli)
}

// UseKnown makes Register count unfinished machines in k (which
// FollowKnown fills) for cluster.self_registration.max_unfinished; until
// k's first load, registrations on first contact wait.
func (r *Registry) UseKnown(k *Known) { r.known.Store(k) }
