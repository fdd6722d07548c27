// Package election decides which replica answers DHCP. Every replica, even
// a lone one, campaigns through etcd (client/v3/concurrency); the winner
// leads while its session lives. Losing the session (etcd unreachable,
// partition, keepalives failing) ends the leadership, unless etcd renews
// the session's lease when asked (resume); a graceful stop resigns so the
// next replica takes over without waiting out the TTL.
//
// Leadership comes with a Fence: the leader key and its create revision.
// Every write only the leader may make carries the Fence as a transaction
// condition, so a deposed leader that does not know it yet (frozen,
// partitioned) can never write.
package election

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/mayu-boot/mayu/pkg/state"
)

// Fence identifies one term of leadership.
type Fence struct {
	Key   string           // the leader key this replica created
	Rev   int64            // its create revision
	Lease clientv3.LeaseID // the session lease: keys on it vanish with the term
}

// Write applies ops only while this term holds: the one way a leader-only
// write is made. It returns ErrDeposed if the term is over.
func (f Fence) Write(ctx context.Context, cli *clientv3.Client, ops ...clientv3.Op) error {
	resp, err := cli.Txn(ctx).If(f.Cmp()).Then(ops...).Commit()
	if err != nil {
		return err
	}
	if !resp.Succeeded {
		return ErrDeposed
	}
	return nil
}

// ErrDeposed means a fenced write found that the term is over.
var ErrDeposed = errors.New("no longer the DHCP leader: write refused by etcd")

// Gate says whether a replica may campaign now, and gives a channel that
// is closed when that may have changed.
type Gate func() (ok bool, changed <-chan struct{})

// Cmp is the transaction condition "this term still holds".
func (f Fence) Cmp() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(f.Key), "=", f.Rev)
}

// Election campaigns for one replica.
type Election struct {
	cli    *clientv3.Client
	prefix string // <etcd prefix>election (the library adds the "/")
	keys   state.Keys
	name   string
	ttl    time.Duration
	log    *slog.Logger

	metrics *metrics

	gate   Gate
	depose *Deposition // nil: no deposition (SetDeposition)

	mu    sync.Mutex
	fence *Fence

	// nudge asks a campaign under way to read whether it has won
	// (lookAgain), besides waiting for its watch to say so.
	nudge       chan struct{}
	campaignKey atomic.Pointer[string] // the key of the campaign under way
}

// SetGate makes the replica campaign only while gate allows (call before
// Run). A replica that is already leading keeps leading.
func (e *Election) SetGate(gate Gate) { e.gate = gate }

// waitEligible blocks until the gate allows campaigning; it returns a
// channel closed when the gate may close again.
func (e *Election) waitEligible(ctx context.Context) (<-chan struct{}, error) {
	if e.gate == nil {
		return nil, nil
	}
	for {
		ok, changed := e.gate()
		if ok {
			return changed, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-changed:
		}
	}
}

// New prepares a campaign under <prefix>election/ for replica name. Its
// metrics go to reg (nil: nowhere).
func New(cli *clientv3.Client, prefix, name string, ttl time.Duration, log *slog.Logger, reg prometheus.Registerer) *Election {
	keys := state.Keys{Prefix: prefix}
	return &Election{cli: cli, prefix: keys.Election(), keys: keys, name: name, ttl: ttl, log: log, metrics: newMetrics(reg),
		nudge: make(chan struct{}, 1)}
}

// Fence returns the current term if this replica leads.
func (e *Election) Fence() (Fence, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.fence == nil {
		return Fence{}, false
	}
	return *e.fence, true
}

func (e *Election) setFence(f *Fence) {
	e.mu.Lock()
	changed := (e.fence == nil) != (f == nil)
	e.fence = f
	e.mu.Unlock()
	if changed {
		e.metrics.leaderChanges.WithLabelValues().Inc()
	}
	if f != nil {
		e.metrics.leader.WithLabelValues().Set(1)
	} else {
		e.metrics.leader.WithLabelValues().Set(0)
	}
}

// Run campaigns until ctx ends. Each time this replica wins, lead runs with
// a context that ends when the leadership does; lead should return once
// its context ends. When ctx ends while leading, Run resigns before it
// returns.
func (e *Election) Run(ctx context.Context, lead func(ctx context.Context, f Fence)) {
	for ctx.Err() == nil {
		// One term after another; a term that broke is retried after a
		// pause, one that ended (a lost or withdrawn campaign) at once.
		state.Retry(ctx, time.Second, func(err error) {
			e.log.Warn("leader election interrupted, campaigning again", "err", err)
		}, func(ctx context.Context) error { return e.term(ctx, lead) })
	}
}

// term is one session: campaign, lead until the session or ctx ends.
func (e *Election) term(ctx context.Context, lead func(context.Context, Fence)) error {
	gateChanged, err := e.waitEligible(ctx)
	if err != nil {
		return nil
	}
	ttl := int(e.ttl.Round(time.Second) / time.Second)
	sess, err := concurrency.NewSession(e.cli, concurrency.WithTTL(max(ttl, 1)), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("etcd session: %w", err)
	}
	defer sess.Close()
	el := concurrency.NewElection(sess, e.prefix)
	sessDone := sess.Done() // the term's own keepalives replace it (resume)

	// Campaign until won; a lost session aborts the campaign too.
	cctx, cancel := context.WithCancel(ctx)
	campaigning, withdrawing := make(chan struct{}), make(chan struct{})
	var gateClosed atomic.Bool
	go func(sessDone <-chan struct{}) {
		defer close(withdrawing)
		changed := gateChanged
		for {
			select {
			case <-sessDone:
				cancel()
				return
			case <-changed:
				// A closed gate withdraws the campaign.
				ok, next := e.gate()
				if !ok {
					gateClosed.Store(true)
					cancel()
					return
				}
				changed = next
			case <-campaigning:
				return
			case <-cctx.Done():
				return
			}
		}
	}(sessDone)
	f, stopCampaign, err := e.campaign(cctx, el, sess.Lease())
	// After the term, once this replica no longer answers (deferred
	// calls run last): see campaign.
	defer stopCampaign()
	close(campaigning)
	<-withdrawing
	if err == nil && cctx.Err() != nil {
		// Won just as the campaign was withdrawn (the gate closed, the
		// session ended, a stop): the term cannot run, its key goes.
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		if rerr := f.resign(rctx, e.cli); rerr != nil {
			e.log.Warn("giving up a campaign won as it was withdrawn failed; the next leader waits out the TTL", "err", rerr)
		}
		rcancel()
		err = context.Canceled
	}
	if err != nil {
		cancel()
		if gateClosed.Load() {
			return nil // not eligible any more: wait at the gate
		}
		if errors.Is(err, context.Canceled) && ctx.Err() == nil {
			return errors.New("etcd session lost while campaigning")
		}
		return err
	}
	e.setFence(&f)
	e.log.Info("elected DHCP leader", "replica", e.name, "term", f.Rev)

	lctx, lcancel := context.WithCancel(cctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		lead(lctx, f)
	}()
	lost := "etcd session ended"
	gone := e.keyGone(lctx, f)
	resumed := false
wait:
	for {
		select {
		case <-sessDone:
			if ctx.Err() != nil || resumed {
				break wait // a resumed term's own renewals failed for a TTL
			}
			renewed, ok := e.resume(lctx, f, gone)
			if !ok {
				break wait
			}
			resumed = true
			sessDone = e.keepAlive(lctx, f, time.Duration(max(ttl, 1))*time.Second, renewed)
		case <-ctx.Done():
			break wait
		case <-gone:
			lost = "leader key deleted"
			break wait
		}
	}
	select {
	case <-gone:
		lost = "leader key deleted"
	default:
	}
	// Stop answering before anything else: another replica may already
	// lead.
	e.setFence(nil)
	lcancel()
	<-done
	cancel()
	if ctx.Err() == nil {
		e.log.Warn("lost DHCP leadership: "+lost, "replica", e.name, "term", f.Rev)
		return errors.New(lost)
	}
	// A graceful stop: resign so that a follower takes over now, not
	// after the TTL. Resigning needs only the client, not the session.
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	if err := f.resign(rctx, e.cli); err != nil {
		e.log.Warn("resigning DHCP leadership failed; the next leader waits out the TTL", "err", err)
	} else {
		e.log.Info("resigned DHCP leadership", "replica", e.name, "term", f.Rev)
	}
	// Revoking the session lease removes every key of the term at once
	// (the published configuration too); the session's own context is
	// already cancelled, so this uses a fresh one.
	e.cli.Revoke(rctx, f.Lease)
	return nil
}

// campaign campaigns until this replica wins, and returns its term.
//
// The library's campaign learns that the keys before its own are gone
// from a watch; a watch that etcd's client had to set up again (its
// member cut off with the old leader's host, and left out) resumes from
// a revision in the past, and etcd's server sends such a watch its events
// only at its next resync, every 100 ms (watchResyncPeriod): the new
// leader learnt it had won up to 0.16 s after the deposition, in 1 link
// cut of 4 where etcd's raft leader survived. A nudge (lookAgain: the
// follower's deposition done, or its read of the term finding this
// campaign's key first) makes the campaign read whether its key is now
// the oldest, which is the library's own condition of a win.
//
// A campaign won that way leaves the library's running until its watch
// sees the win too; el is not touched again, and the term is resigned by
// f.resign. The library's campaign resigns (deletes the key) when its
// context ends before it won: so its context is not cctx, which ends with
// the term, before this replica stops answering, but one that stop ends,
// after the term (or at once when this campaign fails).
func (e *Election) campaign(cctx context.Context, el *concurrency.Election, lease clientv3.LeaseID) (f Fence, stop func(), err error) {
	libCtx, stopLib := context.WithCancel(context.WithoutCancel(cctx))
	won := make(chan error, 1)
	go func() { won <- el.Campaign(libCtx, e.name) }()
	key := fmt.Sprintf("%s/%x", e.prefix, lease) // the library's key
	e.campaignKey.Store(&key)
	defer e.campaignKey.Store(nil)
	lctx, stopLooking := context.WithCancel(cctx)
	defer stopLooking()
	var looked chan int64 // a read under way: the key's create revision, 0: not the oldest
	for {
		select {
		case err := <-won:
			if err != nil {
				stopLib()
				return Fence{}, stopLib, err
			}
			return Fence{Key: el.Key(), Rev: el.Rev(), Lease: lease}, stopLib, nil
		case <-e.nudge:
			if looked == nil {
				looked = make(chan int64, 1)
				go func(looked chan<- int64) { looked <- e.oldest(lctx, key) }(looked)
			}
		case rev := <-looked:
			looked = nil
			if rev != 0 {
				return Fence{Key: key, Rev: rev, Lease: lease}, stopLib, nil
			}
		case <-cctx.Done():
			stopLib()
			return Fence{}, stopLib, <-won // the library's campaign ends (and resigns) with libCtx
		}
	}
}

// nudgeable reports whether key is that of this replica's campaign under
// way (whose read of whether it won a nudge would start).
func (e *Election) nudgeable(key string) bool {
	k := e.campaignKey.Load()
	return k != nil && *k == key
}

// oldest reads whether key is the oldest election key (no key was created
// before it, the library's own condition of a win) and returns its create
// revision, 0 if not. A linearizable read, sent to two members if the
// first does not answer at once (twice).
func (e *Election) oldest(ctx context.Context, key string) int64 {
	resp, err := twice(ctx, etcdStep, func(ctx context.Context) (*clientv3.GetResponse, error) {
		return e.cli.Get(ctx, e.prefix+"/", clientv3.WithFirstCreate()...)
	})
	if err != nil || len(resp.Kvs) == 0 || string(resp.Kvs[0].Key) != key {
		return 0
	}
	return resp.Kvs[0].CreateRevision
}

// lookAgain nudges a campaign under way (if any) to read whether it won.
func (e *Election) lookAgain() {
	select {
	case e.nudge <- struct{}{}:
	default:
	}
}

// resign ends the term f at once: its key goes if it is still this
// term's (as the library's Resign, without its state).
func (f Fence) resign(ctx context.Context, cli *clientv3.Client) error {
	_, err := cli.Txn(ctx).If(f.Cmp()).Then(clientv3.OpDelete(f.Key)).Commit()
	return err
}

// resumeWait bounds how long a leader whose session ended asks etcd to
// renew the session's lease, answering meanwhile.
const resumeWait = time.Second

// resume goes on with a term whose session ended while etcd may still
// hold its lease. etcd's client ends a session when none of its
// keepalives has been answered for one TTL, whether or not etcd expired
// the lease: a raft leader cut off with its host leaves the keepalives
// of a replica that used that member stuck there, then on an etcd
// electing a new raft leader (which extends every lease), for about that
// long. The term's key, hence its fence, lives as long as the lease: if
// etcd renews it when asked (a renewal is answered by etcd's raft
// leader), the term goes on, rather than ending and
// making a second change of leader for one failure. It returns when the
// renewal was sent. Answering while etcd is asked is safe: every write of
// the term is fenced.
func (e *Election) resume(ctx context.Context, f Fence, gone <-chan struct{}) (time.Time, bool) {
	e.log.Warn("etcd session ended; asking etcd to renew the term's lease", "replica", e.name, "term", f.Rev)
	tctx, cancel := context.WithTimeout(ctx, resumeWait)
	defer cancel()
	go func() { // a deposition ends the question too
		select {
		case <-gone:
			cancel()
		case <-tctx.Done():
		}
	}()
	sent := time.Now()
	resp, err := e.cli.KeepAliveOnce(tctx, f.Lease)
	switch {
	case ctx.Err() != nil || tctx.Err() == context.Canceled:
		return time.Time{}, false // the term ends anyway: nothing to say
	case errors.Is(err, rpctypes.ErrLeaseNotFound) || (err == nil && resp.TTL <= 0):
		e.log.Warn("etcd session: the term's lease is gone", "replica", e.name, "term", f.Rev)
		return time.Time{}, false
	case err != nil:
		e.log.Warn("etcd session: etcd did not renew the term's lease", "replica", e.name, "term", f.Rev, "err", err)
		return time.Time{}, false
	}
	e.metrics.resumes.WithLabelValues().Inc()
	e.log.Warn("etcd session resumed: etcd renewed the term's lease; leading on", "replica", e.name, "term", f.Rev)
	return sent, true
}

// keepAlive keeps a resumed term's lease (of ttl, whole seconds) alive,
// renewing it every third of its TTL, and closes the channel it returns
// once no renewal has succeeded for a TTL since the last one was sent
// (from renewed on): etcd may expire the lease from then on, and the term
// is over. A renewal etcd refuses (the lease is gone) ends it at once.
func (e *Election) keepAlive(ctx context.Context, f Fence, ttl time.Duration, renewed time.Time) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		// A resume that took a while renews at once.
		now := time.Since(renewed) >= ttl/3
		for {
			until := time.Until(renewed.Add(ttl))
			if until <= 0 {
				return
			}
			if !now {
				select {
				case <-ctx.Done():
					return
				case <-time.After(until):
					return
				case <-t.C:
				}
			}
			now = false
			sent := time.Now()
			kctx, cancel := context.WithTimeout(ctx, min(ttl/3, time.Until(renewed.Add(ttl))))
			resp, err := e.cli.KeepAliveOnce(kctx, f.Lease)
			cancel()
			switch {
			case err == nil && resp.TTL > 0:
				renewed = sent
			case err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound):
				return
			}
		}
	}()
	return done
}

// keyGone is closed when the term's leader key is deleted while the
// session lives (etcdctl del, say): the term is over then, and the replica
// must campaign again rather than stay a leader whose every write is
// refused, with DHCP silent for good if no other replica runs.
func (e *Election) keyGone(ctx context.Context, f Fence) <-chan struct{} {
	gone := make(chan struct{})
	ctx, stop := context.WithCancel(ctx)
	end := func() {
		select {
		case <-gone:
		default:
			close(gone)
		}
		stop()
	}
	go state.Follower{
		Key: f.Key,
		Load: func(kvs []*mvccpb.KeyValue) {
			if len(kvs) == 0 || kvs[0].CreateRevision != f.Rev {
				end()
			}
		},
		Change: func(ev *clientv3.Event) {
			if ev.Type == clientv3.EventTypeDelete {
				end()
			}
		},
	}.Run(ctx, e.cli)
	return gone
}

// Leader returns the name of the current leader, if any.
func Leader(ctx context.Context, cli *clientv3.Client, keys state.Keys) (string, error) {
	resp, err := cli.Get(ctx, keys.Election()+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return "", state.Unavailable("read the DHCP leader", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}
