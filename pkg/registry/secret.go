package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/mayu-boot/mayu/pkg/state"
	"github.com/mayu-boot/mayu/pkg/token"
)

// secretValue is the value of the cluster secret key. The secrets are used
// as they are stored (their hex text is the HMAC key), as since the first
// release, so tokens handed out before an upgrade stay valid.
type secretValue struct {
	Secret string `json:"secret"`
	// Previous is the secret before the last rotation; it opens what it
	// opened until PreviousUntil (the rotation plus the install timeout).
	Previous      string    `json:"previous,omitempty"`
	PreviousUntil time.Time `json:"previousUntil,omitzero"`
	Rotated       time.Time `json:"rotated,omitzero"`
	Replica       string    `json:"replica,omitempty"` // the replica that rotated it
}

func (v secretValue) keys() token.Keys {
	k := token.Keys{Current: []byte(v.Secret)}
	if v.Previous != "" {
		k.Previous, k.PreviousUntil = []byte(v.Previous), v.PreviousUntil
	}
	return k
}

func parseSecret(key string, data []byte) (secretValue, error) {
	var v secretValue
	if err := json.Unmarshal(data, &v); err != nil {
		return v, &CorruptError{Key: key, Err: err}
	}
	if len(v.Secret) < 32 {
		return v, &CorruptError{Key: key, Err: errors.New("no usable secret")}
	}
	return v, nil
}

// followedSecret is what FollowSecret keeps current: the keys at the
// revision of etcd they were read at; nil while not followed.
type followedSecret struct {
	mu   sync.Mutex
	keys *token.Keys
	rev  int64
}

func (f *followedSecret) get() (token.Keys, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.keys == nil {
		return token.Keys{}, false
	}
	return *f.keys, true
}

// set stores keys read at rev, unless something newer is there already
// (a rotation made here races its own watch event). force: after a
// break, whatever is read is current.
func (f *followedSecret) set(k *token.Keys, rev int64, force bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if force || f.keys == nil || rev >= f.rev {
		f.keys, f.rev = k, rev
	}
}

// Secrets returns the cluster secrets node tokens are made and checked
// with, creating the secret on first use (whichever replica creates it
// first wins). While FollowSecret runs they come from memory, kept current
// by an etcd watch; else, and while that watch is broken, from etcd.
func (r *Registry) Secrets(ctx context.Context) (token.Keys, error) {
	if k, ok := r.secret.get(); ok {
		return k, nil
	}
	v, _, err := r.readSecret(ctx)
	if err != nil {
		return token.Keys{}, err
	}
	return v.keys(), nil
}

// readSecret reads the secret, creating it if there is none yet.
func (r *Registry) readSecret(ctx context.Context) (secretValue, int64, error) {
	fresh, err := randomHex(32)
	if err != nil {
		return secretValue{}, 0, err
	}
	value := secretValue{Secret: fresh}
	data, _ := json.Marshal(value)
	key := r.keys.Secret()
	cctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.cli.Txn(cctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(data))).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return secretValue{}, 0, state.Unavailable("read cluster secret", err)
	}
	if resp.Succeeded {
		return value, resp.Header.Revision, nil
	}
	kvs := resp.Responses[0].GetResponseRange().Kvs
	if len(kvs) == 0 {
		return secretValue{}, 0, &CorruptError{Key: key, Err: errors.New("no usable secret")}
	}
	value, err = parseSecret(key, kvs[0].Value)
	return value, kvs[0].ModRevision, err
}

// FollowSecret keeps this replica's copy of the cluster secret current
// until ctx ends, so that a rotation made on any replica reaches every
// replica at once: no replica refuses a token another just handed out.
func (r *Registry) FollowSecret(ctx context.Context, log *slog.Logger) {
	key := r.keys.Secret()
	keep := func(kv *mvccpb.KeyValue, force bool) {
		v, err := parseSecret(key, kv.Value)
		if err != nil {
			log.Error("cluster secret unreadable: node tokens are checked against etcd on every call until it is fixed", "err", err)
			r.secret.set(nil, kv.ModRevision, true)
			return
		}
		k := v.keys()
		r.secret.set(&k, kv.ModRevision, force)
	}
	defer r.secret.set(nil, 0, true)
	state.Follower{
		Key: key, Resynced: r.resynced("secret", log),
		Load: func(kvs []*mvccpb.KeyValue) {
			if len(kvs) == 0 {
				r.secret.set(nil, 0, true) // Secrets creates it
				return
			}
			keep(kvs[0], true)
		},
		Change: func(ev *clientv3.Event) {
			if ev.Type == clientv3.EventTypeDelete {
				log.Warn("cluster secret deleted from etcd: a new one is made, every node token handed out so far is void")
				r.secret.set(nil, ev.Kv.ModRevision, true)
				return
			}
			keep(ev.Kv, false)
		},
		Broken: func(err error) {
			// Until the watch is back, read the secret from etcd: a copy
			// that may have missed a rotation is never trusted.
			r.secret.set(nil, 0, true)
			log.Warn("following the cluster secret: reloading", "err", err)
		},
	}.Run(ctx, r.cli)
}

// Rotation is what a rotation of the cluster secret did; it never holds a
// secret.
type Rotation struct {
	Rotated time.Time
	// PreviousUntil is when tokens made with the previous secret stop
	// opening anything.
	PreviousUntil time.Time
	Replica       string
}

// RotateSecret replaces the cluster secret with a new random one: every
// token handed out from now on is made with it. The previous secret keeps
// opening what it opened for cluster.install.timeout, so installs in
// flight complete (each render hands them a token of the new secret);
// the one before it is dropped at once.
func (r *Registry) RotateSecret(ctx context.Context) (Rotation, error) {
	fresh, err := randomHex(32)
	if err != nil {
		return Rotation{}, err
	}
	now := r.now().UTC()
	key := r.keys.Secret()
	var next secretValue
	err = r.stm(ctx, "rotate cluster secret", func(stm concurrency.STM) error {
		next = secretValue{Secret: fresh, Rotated: now, Replica: r.replica}
		if stm.Rev(key) != 0 {
			cur, err := parseSecret(key, []byte(stm.Get(key)))
			if err != nil {
				return err
			}
			next.Previous, next.PreviousUntil = cur.Secret, now.Add(r.cluster.Install.Timeout)
		}
		data, err := json.Marshal(next)
		if err != nil {
			return err
		}
		stm.Put(key, string(data))
		return nil
	})
	if err != nil {
		return Rotation{}, fmt.Errorf("rotating the cluster secret: %w", err)
	}
	// This replica hands out tokens of the new secret at once rather than
	// when its watch hears of it.
	if _, ok := r.secret.get(); ok {
		if v, rev, err := r.readSecret(ctx); err == nil {
			k := v.keys()
			r.secret.set(&k, rev, false)
		}
	}
	return Rotation{Rotated: now, PreviousUntil: next.PreviousUntil, Replica: r.replica}, nil
}
