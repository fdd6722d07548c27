package testfakes

import (
	"context"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/mayu-boot/mayu/pkg/election"
	"github.com/mayu-boot/mayu/pkg/lease"
)

// Leases is an in-memory lease store with the fence rule of the real one:
// a write under a fence that was deposed is refused with lease.ErrDeposed.
type Leases struct {
	mu      sync.Mutex
	leases  map[netip.Addr]lease.Lease
	deposed map[election.Fence]bool
	// Delay, if set, makes every write wait that long (or until the
	// caller gives up): an etcd under load.
	Delay time.Duration
	// Puts counts the writes that were made durable.
	Puts int
	// RemoveTimeouts is how many of the next deletes time out (etcd did
	// not answer; the delete is not made).
	RemoveTimeouts int
}

// NewLeases is an empty lease store.
func NewLeases() *Leases {
	return &Leases{leases: map[netip.Addr]lease.Lease{}, deposed: map[election.Fence]bool{}}
}

// Depose ends the term of f: its writes are refused from now on.
func (s *Leases) Depose(f election.Fence) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deposed[f] = true
}

func (s *Leases) Load(ctx context.Context) ([]lease.Lease, []error, error) {
	ls, err := s.List(ctx)
	return ls, nil, err
}

func (s *Leases) List(ctx context.Context) ([]lease.Lease, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []lease.Lease
	for _, l := range s.leases {
		out = append(out, l)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].IP.Less(out[j].IP) })
	return out, nil
}

func (s *Leases) wait(ctx context.Context) error {
	if s.Delay <= 0 {
		return nil
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(s.Delay):
		return nil
	}
}

func (s *Leases) Put(ctx context.Context, f election.Fence, l lease.Lease) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deposed[f] {
		return lease.ErrDeposed
	}
	s.leases[l.IP] = l
	s.Puts++
	return nil
}

func (s *Leases) Remove(ctx context.Context, f election.Fence, ip netip.Addr) error {
	if err := s.wait(ctx); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.deposed[f] {
		return lease.ErrDeposed
	}
	if s.RemoveTimeouts > 0 {
		s.RemoveTimeouts--
		return context.DeadlineExceeded
	}
	delete(s.leases, ip)
	return nil
}

// BrokenLeases fails every call as an unreachable etcd does.
type BrokenLeases struct{}

func (BrokenLeases) Load(context.Context) ([]lease.Lease, []error, error) { return nil, nil, ErrBroken }
func (BrokenLeases) List(context.Context) ([]lease.Lease, error)          { return nil, ErrBroken }
func (BrokenLeases) Put(context.Context, election.Fence, lease.Lease) error {
	return ErrBroken
}
func (BrokenLeases) Remove(context.Context, election.Fence, netip.Addr) error { return ErrBroken }

// Installed is a fixed set of installed MACs, ready at once.
type Installed struct {
	mu    sync.Mutex
	macs  map[string]bool
	ready chan struct{}
}

// NewInstalled is the set of macs (normalised, lower-case).
func NewInstalled(macs ...string) *Installed {
	s := &Installed{macs: map[string]bool{}, ready: make(chan struct{})}
	for _, m := range macs {
		s.macs[m] = true
	}
	close(s.ready)
	return s
}

func (s *Installed) Has(mac string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.macs[mac]
}

func (s *Installed) Ready() <-chan struct{} { return s.ready }
