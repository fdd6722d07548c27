package election

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

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
}

// refusedAfter is how many refused probes in a row mean the process is
// gone: one more than one, so that a connection reset by a leader's
// restarting listener alone deposes no one.
const refusedAfter = 2

// Outcome is what one probe of the leader saw.
type Outcome int

const (
	Answered Outcome = iota // any HTTP answer: the process runs
	Refused                 // connection refused or reset: nothing listens
	TimedOut                // no answer in time: frozen, cut off, or slow
)

func (o Outcome) String() string {
	return [...]string{"answered", "refused", "timeout"}[o]
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
	timedOut     int  // in a row
}

func (j *judge) observe(o Outcome) verdict {
	switch o {
	case Answered:
		j.seen, j.refused, j.timedOut = true, 0, 0
		return answering
	case Refused:
		j.refused++
		j.timedOut = 0
		if j.seen && j.refused >= refusedAfter {
			return deposeAlone
		}
	case TimedOut:
		j.timedOut++
		j.refused = 0
		if j.seen && j.timedOut >= j.suspectAfter {
			return suspect
		}
	}
	return wait
}

// httpProbe GETs url within the context's deadline: an answer that names
// the term (the leader's /leader, 200 or 503 while it loads its leases)
// is alive. A frozen process's kernel still completes TCP handshakes on
// its listening socket, so only an HTTP answer, which needs the process
// to run, counts.
func httpProbe(client *http.Client) func(ctx context.Context, url string, term int64) Outcome {
	return func(ctx context.Context, url string, term int64) Outcome {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return TimedOut
		}
		resp, err := client.Do(req)
		if err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) {
				return Refused
			}
			return TimedOut
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		if !bytes.Contains(body, []byte(fmt.Sprintf("(term %d)", term))) {
			// A live process at that address that does not hold the
			// term: the one that held it is gone (a restart).
			return Refused
		}
		return Answered
	}
}

// SetDeposition makes the replica watch the leader while it follows (call
// before Watch).
func (e *Election) SetDeposition(d Deposition) {
	if d.Probe == nil {
		tr := &http.Transport{
			DialContext:         (&net.Dialer{Timeout: d.Timeout}).DialContext,
			MaxIdleConnsPerHost: 1,
			IdleConnTimeout:     time.Minute,
		}
		d.Probe = httpProbe(&http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		}})
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
func (e *Election) Watch(ctx context.Context) {
	d := e.depose
	if d == nil {
		return
	}
	var (
		cur  leaderKey
		url  string
		j    judge
		mine clientv3.LeaseID // the lease of this replica's published suspicion
	)
	withdraw := func() {
		if mine != 0 {
			rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			e.cli.Revoke(rctx, mine)
			cancel()
			mine = 0
		}
	}
	defer withdraw()
	t := time.NewTicker(d.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		l, found, err := e.currentLeader(ctx, d.Timeout)
		switch f, leading := e.Fence(); {
		case err != nil && cur.rev == 0:
			continue // etcd unreachable, no leader known: nothing to do
		case err != nil:
			// etcd did not answer in time (a member cut off, an etcd
			// election under way): go on probing the leader known, and
			// try etcd again at the next step. Forgetting what was seen
			// would let a leader cut off with an etcd member outlive
			// its probes.
		case !found || (leading && f.Rev == l.rev):
			// No leader, or this replica leads.
			withdraw()
			cur, url = leaderKey{}, ""
			continue
		case l.rev != cur.rev:
			withdraw()
			cur, url, j = l, "", judge{suspectAfter: d.SuspectAfter}
		}
		if url == "" {
			if url, err = d.ProbeURL(ctx, cur.name); url == "" {
				continue // announces no probe address (or etcd did not say): left to its TTL
			}
		}
		pctx, cancel := context.WithTimeout(ctx, d.Timeout)
		o := d.Probe(pctx, url, cur.rev)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch j.observe(o) {
		case answering:
			withdraw()
		case deposeAlone:
			e.deposeTerm(ctx, cur, "refused", j.refused, 0, 0)
		case suspect:
			if mine == 0 {
				mine = e.suspect(ctx, cur, url)
			}
			if mine == 0 {
				continue
			}
			n, voters, err := e.suspicions(ctx, cur.rev, d)
			if err != nil {
				e.log.Warn("deposition: counting the verdicts failed", "err", err)
				continue
			}
			if n > voters/2 {
				e.deposeTerm(ctx, cur, "timeout", j.timedOut, n, voters)
			}
		}
	}
}

// currentLeader reads the term in force: the oldest election key. The
// read is bounded by timeout: it is retried at the next step, on another
// connection if etcd's client has several.
func (e *Election) currentLeader(ctx context.Context, timeout time.Duration) (leaderKey, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.prefix+"/", clientv3.WithFirstCreate()...)
	if err != nil {
		return leaderKey{}, false, err
	}
	if len(resp.Kvs) == 0 {
		return leaderKey{}, false, nil
	}
	kv := resp.Kvs[0]
	return leaderKey{name: string(kv.Value), key: string(kv.Key), rev: kv.CreateRevision, lease: clientv3.LeaseID(kv.Lease)}, true, nil
}

// etcdStep bounds one etcd call of the deposition: short, so that a call
// stuck on a member that was cut off is given up and tried again at the
// next step (etcd's client sends each call to the next member).
const etcdStep = 500 * time.Millisecond

// suspect publishes this replica's verdict on a lease of its own, so that
// it goes with this replica; returns the lease, 0 if it failed.
func (e *Election) suspect(ctx context.Context, l leaderKey, url string) clientv3.LeaseID {
	ctx, cancel := context.WithTimeout(ctx, 2*etcdStep)
	defer cancel()
	ttl := max(int64(e.ttl.Round(time.Second)/time.Second), 2)
	g, err := e.cli.Grant(ctx, ttl)
	if err != nil {
		return 0
	}
	data, _ := json.Marshal(suspicion{Replica: e.name, Term: l.rev, Since: time.Now().UTC(), Probe: url})
	// Only while the term still holds: a verdict on a term already over
	// would sit there for nothing.
	resp, err := e.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)).
		Then(clientv3.OpPut(e.keys.Suspect(l.rev, e.name), string(data), clientv3.WithLease(g.ID))).Commit()
	if err != nil || !resp.Succeeded {
		e.cli.Revoke(ctx, g.ID)
		return 0
	}
	e.log.Warn("deposition: DHCP leader does not answer; verdict published", "leader", hostile.Clip(l.name, 64), "term", l.rev, "probe", url)
	return g.ID
}

// suspicions counts the verdicts on term and the voters.
func (e *Election) suspicions(ctx context.Context, term int64, d *Deposition) (n, voters int, err error) {
	ctx, cancel := context.WithTimeout(ctx, etcdStep)
	defer cancel()
	resp, err := e.cli.Get(ctx, e.keys.Suspects(term), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, 0, err
	}
	voters, err = d.Voters(ctx)
	return int(resp.Count), voters, err
}

// deposeTerm ends l's term: its election key goes in a transaction
// conditioned on its create revision (so only that term ends, never the
// next), then its session lease is revoked, so that the keys it holds go
// and a leader that thaws finds its session over too.
func (e *Election) deposeTerm(ctx context.Context, l leaderKey, reason string, inARow, verdicts, voters int) {
	ctx, cancel := context.WithTimeout(ctx, 2*etcdStep)
	defer cancel()
	resp, err := e.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(l.key), "=", l.rev)).
		Then(clientv3.OpDelete(l.key), clientv3.OpDelete(e.keys.Suspects(l.rev), clientv3.WithPrefix())).Commit()
	if err != nil {
		e.log.Warn("deposition failed", "leader", hostile.Clip(l.name, 64), "term", l.rev, "err", err)
		return
	}
	if !resp.Succeeded {
		return // the term is already over (another follower deposed it)
	}
	if l.lease != 0 {
		e.cli.Revoke(ctx, l.lease)
	}
	e.metrics.depositions.WithLabelValues(reason).Inc()
	e.log.Warn("DEPOSED the DHCP leader", "deposed", hostile.Clip(l.name, 64), "by", e.name, "term", l.rev, "reason", reason,
		"probes_in_a_row", inARow, "verdicts", verdicts, "voters", voters)
}
