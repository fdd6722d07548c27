package artifact

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/pkg/state"
)

// catalogue reads and writes the artifact key spaces (pkg/state:
// artifacts/, artifact-claims/, artifact-holders/, artifact-progress/).
// Every write that depends on what was read is one transaction on the
// revisions read, so two replicas never both win.
type catalogue struct {
	cli     *clientv3.Client
	keys    state.Keys
	timeout time.Duration
}

// entry is a record as read, with the revisions its writes are
// conditioned on.
type entry struct {
	rec         Record
	create, mod int64
}

func decodeRecord(kv *mvccpb.KeyValue) (entry, error) {
	var r Record
	if err := json.Unmarshal(kv.Value, &r); err != nil {
		return entry{}, fmt.Errorf("%s is unreadable: %w", kv.Key, err)
	}
	return entry{rec: r, create: kv.CreateRevision, mod: kv.ModRevision}, nil
}

func (c *catalogue) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, c.timeout)
}

// create puts a new record; ErrExists when the name is taken (names are
// immutable, also while a record is Failed).
func (c *catalogue) create(ctx context.Context, r Record) (entry, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return entry{}, err
	}
	key := c.keys.Artifact(r.Name)
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(data))).
		Commit()
	if err != nil {
		return entry{}, state.Unavailable("add artifact "+r.Name, err)
	}
	if !resp.Succeeded {
		return entry{}, fmt.Errorf("%w: %s (names are immutable: a new version is a new name)", ErrExists, r.Name)
	}
	rev := resp.Header.Revision
	return entry{rec: r, create: rev, mod: rev}, nil
}

// errChanged: the record is no longer what the writer read (removed,
// re-added, or already finished by someone else); its write is dropped.
var errChanged = errors.New("the artifact record changed meanwhile")

// finish replaces a Pending record by r (Ready or Failed), only while the
// record is still the one of create revision e.create and still Pending:
// an artifact removed meanwhile must not come back. The claim goes too.
func (c *catalogue) finish(ctx context.Context, e entry, r Record, replica string) (entry, error) {
	data, err := json.Marshal(r)
	if err != nil {
		return entry{}, err
	}
	key := c.keys.Artifact(r.Name)
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	get, err := c.cli.Get(ctx, key)
	if err != nil {
		return entry{}, state.Unavailable("read artifact "+r.Name, err)
	}
	if len(get.Kvs) == 0 {
		return entry{}, errChanged
	}
	cur, err := decodeRecord(get.Kvs[0])
	if err != nil || cur.create != e.create || cur.rec.Status != Pending {
		return entry{}, errChanged
	}
	claim := c.keys.ArtifactClaim(r.Name)
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", cur.mod)).
		Then(clientv3.OpPut(key, string(data))).
		Commit()
	if err != nil {
		return entry{}, state.Unavailable("update artifact "+r.Name, err)
	}
	if !resp.Succeeded {
		return entry{}, errChanged
	}
	// The claim is pointless now; it is this replica's (else it would not
	// have downloaded), and a stale one would go with the session anyway.
	c.cli.Txn(ctx).If(clientv3.Compare(clientv3.Value(claim), "=", replica)).Then(clientv3.OpDelete(claim)).Commit()
	return entry{rec: r, create: e.create, mod: resp.Header.Revision}, nil
}

// claim takes (or confirms this session holds) the download claim of a
// Pending record of create revision e.create.
func (c *catalogue) claim(ctx context.Context, e entry, replica string, lease clientv3.LeaseID) (bool, error) {
	key := c.keys.Artifact(e.rec.Name)
	claim := c.keys.ArtifactClaim(e.rec.Name)
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(claim), "=", 0),
			clientv3.Compare(clientv3.CreateRevision(key), "=", e.create)).
		Then(clientv3.OpPut(claim, replica, clientv3.WithLease(lease))).
		Else(clientv3.OpGet(claim)).
		Commit()
	if err != nil {
		return false, state.Unavailable("claim artifact "+e.rec.Name, err)
	}
	if resp.Succeeded {
		return true, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	return len(kvs) == 1 && string(kvs[0].Value) == replica && clientv3.LeaseID(kvs[0].Lease) == lease, nil
}

// remove deletes a record and its claim; ErrNotFound when there is none.
func (c *catalogue) remove(ctx context.Context, name string) (int64, error) {
	key := c.keys.Artifact(name)
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).
		Then(clientv3.OpDelete(key), clientv3.OpDelete(c.keys.ArtifactClaim(name))).
		Commit()
	if err != nil {
		return 0, state.Unavailable("remove artifact "+name, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return resp.Header.Revision, nil
}

// announce puts this replica's holder key of sha256hex on lease.
func (c *catalogue) announce(ctx context.Context, sha256hex string, h Holder, lease clientv3.LeaseID) error {
	data, _ := json.Marshal(h)
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	_, err := c.cli.Put(ctx, c.keys.ArtifactHolder(sha256hex, h.Replica), string(data), clientv3.WithLease(lease))
	return state.Unavailable("announce artifact holder", err)
}

// unannounce deletes this replica's holder key of sha256hex.
func (c *catalogue) unannounce(ctx context.Context, sha256hex, replica string) error {
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	_, err := c.cli.Delete(ctx, c.keys.ArtifactHolder(sha256hex, replica))
	return state.Unavailable("withdraw artifact holder", err)
}

// progress publishes (p not nil) or deletes (nil) this replica's
// progress of name.
func (c *catalogue) progress(ctx context.Context, name, replica string, p *Progress, lease clientv3.LeaseID) error {
	key := c.keys.ArtifactProgress(name, replica)
	ctx, cancel := c.ctx(ctx)
	defer cancel()
	var err error
	if p == nil {
		_, err = c.cli.Delete(ctx, key)
	} else {
		data, _ := json.Marshal(p)
		_, err = c.cli.Put(ctx, key, string(data), clientv3.WithLease(lease))
	}
	return state.Unavailable("publish artifact progress", err)
}

// splitTwo splits "<a>/<b>" below dir (holder and progress keys).
func splitTwo(key, dir string) (a, b string, ok bool) {
	rest, ok := strings.CutPrefix(key, dir)
	if !ok {
		return "", "", false
	}
	a, b, ok = strings.Cut(rest, "/")
	return a, b, ok && a != "" && b != "" && !strings.Contains(b, "/")
}
