package registry

import (
	"context"
	"encoding/json"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/state"
)

// Change is one change to a machine record.
type Change struct {
	ID string
	// Machine is the record after the change; nil if it was deleted or
	// cannot be read (Err says why).
	Machine *machine.Machine
	// Prev is the record before, if there was a readable one.
	Prev    *machine.Machine
	Deleted bool
	Err     error
}

// Watch calls f with every change to a machine record from now on, in
// order, until ctx ends. A broken watch (an etcd outage or leader change)
// is set up again from the last change seen; broken hears why (may be nil),
// with state.ErrEventsLost if changes were lost meanwhile.
func (r *Registry) Watch(ctx context.Context, f func(Change), broken func(error)) {
	dir := r.keys.Machines()
	state.Follower{
		Key: dir, Prefix: true, Broken: broken, PrevKV: true,
		Change: func(ev *clientv3.Event) {
			c := Change{ID: strings.TrimPrefix(string(ev.Kv.Key), dir), Deleted: ev.Type == clientv3.EventTypeDelete}
			if ev.PrevKv != nil {
				c.Prev, _ = r.decode(string(ev.PrevKv.Key), ev.PrevKv.Value)
			}
			if !c.Deleted {
				c.Machine, c.Err = r.decode(string(ev.Kv.Key), ev.Kv.Value)
			}
			f(c)
		},
	}.Run(ctx, r.cli)
}

// MACOwners maps every MAC of the index to the machine it belongs to.
func (r *Registry) MACOwners(ctx context.Context) (map[string]string, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	dir := r.keys.MACs()
	owners := map[string]string{}
	// Page by page at one revision (state.Paged): the index has a key
	// per MAC of the fleet.
	_, err := state.Paged(ctx, r.cli, dir, 0, func(kvs []*mvccpb.KeyValue) {
		for _, kv := range kvs {
			var o owner
			if json.Unmarshal(kv.Value, &o) == nil {
				owners[strings.TrimPrefix(string(kv.Key), dir)] = o.Machine
			}
		}
	})
	if err != nil {
		return nil, state.Unavailable("read MAC index", err)
	}
	return owners, nil
}
