// Package lease keeps DHCP leases: one address handed to one MAC, durable
// in etcd at <prefix>leases/<ip> (the only package that touches those
// keys). The DHCP leader writes them; the admin API lists them.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"net/netip"
	"slices"
	"sort"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/state"
)

// Lease is one address handed to one MAC, as stored at <prefix>leases/<ip>.
type Lease struct {
	IP       netip.Addr `json:"ip"`
	MAC      string     `json:"mac"`
	Expiry   time.Time  `json:"expiry"`
	Hostname string     `json:"hostname,omitempty"` // as the client sent it, escaped (hostile.Text)
	Leader   string     `json:"leader"`             // the replica that granted it
}

// MaxHostname bounds the stored hostname (DHCP option 12 may carry 255
// bytes; a DNS label, 63).
const MaxHostname = 64

// ErrDeposed means a fenced write found that this replica no longer leads.
var ErrDeposed = election.ErrDeposed

// Store keeps leases durable in etcd. Every write is conditioned on the
// writer's leadership term (the fence), so a deposed leader can never
// grant an address.
//
// Under load, leases are written in groups (group commit): while a lease
// transaction is in flight, the leases that arrive wait and go together in
// the next one (up to maxBatch), under the same fence. That group goes
// when the transaction in flight has ended and the group's first lease
// has waited gatherTime (a full group does not wait for that), or after
// maxQueueWait in any case. Each ACK still waits until its own lease is durable; a lone
// ACK, with nothing in flight, is written at once. Every transaction costs
// each etcd member a raft entry, a WAL fdatasync, an apply and a gRPC
// round trip whatever its size, which is what bounds the DHCP rate of
// three replicas on a small machine (docs/performance.md).
type Store struct {
	cli     *clientv3.Client
	keys    state.Keys
	timeout time.Duration

	queueWait time.Duration // maxQueueWait if 0 (tests set it)
	gather    time.Duration // gatherTime if 0, none if < 0 (tests set it)
	fullRead  func()        // tests: called for each Load that reads etcd
	metrics   *metrics

	mu            sync.Mutex
	warm          *warm         // the followed copy, while Follow runs and this replica does not lead
	leading       bool          // Leading(true): Follow pauses
	leadingChange chan struct{} // closed (and replaced) when leading changes
	inflight      int           // lease transactions in flight
	queue         []*batch      // leases waiting for a transaction, in order
}

const (
	// maxInflight lease transactions run at once (but for maxQueueWait);
	// the leases that arrive meanwhile wait to be grouped.
	maxInflight = 1
	// gatherTime is how long a group gathers leases behind a transaction
	// in flight before it goes: it bounds the leader's lease transactions
	// to about 1/gatherTime a second until groups fill. Measured on three
	// replicas and a 3-member etcd sharing two cores (docs/performance.md
	// "Group commit"), against 2 in flight and no gathering: 55 leases a
	// transaction instead of 16-29, the etcd members' CPU per exchange
	// 330 → 210 µs, about 1.3 × the exchanges/s. 10 ms gathered too little;
	// 30 ms was no better than 20. An ACK waits up to this much longer,
	// only while leases are being written anyway.
	gatherTime = 20 * time.Millisecond
	// maxBatch bounds the leases of one transaction, well below etcd's
	// default --max-txn-ops (128). 120 was no faster.
	maxBatch = 64
	// maxQueueWait bounds how long a group waits for a transaction in
	// flight to end: one stuck on a dead etcd member (until the etcd
	// timeout) must not hold up the leases behind it.
	maxQueueWait = 25 * time.Millisecond
)

// batch is leases written together, all under one fence.
type batch struct {
	fence election.Fence
	ops   []clientv3.Op
	keys  map[string]int // key → index in ops: a key once per transaction
	timer *time.Timer    // starts the group once gathered, then after maxQueueWait in any case
	born  time.Time      // when its first lease came
	done  chan struct{}
	err   error
}

// NewStore returns the lease store under keys; timeout bounds one etcd
// request (default 5s).
func NewStore(cli *clientv3.Client, keys state.Keys, timeout time.Duration) *Store {
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	return &Store{cli: cli, keys: keys, timeout: timeout, metrics: newMetrics(), leadingChange: make(chan struct{})}
}

// Load reads every lease, and the keys it had to skip as corrupt; a new
// leader calls it before its first answer.
func (s *Store) Load(ctx context.Context) ([]Lease, []error, error) {
	if leases, bad, ok, err := s.fromWarm(ctx); ok || err != nil {
		return leases, bad, err
	}
	if s.fullRead != nil {
		s.fullRead()
	}
	return s.read(ctx)
}

// read reads every lease from etcd.
func (s *Store) read(ctx context.Context) ([]Lease, []error, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	dir := s.keys.Leases()
	var leases []Lease
	var bad []error
	// Page by page at one revision (state.Paged): 100,000 leases in one
	// etcd response would be tens of MB. A page is decoded while etcd
	// reads the next one: a new leader waits for this.
	pages := make(chan []*mvccpb.KeyValue, 1)
	decoded := make(chan struct{})
	go func() {
		defer close(decoded)
		for kvs := range pages {
			leases = slices.Grow(leases, len(kvs))
			for _, kv := range kvs {
				l, err := s.decode(dir, kv)
				if err != nil {
					bad = append(bad, err)
					continue
				}
				leases = append(leases, l)
			}
		}
	}()
	_, err := state.Paged(ctx, s.cli, dir, 0, func(kvs []*mvccpb.KeyValue) { pages <- kvs })
	close(pages)
	<-decoded
	if err != nil {
		return nil, nil, state.Unavailable("load leases", err)
	}
	return leases, bad, nil
}

// List is every readable lease, by address (corrupt ones are left out:
// the leader reports them when it loads).
func (s *Store) List(ctx context.Context) ([]Lease, error) {
	leases, _, err := s.read(ctx)
	sort.Slice(leases, func(i, j int) bool { return leases[i].IP.Less(leases[j].IP) })
	return leases, err
}

// Put writes a lease if f still holds; it returns once the lease is
// durable (or refused with ErrDeposed).
func (s *Store) Put(ctx context.Context, f election.Fence, l Lease) error {
	op, err := s.PutOp(l)
	if err != nil {
		return err
	}
	key := s.keys.Lease(l.IP)
	s.mu.Lock()
	if s.inflight < maxInflight && len(s.queue) == 0 {
		s.inflight++
		s.mu.Unlock()
		s.metrics.group.Observe(1)
		err := s.fenced(ctx, f, op)
		s.done()
		return err
	}
	b := s.join(f, key, op)
	s.mu.Unlock()
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PutOp is the etcd write of l, unfenced: Put sends it under the fence;
// tools that fill etcd with leases (internal/fleet) send it as it is.
func (s *Store) PutOp(l Lease) (clientv3.Op, error) {
	data, err := json.Marshal(l)
	if err != nil {
		return clientv3.Op{}, err
	}
	return clientv3.OpPut(s.keys.Lease(l.IP), string(data)), nil
}

// join adds a lease to the last waiting batch, or to a new one if that is
// full or under another fence. The caller holds s.mu.
func (s *Store) join(f election.Fence, key string, op clientv3.Op) *batch {
	var b *batch
	if n := len(s.queue); n > 0 {
		b = s.queue[n-1]
	}
	if b != nil && b.fence == f {
		if i, ok := b.keys[key]; ok { // a retransmitted REQUEST: the later lease wins
			b.ops[i] = op
			return b
		}
		if len(b.ops) < maxBatch {
			b.keys[key] = len(b.ops)
			b.ops = append(b.ops, op)
			if len(b.ops) == maxBatch && s.queue[0] == b && s.inflight < maxInflight {
				s.startLocked(b) // full, and nothing in flight: no reason to gather
			}
			return b
		}
	}
	b = &batch{fence: f, ops: []clientv3.Op{op}, keys: map[string]int{key: 0}, done: make(chan struct{}), born: time.Now()}
	s.queue = append(s.queue, b)
	gather, stuck := s.waits()
	// Once gathered, the group goes if no transaction is in flight (else
	// done starts it); at maxQueueWait it goes in any case.
	b.timer = time.AfterFunc(gather, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		switch i := slices.Index(s.queue, b); {
		case i < 0:
			return // started already
		case i == 0 && s.inflight < maxInflight:
			s.startLocked(b)
			return
		}
		b.timer = time.AfterFunc(time.Until(b.born.Add(stuck)), func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.startLocked(b)
		})
	})
	return b
}

// waits is how long a group gathers, and how long it waits at most for a
// transaction in flight (no less than it gathers).
func (s *Store) waits() (gather, stuck time.Duration) {
	gather, stuck = s.gather, s.queueWait
	if gather == 0 {
		gather = gatherTime
	}
	if stuck <= 0 {
		stuck = maxQueueWait
	}
	return min(max(gather, 0), stuck), stuck
}

// done ends a lease transaction and starts the waiting batches that may
// run now: full, or gathered (the others' timers start them).
func (s *Store) done() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.inflight--
	gather, _ := s.waits()
	for s.inflight < maxInflight && len(s.queue) > 0 {
		b := s.queue[0]
		if len(b.ops) < maxBatch && time.Since(b.born) < gather {
			return
		}
		s.startLocked(b)
	}
}

// startLocked takes b off the queue, if it is still there, and writes it.
// The caller holds s.mu.
func (s *Store) startLocked(b *batch) {
	i := slices.Index(s.queue, b)
	if i < 0 {
		return // started already
	}
	s.queue = slices.Delete(s.queue, i, i+1)
	b.timer.Stop()
	s.inflight++
	s.metrics.group.Observe(float64(len(b.ops)))
	go func() {
		// The batch serves several clients: none of their contexts may
		// cut it short, only the store's timeout.
		b.err = s.fenced(context.Background(), b.fence, b.ops...)
		close(b.done)
		s.done()
	}()
}

// Remove deletes a lease if f still holds.
func (s *Store) Remove(ctx context.Context, f election.Fence, ip netip.Addr) error {
	return s.fenced(ctx, f, clientv3.OpDelete(s.keys.Lease(ip)))
}

func (s *Store) fenced(ctx context.Context, f election.Fence, ops ...clientv3.Op) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	err := f.Write(ctx, s.cli, ops...)
	if err != nil && !errors.Is(err, ErrDeposed) {
		return state.Unavailable("lease write", err)
	}
	return err
}
