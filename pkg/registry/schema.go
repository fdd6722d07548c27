package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/state"
)

// SchemaVersion is the layout of etcd this mayu reads and writes:
//
//	1 (no schema key) node tokens are an HMAC of machine id and generation
//	2 every record holds a random tokenNonce the token is bound to too
const SchemaVersion = 2

// ErrSchemaNewer: etcd was written by a newer mayu, which this one must
// not touch.
var ErrSchemaNewer = errors.New("etcd holds a newer schema than this mayu knows")

type schemaValue struct {
	Version int `json:"version"`
}

// UpgradeSchema brings what is in etcd to SchemaVersion before this
// replica serves anything, and returns the ids of the records it changed.
// A record from schema 1 gets its tokenNonce and keeps accepting the token
// of the old format for its current generation (machine.LegacyToken), so
// an install in flight during the upgrade completes with the token it
// carries; its next reinstall ends that. Replicas upgrading at once do the
// same work once: each record is changed only while it has no nonce.
func (r *Registry) UpgradeSchema(ctx context.Context) ([]string, error) {
	key := r.keys.Schema()
	cctx, cancel := r.ctx(ctx)
	resp, err := r.cli.Get(cctx, key)
	cancel()
	if err != nil {
		return nil, state.Unavailable("read schema version", err)
	}
	version, rev := 1, int64(0)
	if len(resp.Kvs) > 0 {
		var v schemaValue
		if err := json.Unmarshal(resp.Kvs[0].Value, &v); err != nil || v.Version < 1 {
			return nil, &CorruptError{Key: key, Err: fmt.Errorf("no schema version in %q", resp.Kvs[0].Value)}
		}
		version, rev = v.Version, resp.Kvs[0].ModRevision
	}
	switch {
	case version > SchemaVersion:
		return nil, fmt.Errorf("%w: %s is %d, this mayu writes %d: run the newer mayu on every replica (a downgrade is not supported)",
			ErrSchemaNewer, key, version, SchemaVersion)
	case version == SchemaVersion:
		return nil, nil
	}
	ms, _, err := r.List(ctx)
	if err != nil {
		return nil, err
	}
	var migrated []string
	for _, m := range ms {
		if m.TokenNonce != "" {
			continue
		}
		// changeRecord gives a record without a nonce one, keeping its
		// legacy token while its generation stays.
		changed := false
		_, err := r.changeRecord(ctx, "upgrade machine record", m.ID, func(_ concurrency.STM, m *machine.Machine) error {
			changed = m.TokenNonce == ""
			if !changed {
				return machine.ErrUnchanged // another replica was first
			}
			return nil
		})
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return migrated, err
		}
		if changed {
			migrated = append(migrated, m.ID)
		}
	}
	data, _ := json.Marshal(schemaValue{Version: SchemaVersion})
	cctx, cancel = r.ctx(ctx)
	defer cancel()
	// Conditioned on what was read: a replica that raced this one wrote
	// the same, and a newer mayu's version is never overwritten.
	if _, err := r.cli.Txn(cctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, string(data))).Commit(); err != nil {
		return migrated, state.Unavailable("write schema version", err)
	}
	return migrated, nil
}
