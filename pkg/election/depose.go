package election

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/pkg/hostile"
)

// Deposition is how a follower watches the leader and ends the term of
// one that has died or frozen, long before its session TTL (whole
// seconds, at least 2 s in etcd) would. Every leader-only write is fenced
// on the term (Fence.Cmp), so ending a term that still runs is safe: that
// leader can write nothing, and stops answering once it sees its key go.
//
//   - Refused: a leader whose probe is refused (or reset) refusedAfter
//     times in a row has no process listening: any one follower deposes it.
//   - Timeout: a follower that sees SuspectAfter probes in a row time out
//     publishes its verdict under suspects/<term>/<self>; when a majority
//     of the announced replicas (the leader counted) hold that verdict, the
//     leader is deposed. One follower cut off from the leader alone cannot
//     depose it; the minority side of a partition cannot reach etcd at all.
//   - Unreachable: a probe whose fresh TCP handshake does not complete
//     within half the probe timeout, while on the connection kept from
//     earlier probes the leader's kernel neither answered nor acknowledged
//     the request, found no kernel at the leader's address (a frozen or
//     slow process still has its kernel complete handshakes and acknowledge
//     data; a flooded accept queue fails fresh handshakes only; probe.go):
//     the leader's host is cut off or down. unreachableAfter such probes in a
//     row are a verdict as SuspectAfter timeouts are, sooner, and the same
//     majority deposes (counted as reason "unreachable").
//   - Every deposition is logged and counted once by the follower that
//     made it, also one etcd applied after the call gave up (deposer).
//   - A follower never deposes a leader it has not seen answer in the
//     term: a probe address that cannot work (a firewall, a wrong address)
//     costs the fast failover, never a deposition of every new leader.
type Deposition struct {
	Interval     time.Duration // between probes
	Timeout      time.Duration // one probe
	SuspectAfter int           // timed-out probes in a row before a verdict
	// ProbeURL is the URL to probe replica at, from its announcement
	// ("" if it announces none).
	ProbeURL func(ctx context.Context, replica string) (string, error)
	// Voters counts the replicas taking part in the election (announced,
	// DHCP on), the leader included.
	Voters func(ctx context.Context) (int, error)
	// Probe overrides the HTTP probe (tests); nil: GET ProbeURL, whose
	// answer must name the term.
	Probe func(ctx context.Context, url string, term int64) Outcome

	// release ends what the probe keeps between probes (the HTTP probe's
	// connection to the leader): no leader to probe, or the watch ended.
	release func()
}

// refusedAfter is how many refused probes in a row mean the process is
// gone: one more than one, so that a connection reset by a leader's
// restarting listener alone deposes no one.
const refusedAfter = 2

// unreachableAfter is how many probes in a row that found no kernel at the
// leader's address make a verdict: one more than one, so that a single
// lost handshake packet suspects no one. With the defaults (a probe every
// 100 ms, handshakes bounded to 125 ms) a cut-off leader is suspected
// about 0.35 s after its link went, where three timed-out probes take
// 0.85 s: a link cut is then bounded by etcd's own recovery, not by the
// probes.
const unreachableAfter = 2

// Outcome is what one probe of the leader saw.
type Outcome int

const (
	Answered Outcome = iota // an answer naming the term: the leader runs
	Refused                 // connection refused or reset: nothing listens
	TimedOut                // no answer in time: frozen, cut off, or slow
	// Stranger is an answer that does not name the term: another process
	// holds that address (a restarted leader, or a shared virtual address
	// that moved to a follower). It proves nothing about the leader, so it
	// counts towards no deposition.
	Stranger
	// Unreachable is a probe whose fresh TCP handshake did not complete
	// in time while on the kept connection the leader's kernel neither
	// answered nor acknowledged the request: no kernel answers at the
	// address (its host's link cut, the host down). It counts as a
	// timeout too.
	Unreachable
)

func (o Outcome) String() string {
	return [...]string{"answered", "refused", "timeout", "stranger", "unreachable"}[o]
}

// verdict is what a follower concludes after a probe.
type verdict int

const (
	wait        verdict = iota // nothing yet
	answering                  // the leader answers: withdraw any suspicion
	deposeAlone                // its process is gone: depose now
	suspect                    // publish the suspicion, depose on a majority
)

// judge turns one term's probe outcomes into verdicts.
type judge struct {
	suspectAfter int
	seen         bool // the leader answered at least once this term
	refused      int  // in a row
	timedOut     int  // in a row, unreachable ones included
	unreachable  int  // in a row
}

func (j *judge) observe(o Outcome) verdict {
	switch o {
	case Answered:
		j.seen, j.refused, j.timedOut, j.unreachable = true, 0, 0, 0
		return answering
	case Refused:
		j.refused++
		j.timedOut, j.unreachable = 0, 0
		if j.seen && j.refused >= refusedAfter {
			return deposeAlone
		}
	case TimedOut, Unreachable:
		j.timedOut++
		j.refused = 0
		if o == Unreachable {
			j.unreachable++
		} else {
			j.unreachable = 0
		}
		if j.seen && (j.timedOut >= j.suspectAfter || j.unreachable >= unreachableAfter) {
			return suspect
		}
	case Stranger:
		j.refused, j.timedOut, j.unreachable = 0, 0, 0
	}
	return wait
}

// SetDeposition makes the replica watch the leader while it follows (call
// before Watch).
func (e *Election) SetDeposition(d Deposition) {
	d.release = func() {}
	if d.Probe == nil {
		p := newProber(d.Timeout / 2)
		d.Probe, d.release = p.probe, p.release
	}
	e.depose = &d
}

// leaderKey is the key of the term in force.
type leaderKey struct {
	name  string
	key   string
	rev   int64
	lease clientv3.LeaseID
}

// suspicion is what a follower publishes under suspects/<term>/<self>.
type suspicion struct {
	Replica string    `json:"replica"`
	Term    int64     `json:"term"`
	Since   time.Time `json:"since"`
	Probe   string    `json:"probe"`
}

// Watch probes the leader while this replica follows, and deposes it as
// Deposition says, until ctx ends. Without SetDeposition it returns at once.
//
// Two loops run: the probes of the leader on their own ticker, and the
// etcd calls (reading the term and the verdicts on it, publishing a
// verdict, deposing) on another. They meet only in watched, under a
// mutex. While etcd elects a leader of its own (a member cut off with the
// leader's host), an etcd call can hang for its whole timeout; the probes
// must not wait behind it, or a leader cut off with an etcd member
// outlives its probes by every call that hung. Every etcd call is bounded
// (etcdStep) and a failed one is tried again at the next step, on another
// connection if etcd's client has several; the probe loop keeps probing
// the leader last read, so a call that failed costs a step, not what was
// seen. The reads of a step also give way to a new verdict (reading).
func (e *Election) Watch(ctx context.Context) {
	d := e.depose
	if d == nil {
		return
	}
	w := &watched{kick: make(chan struct{}, 1)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.probe(ctx, d)
	}()
	e.follow(ctx, d, w)
	<-done
}

// watched is what Watch's two loops share.
type watched struct {
	mu      sync.Mutex
	cur     leaderKey // the term in force as last read from etcd (rev 0: none, or this replica leads)
	url     string    // where its leader answers probes ("": nowhere known)
	pending finding   // the probes' latest verdict not yet acted on
	kick    chan struct{}
	// A verdict that acts (suspect, deposeAlone) and differs from the
	// previous one posted, or is on another term, is urgent: it ends the
	// etcd loop's reads of the step under way (reading). Only the first
	// of a run: the probes repeat a verdict at every probe while it holds,
	// and reads that gave way to each would never learn the next term.
	last      finding // the latest verdict posted
	urgent    bool    // pending is urgent
	interrupt func()  // ends the reads of the step under way (nil: none)
}

// finding is a verdict of the probe loop on one term.
type finding struct {
	term int64
	v    verdict
	cause
}

// cause is what led to a verdict, as the deposition's log line and metric
// say it.
type cause struct {
	reason string // refused, timeout or unreachable
	inARow int    // probes in a row that led to it
}

// cause says why the judge's latest verdict was reached.
func (j *judge) cause(v verdict) cause {
	switch {
	case v == deposeAlone:
		return cause{"refused", j.refused}
	case j.unreachable >= unreachableAfter:
		// The last probes found no kernel at the leader's address: its
		// host is cut off or down, not only its process frozen.
		return cause{"unreachable", j.unreachable}
	}
	return cause{"timeout", j.timedOut}
}

func (w *watched) target() (leaderKey, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur, w.url
}

func (w *watched) setTarget(cur leaderKey, url string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.cur, w.url = cur, url
}

// post hands a verdict to the etcd loop and wakes it; a verdict not yet
// acted on is replaced by the newer one.
func (w *watched) post(f finding) {
	w.mu.Lock()
	urgent := f.v.acts() && (w.last.v != f.v || w.last.term != f.term)
	w.pending, w.last = f, f
	w.urgent = urgent || (w.urgent && f.v.acts())
	if urgent && w.interrupt != nil {
		w.interrupt()
	}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// acts reports whether a verdict is one the etcd loop must act on at once
// (publish it, or depose).
func (v verdict) acts() bool { return v == suspect || v == deposeAlone }

// rearm makes the next verdict urgent, the same as the last or not: the
// etcd loop's action on the last one failed, and its next try must not
// wait behind a read either.
func (w *watched) rearm() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.last = finding{}
}

// reading is the context of the etcd loop's reads at one step: it ends
// when an urgent verdict is posted (or at once if one waits), if
// interruptible. A read can hang for its whole bound on a member cut off
// with the leader's host, until etcd's client leaves that member out,
// which takes about as long as the probes take to find the leader cut
// off: the verdict, whose write twice hedges to another member, must not
// wait behind it. An ended read is a failed one (the leader known, its
// probe address and the voters are kept) and is made again at the next
// step, which the loop lets run to its bounds: flapping verdicts cannot
// keep a follower from ever reading the term.
func (w *watched) reading(ctx context.Context, interruptible bool) (context.Context, func()) {
	rctx, cancel := context.WithCancel(ctx)
	if !interruptible {
		return rctx, cancel
	}
	w.mu.Lock()
	if w.urgent {
		cancel()
	} else {
		w.interrupt = cancel
	}
	w.mu.Unlock()
	return rctx, func() {
		w.mu.Lock()
		w.interrupt = nil
		w.mu.Unlock()
		cancel()
	}
}

// answered reports whether the verdict waiting to be acted on is that
// term's leader answering.
func (w *watched) answered(term int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.pending.term == term && w.pending.v == answering
}

func (w *watched) take() finding {
	w.mu.Lock()
	defer w.mu.Unlock()
	f := w.pending
	w.pending, w.urgent = finding{}, false
	return f
}

// probe is the probe loop: it probes the leader last read every
// Interval and judges what it sees. It makes no etcd call.
func (w *watched) probe(ctx context.Context, d *Deposition) {
	var (
		j    judge
		term int64 // the term j judges
	)
	t := time.NewTicker(d.Interval)
	defer t.Stop()
	defer d.release()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cur, url := w.target()
		if cur.rev == 0 || url == "" {
			if term != 0 {
				d.release()
			}
			term = 0 // no leader to probe, or this replica leads
			continue
		}
		if cur.rev != term {
			term, j = cur.rev, judge{suspectAfter: d.SuspectAfter}
		}
		pctx, cancel := context.WithTimeout(ctx, d.Timeout)
		o := d.Probe(pctx, url, cur.rev)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if v := j.observe(o); v != wait {
			w.post(finding{term: term, v: v, cause: j.cause(v)})
		}
	}
}

// follow is the etcd loop: every Interval it reads the term and its
// verdicts, and it acts on each verdict of the probe loop as soon as it
// is posted.
func (e *Election) follow(ctx context.Context, d *Deposition, w *watched) {
	var (
		cur      leaderKey
		url      string
		verdicts int          // on cur's term, as last read
		why      cause        // behind this replica's verdict
		voters   int          // announced replicas taking part, as last read
		votersAt time.Time    // when voters was read
		v        verdictLease // this replica's published verdict
		// interrupted: the last step's reads gave way to a verdict; this
		// step's run to their bounds.
		interrupted bool
	)
	p := &deposer{e: e, v: &v}
	defer v.close(ctx, e)
	// The verdict's lease is granted now, while etcd answers: when a
	// verdict is due, etcd may be busy electing a leader of its own, and
	// publishing it is then one transaction.
	v.ready(ctx, e)
	t := time.NewTicker(d.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.kick:
		case <-t.C:
			rctx, stopReading := w.reading(ctx, !interrupted)
			p.settle(rctx)
			l, found, n, mine, err := e.observe(rctx, min(d.Timeout, etcdStep), cur.rev)
			f, leading := e.Fence()
			if err == nil && found && !leading && e.nudgeable(l.key) {
				// This replica's campaign key is the oldest: it may have
				// won without its watch knowing yet.
				e.lookAgain()
			}
			switch {
			case err != nil:
				// etcd did not answer in time (a member cut off, an
				// etcd election under way): the probes go on with
				// the leader known, and etcd is tried again at the
				// next step. Forgetting what was seen would let a
				// leader cut off with an etcd member outlive its
				// probes.
				e.log.Debug("deposition: reading the leader failed; probing the one known", "err", err)
			case !found || (leading && f.Rev == l.rev):
				// No leader, or this replica leads.
				v.withdraw(ctx, e)
				cur, url = leaderKey{}, ""
			case l.rev != cur.rev:
				v.withdraw(ctx, e)
				cur, url, verdicts, why = l, "", 0, cause{}
				votersAt = time.Time{}
			case mine && v.key == "":
				// A verdict of this follower that it does not hold
				// (withdrawn, or never known written): one of its
				// writes landed late. It goes again.
				v.key = e.keys.Suspect(cur.rev, e.name)
				v.withdraw(ctx, e)
				verdicts = n - 1
			default:
				verdicts = n
			}
			if cur.rev != 0 && url == "" {
				pctx, cancel := context.WithTimeout(rctx, etcdStep)
				url, _ = d.ProbeURL(pctx, cur.name) // "": announces none (or etcd did not say): left to its TTL
				cancel()
			}
			if cur.rev != 0 && time.Since(votersAt) > 5*time.Second {
				vctx, cancel := context.WithTimeout(rctx, etcdStep)
				if nv, err := d.Voters(vctx); err == nil {
					voters, votersAt = nv, time.Now()
				}
				cancel()
			}
			interrupted = err != nil && rctx.Err() != nil && ctx.Err() == nil
			stopReading()
			// A probe address not read because a verdict on the term
			// before ended the read ("" here) is read at the next step:
			// the new leader is probed one Interval later.
			w.setTarget(cur, url)
			if v.published(cur.rev) && voters > 0 && verdicts > voters/2 && !w.answered(cur.rev) {
				// This replica's verdict stands (it is withdrawn as
				// soon as the leader answers: not if an answer is
				// waiting to be acted on) and the read shows a
				// majority: depose now, not after the next probe
				// times out.
				if p.depose(ctx, deposition{l: cur, cause: why, verdicts: verdicts, voters: voters}) {
					w.take() // acted on: the next step's reads need not give way to it
				} else {
					w.rearm()
				}
				continue
			}
		}
		f := w.take()
		if f.term == 0 || f.term != cur.rev {
			continue // nothing posted, or on a term already over
		}
		switch f.v {
		case answering:
			v.withdraw(ctx, e)
		case deposeAlone:
			if !p.depose(ctx, deposition{l: cur, cause: f.cause, voters: voters}) {
				w.rearm()
			}
		case suspect:
			why = f.cause
			if !v.published(cur.rev) {
				n, ok := v.publish(ctx, e, cur, url)
				if !ok {
					// Tried again at the next verdict, without waiting
					// behind a read (a term found over is read at the
					// step after, which runs to its bounds).
					w.rearm()
					continue
				}
				verdicts = max(verdicts, n)
			}
			if voters > 0 && verdicts > voters/2 && !p.depose(ctx, deposition{l: cur, cause: why, verdicts: verdicts, voters: voters}) {
				w.rearm()
			}
		}
	}
}

// observe reads, in one transaction, the term in force (the oldest
// election key) and how many verdicts term has. The read is bounded by
// timeout: a failed one is retried at the next step.
//
// mine says whether this follower's own verdict on term is among them: a
// write of it that etcd applied after it was withdrawn (a call that a
// member took and answered late, or the hedged copy of one) is found
// there, and withdrawn again.
func (e *Election) observe(ctx context.Context, timeout time.Duration, term int64) (l leaderKey, found bool, verdicts int, mine bool, err error) {
	// A read: sent to a second member when the first does not answer at
	// once (twice), as it does not when cut off with the leader's host;
	// the follower next in line learns from it that it won (lookAgain).
	resp, err := twice(ctx, timeout, func(ctx context.Context) (*clientv3.TxnResponse, error) {
		return e.cli.Txn(ctx).Then(
			clientv3.OpGet(e.prefix+"/", clientv3.WithFirstCreate()...),
			clientv3.OpGet(e.keys.Suspects(term), clientv3.WithPrefix(), clientv3.WithCountOnly()),
			clientv3.OpGet(e.keys.Suspect(term, e.name), clientv3.WithCountOnly()),
		).Commit()
	})
	if err != nil {
		return leaderKey{}, false, 0, false, err
	}
	leaders, suspects := resp.Responses[0].GetResponseRange(), resp.Responses[1].GetResponseRange()
	mine = resp.Responses[2].GetResponseRange().Count > 0
	if len(leaders.Kvs) == 0 {
		return leaderKey{}, false, 0, mine, nil
	}
	kv := leaders.Kvs[0]
	return leaderKey{name: string(kv.Value), key: string(kv.Key), rev: kv.CreateRevision, lease: clientv3.LeaseID(kv.Lease)},
		true, int(suspects.Count), mine, nil
}

// verdictLease is this follower's published verdict: on a lease of its
// own, granted once and kept alive while the follower runs, so that its
// verdicts go with it and publishing one is a single transaction.
type verdictLease struct {
	lease clientv3.LeaseID
	lost  <-chan struct{} // closed when the lease is no longer kept alive
	stop  context.CancelFunc
	term  int64 // the term of the verdict known published, 0: none
	// key is the verdict's key from the moment its write is sent: a write
	// whose call failed may still have been applied (a member that took it
	// and answered after the deadline, or a first try that twice gave up
	// on), and such a verdict would count towards a majority for the
	// whole term. withdraw deletes it whatever came of the call.
	key string
}

// published reports whether this replica's verdict on term is known to
// be in etcd (a write that is only sent does not count).
func (v *verdictLease) published(term int64) bool { return v.term == term && v.term != 0 }

// publish writes this replica's verdict on l's term, only while that term
// holds (a verdict on a term already over would sit there for nothing).
//
// It returns how many verdicts the term holds once this one is in, read
// in the same transaction: of two followers publishing at once, the
// second sees both and deposes at once, rather than after its next probe
// times out.
func (v *verdictLease) publish(ctx context.Context, e *Election, l leaderKey, url string) (verdicts int, ok bool) {
	if !v.ready(ctx, e) {
		return 0, false
	}
	data, _ := json.Marshal(suspicion{Replica: e.name, Term: l.rev, Since: time.Now().UTC(), Probe: url})
	key := e.keys.Suspect(l.rev, e.name)
	v.key = key      // before the call: uncertain until it answers
	lease := v.lease // the calls may outlive this one (twice)
	resp, err := twice(ctx, etcdStep, func(ctx context.Context) (*clientv3.TxnResponse, error) {
		return e.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)).
			Then(clientv3.OpPut(key, string(data), clientv3.WithLease(lease)),
				clientv3.OpGet(e.keys.Suspects(l.rev), clientv3.WithPrefix(), clientv3.WithCountOnly())).Commit()
	})
	if err != nil || !resp.Succeeded {
		e.log.Debug("deposition: publishing the verdict failed, trying again", "err", err)
		return 0, false
	}
	v.term = l.rev
	e.log.Warn("deposition: DHCP leader does not answer; verdict published", "leader", hostile.Clip(l.name, 64), "term", l.rev, "probe", url)
	return int(resp.Responses[1].GetResponseRange().Count), true
}

// ready makes sure the lease exists and is kept alive.
func (v *verdictLease) ready(ctx context.Context, e *Election) bool {
	if v.lease != 0 {
		select {
		case <-v.lost: // keepalive over: the lease expired or was revoked
			v.stop()
			v.lease, v.term, v.key = 0, 0, "" // its verdict went with it
		default:
			return true
		}
	}
	gctx, cancel := context.WithTimeout(ctx, etcdStep)
	g, err := e.cli.Grant(gctx, max(int64(e.ttl.Round(time.Second)/time.Second), 2))
	cancel()
	if err != nil {
		e.log.Debug("deposition: granting the verdict lease failed, trying again", "err", err)
		return false
	}
	kctx, stop := context.WithCancel(ctx)
	alive, err := e.cli.KeepAlive(kctx, g.ID)
	if err != nil {
		stop()
		return false
	}
	lost := make(chan struct{})
	go func() {
		for range alive { // KeepAlive's answers must be read
		}
		close(lost)
	}()
	v.lease, v.lost, v.stop = g.ID, lost, stop
	return true
}

// withdraw deletes the verdict published, or sent and perhaps applied
// (the leader answers again, or the term changed); a delete of a key that
// is not there changes nothing, and a failed one is tried again at the
// next call.
func (v *verdictLease) withdraw(ctx context.Context, e *Election) {
	if v.key == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, etcdStep)
	defer cancel()
	if _, err := e.cli.Delete(ctx, v.key); err == nil {
		v.term, v.key = 0, ""
	}
}

// close revokes the lease when the watch ends: the verdicts go at once.
func (v *verdictLease) close(ctx context.Context, e *Election) {
	if v.lease == 0 {
		return
	}
	v.stop()
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	e.cli.Revoke(rctx, v.lease)
	cancel()
}

// etcdStep bounds one etcd call of the deposition: short, so that a call
// stuck on a member that was cut off is given up and tried again at the
// next step (etcd's client sends each call to the next member).
const etcdStep = 500 * time.Millisecond

// hedgeAfter is how long the first attempt of a call runs alone before
// twice sends a second beside it: a small write or read takes a few ms,
// tens on a loaded host.
const hedgeAfter = 50 * time.Millisecond

// twice calls f within total, and, when the first call has not succeeded
// after hedgeAfter (at most half of total), a second beside it, which
// etcd's client's round robin sends to the next member: a member that was
// cut off with the leader's host takes a call and never answers it, until
// the client leaves it out (about as long as the probes take to find the
// leader's host cut off, so the verdicts are written just then). The
// first success is returned, the other call cancelled. Only for calls
// whose repetition changes nothing, not even what the caller learns:
// publishing a verdict, a deposition (whose marker tells a repeated
// attempt that the first one ended the term), and reads (the term, and
// whether a campaign won).
func twice[T any](ctx context.Context, total time.Duration, f func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, total)
	defer cancel()
	type result struct {
		v   T
		err error
	}
	results := make(chan result, 2) // neither call waits to be heard
	call := func() {
		v, err := f(ctx)
		results <- result{v, err}
	}
	go call()
	hedge := time.NewTimer(min(hedgeAfter, total/2))
	defer hedge.Stop()
	calls, done := 1, 0
	for {
		select {
		case r := <-results:
			done++
			if r.err == nil || ctx.Err() != nil || (calls == 2 && done == 2) {
				return r.v, r.err
			}
			if calls == 1 { // failed at once: the second now
				calls++
				go call()
			}
		case <-hedge.C:
			if calls == 1 {
				calls++
				go call()
			}
		}
	}
}

// deposition is one follower's attempt to end a term, with what led to
// it.
type deposition struct {
	l leaderKey
	cause
	verdicts, voters int
}

// deposer ends terms for follow, and makes sure that each term this
// follower ended is logged and counted once, also when etcd applied the
// deposition after the call gave up on it (a member that took it late).
type deposer struct {
	e      *Election
	v      *verdictLease // the marker goes on its lease
	logged int64         // the last term logged as deposed by this follower
	unsure *deposition   // sent, its outcome unknown: settled at the next step
}

// depose ends d's term: its election key goes in a transaction conditioned
// on its create revision (so only that term ends, never the next), with a
// marker deposed/<term> naming this follower; then its session lease is
// revoked, so that the keys it holds go and a leader that thaws finds its
// session over too.
//
// The marker makes a repeated attempt safe: one that finds the term over
// reads it, and if it names this follower, an earlier attempt (applied
// late) ended the term, which is logged and counted then. The marker is
// on this follower's verdict lease: it goes by itself.
//
// answered: etcd answered, and the term is over (deposed by this
// follower, now or by an earlier attempt, or ended otherwise); false: the
// deposition was not sent, or not answered, and the next verdict sends it
// again.
func (p *deposer) depose(ctx context.Context, d deposition) (answered bool) {
	e := p.e
	if !p.v.ready(ctx, e) {
		e.log.Debug("deposition: no verdict lease for the marker, trying again", "term", d.l.rev)
		return false
	}
	data, _ := json.Marshal(deposedMarker{Replica: e.name, Term: d.l.rev, Reason: d.reason, At: time.Now().UTC()})
	marker := e.keys.Deposed(d.l.rev)
	lease := p.v.lease // the calls may outlive this one (twice)
	resp, err := twice(ctx, 2*etcdStep, func(ctx context.Context) (*clientv3.TxnResponse, error) {
		return e.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(d.l.key), "=", d.l.rev)).
			Then(clientv3.OpDelete(d.l.key), clientv3.OpDelete(e.keys.Suspects(d.l.rev), clientv3.WithPrefix()),
				clientv3.OpPut(marker, string(data), clientv3.WithLease(lease))).
			Else(clientv3.OpGet(marker)).Commit()
	})
	if err != nil {
		// Perhaps applied all the same: the next step reads the marker.
		p.unsure = &d
		e.log.Warn("deposition failed", "leader", hostile.Clip(d.l.name, 64), "term", d.l.rev, "err", err)
		return false
	}
	p.unsure = nil
	if resp.Succeeded || p.mine(resp.Responses[0].GetResponseRange().Kvs) {
		p.deposed(ctx, d)
	}
	// Else the term is already over: another follower deposed it, or it
	// ended otherwise.
	return true
}

// settle finds out what came of a deposition whose call failed: its
// marker names this follower if etcd applied it. While the term still
// holds, the deposition may yet be applied, and is asked about again at
// the next step (the next verdict sends it again, too); once a read finds
// the term over without this follower's marker, it never will be.
func (p *deposer) settle(ctx context.Context) {
	d := p.unsure
	if d == nil {
		return
	}
	e := p.e
	ctx, cancel := context.WithTimeout(ctx, etcdStep)
	defer cancel()
	resp, err := e.cli.Txn(ctx).Then(clientv3.OpGet(e.keys.Deposed(d.l.rev)), clientv3.OpGet(d.l.key)).Commit()
	if err != nil {
		return // asked again at the next step
	}
	term := resp.Responses[1].GetResponseRange().Kvs
	switch {
	case p.mine(resp.Responses[0].GetResponseRange().Kvs):
		p.unsure = nil
		p.deposed(ctx, *d)
	case len(term) == 0 || term[0].CreateRevision != d.l.rev:
		p.unsure = nil // over, and not by this follower
	}
}

// mine reports whether kvs (a read of a deposed/<term> marker) holds one
// that names this follower.
func (p *deposer) mine(kvs []*mvccpb.KeyValue) bool {
	if len(kvs) == 0 {
		return false
	}
	var m deposedMarker
	return json.Unmarshal(kvs[0].Value, &m) == nil && m.Replica == p.e.name
}

// deposed logs and counts d's deposition, once per term, and revokes the
// deposed leader's session.
func (p *deposer) deposed(ctx context.Context, d deposition) {
	if p.logged == d.l.rev {
		return
	}
	p.logged = d.l.rev
	e := p.e
	// This replica may be next: its campaign reads whether it won, now
	// (the revoke below may wait on a member cut off).
	e.lookAgain()
	if d.l.lease != 0 {
		rctx, cancel := context.WithTimeout(ctx, etcdStep)
		e.cli.Revoke(rctx, d.l.lease) // already gone if it was revoked before
		cancel()
	}
	e.metrics.depositions.WithLabelValues(d.reason).Inc()
	e.log.Warn("DEPOSED the DHCP leader", "deposed", hostile.Clip(d.l.name, 64), "by", e.name, "term", d.l.rev, "reason", d.reason,
		"probes_in_a_row", d.inARow, "verdicts", d.verdicts, "voters", d.voters)
}

// deposedMarker is what a deposing follower writes under deposed/<term>.
type deposedMarker struct {
	Replica string    `json:"replica"`
	Term    int64     `json:"term"`
	Reason  string    `json:"reason"`
	At      time.Time `json:"at"`
}
