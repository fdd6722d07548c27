package state

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

// ErrUnavailable marks every error that came from etcd itself rather than
// from the request: the front ends answer 503 (retry) for it.
var ErrUnavailable = errors.New("etcd unavailable")

// Unavailable names the store and the operation in an etcd error, so an
// operator knows where to look, and marks it ErrUnavailable. A canceled
// context is the caller going away, not etcd failing: it is returned as
// it is.
func Unavailable(op string, err error) error {
	if err == nil || errors.Is(err, context.Canceled) {
		return err
	}
	return &unavailable{op: op, err: err}
}

type unavailable struct {
	op  string
	err error
}

func (e *unavailable) Error() string {
	return fmt.Sprintf("etcd %s: %v (is etcd reachable?)", e.op, e.err)
}
func (e *unavailable) Unwrap() []error { return []error{e.err, ErrUnavailable} }

// ErrEventsLost: a follower without Load missed changes (etcd compacted
// them away while its watch was broken).
var ErrEventsLost = errors.New("changes were lost while the watch was broken")

// Retry calls f until it returns nil or ctx ends, pausing after each
// failure; failed (may be nil) hears every failure. It returns nil once f
// succeeded, else ctx's error.
func Retry(ctx context.Context, pause time.Duration, failed func(error), f func(context.Context) error) error {
	for {
		err := f(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if failed != nil {
			failed(err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
	}
}

// Follower keeps something current with a key (or every key under a
// prefix): Load gets what is there, then Change every event, in order.
type Follower struct {
	Key    string
	Prefix bool
	// Load is given every key at one revision, before the first Change
	// and again after a broken watch; nil skips it (the watch then starts
	// at the current revision, and resumes after the last event seen).
	Load func(kvs []*mvccpb.KeyValue)
	// Change is given each event; with PrevKV, with its previous value.
	Change func(ev *clientv3.Event)
	PrevKV bool
	// Broken hears why the watch broke (compaction, an etcd outage or
	// leader change) before it is set up again; may be nil.
	Broken func(err error)
	// Pause between a break and the next attempt; default one second.
	Pause time.Duration
	// Resynced (may be nil) hears each time Load ran again after a broken
	// watch, with whether the watch broke because etcd had compacted the
	// revision it was to resume from (its events are gone: only the
	// reload at a current revision makes what follows right again).
	Resynced func(compacted bool)
	// Progress (may be nil) hears each revision up to which every change
	// has been given to Load or Change: after a load, after each watch
	// answer, and at each progress notification (RequestProgress).
	//
	// A Follower with Progress watches on a gRPC stream of its own, named
	// by its Key, rather than on the one every other Follower on the
	// client shares: etcd answers a progress request on a stream only
	// once every watch on it has reached its start revision
	// (watchableStore.progressIfSync), so a watch opened just after the
	// last write (a new leader's watch on its own key) would hold back the
	// progress awaited until the next write.
	Progress func(rev int64)
}

// streamKey is the gRPC metadata that names a Follower's own stream:
// etcd's client puts watches whose contexts carry different metadata on
// different streams.
const streamKey = "mayu-watch-stream"

// watchContext is the context of the watch of the Follower of key, and
// of the progress requests meant for it; own: on a stream of its own.
func watchContext(ctx context.Context, key string, own bool) context.Context {
	// WithRequireLeader: a member cut off from its cluster ends the
	// watch instead of keeping it silently stale.
	ctx = clientv3.WithRequireLeader(ctx)
	if own {
		// Named by a hash of the key: gRPC metadata values must be
		// printable ASCII, and node.etcd.prefix may hold any character.
		sum := sha256.Sum256([]byte(key))
		ctx = metadata.AppendToOutgoingContext(ctx, streamKey, hex.EncodeToString(sum[:8]))
	}
	return ctx
}

// RequestProgress asks etcd to tell the Follower of key (one with
// Progress) on cli how far its watch is, also when it has seen no change
// for a while.
func RequestProgress(ctx context.Context, cli *clientv3.Client, key string) {
	cli.RequestProgress(watchContext(ctx, key, true))
}

// Compacted reports whether err says that etcd compacted away the
// revision a watch or read asked for.
func Compacted(err error) bool { return errors.Is(err, rpctypes.ErrCompacted) }

// Run follows until ctx ends.
func (f Follower) Run(ctx context.Context, cli *clientv3.Client) {
	pause := f.Pause
	if pause <= 0 {
		pause = time.Second
	}
	var next int64 // the revision to watch from; 0: load first
	loads, compacted := 0, false
	broken := func(err error) {
		// Sticky until the reload: a failed reload after a compacted
		// watch must not make it look like some other break.
		compacted = compacted || Compacted(err)
		if f.Broken != nil {
			f.Broken(err)
		}
	}
	Retry(ctx, pause, broken, func(ctx context.Context) error {
		if next == 0 {
			opts := []clientv3.OpOption{}
			if f.Prefix {
				opts = append(opts, clientv3.WithPrefix())
			}
			if f.Load == nil {
				opts = append(opts, clientv3.WithCountOnly())
			}
			gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := cli.Get(gctx, f.Key, opts...)
			cancel()
			if err != nil {
				return Unavailable("read "+f.Key, err)
			}
			if f.Load != nil {
				f.Load(resp.Kvs)
				if loads++; loads > 1 && f.Resynced != nil {
					f.Resynced(compacted)
				}
				compacted = false
			}
			next = resp.Header.Revision + 1
			if f.Progress != nil {
				f.Progress(resp.Header.Revision)
			}
		}
		wctx, cancel := context.WithCancel(watchContext(ctx, f.Key, f.Progress != nil))
		defer cancel()
		opts := []clientv3.OpOption{clientv3.WithRev(next)}
		if f.PrevKV {
			opts = append(opts, clientv3.WithPrevKV())
		}
		if f.Prefix {
			opts = append(opts, clientv3.WithPrefix())
		}
		for resp := range cli.Watch(wctx, f.Key, opts...) {
			if err := resp.Err(); err != nil {
				if resp.CompactRevision != 0 && f.Load == nil {
					// Nothing to load afresh from: say so, and go on from now.
					next = 0
					return Unavailable("watch "+f.Key, fmt.Errorf("%w: %v", ErrEventsLost, err))
				}
				if f.Load != nil {
					next = 0 // events may be lost: load afresh
				}
				return Unavailable("watch "+f.Key, err)
			}
			for _, ev := range resp.Events {
				f.Change(ev)
				next = ev.Kv.ModRevision + 1
			}
			if f.Progress != nil {
				switch {
				case resp.IsProgressNotify():
					// Every change up to the header's revision was sent.
					f.Progress(resp.Header.Revision)
				case len(resp.Events) > 0:
					// An answer holds every change of the revisions in it.
					f.Progress(next - 1)
				}
			}
		}
		if ctx.Err() != nil {
			return nil
		}
		if f.Load != nil {
			next = 0
		}
		return Unavailable("watch "+f.Key, errors.New("the watch ended"))
	})
}
