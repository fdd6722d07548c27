// Package testfakes stands in for mayu's state store in the unit tests of
// one package: an in-memory machine registry and lease store that behave
// like the etcd-backed ones, a broken one that fails every call as an
// unreachable etcd does, and a slow one. The etcd-backed packages
// (registry, lease, election) are tested on real etcd; so is every
// end-to-end test.
package testfakes

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/identity"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
	"github.com/mayu-boot/mayu/pkg/state"
	"github.com/mayu-boot/mayu/pkg/token"
)

// ErrBroken is what the broken fakes fail with: it is marked as coming
// from etcd (state.ErrUnavailable), as an unreachable etcd's errors are.
var ErrBroken = state.Unavailable("fake", errors.New("the store is broken"))

// Machines is an in-memory machine registry with the registry's rules:
// ids checked, the lowest free static address, profile slots in config
// order, one owner per MAC, records copied in and out.
type Machines struct {
	Cluster     config.Cluster
	ReplicaName string
	Now         func() time.Time

	mu       sync.Mutex
	machines map[string]*machine.Machine
	macs     map[string]string
	keys     token.Keys
	watchers []chan registry.Change
}

// NewMachines is an empty registry for cluster.
func NewMachines(cluster config.Cluster) *Machines {
	return &Machines{Cluster: cluster, ReplicaName: "fake", Now: time.Now,
		machines: map[string]*machine.Machine{}, macs: map[string]string{},
		keys: token.Keys{Current: []byte("0123456789abcdef0123456789abcdef")}}
}

func clone(m *machine.Machine) *machine.Machine {
	c := *m
	c.MACs = append([]string(nil), m.MACs...)
	c.History = append([]machine.Event(nil), m.History...)
	c.Metadata = make(map[string]string, len(m.Metadata))
	for k, v := range m.Metadata {
		c.Metadata[k] = v
	}
	return &c
}

func (f *Machines) Replica() string { return f.ReplicaName }

func (f *Machines) Secrets(ctx context.Context) (token.Keys, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.keys, nil
}

// SetSecrets replaces the cluster secrets, as a rotation does.
func (f *Machines) SetSecrets(k token.Keys) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keys = k
}

// RotateSecret makes a new current secret, keeping the previous one for
// the install timeout, as the registry's.
func (f *Machines) RotateSecret(ctx context.Context) (registry.Rotation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.Now().UTC()
	until := now.Add(f.Cluster.Install.Timeout)
	f.keys = token.Keys{Current: []byte(hex.EncodeToString([]byte(rand.Text()))), Previous: f.keys.Current, PreviousUntil: until}
	return registry.Rotation{Rotated: now, PreviousUntil: until, Replica: f.ReplicaName}, nil
}

// Put stores a record as it is, for tests that need one the registry
// would not make (a record from an older schema).
func (f *Machines) Put(m *machine.Machine) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.putLocked(clone(m), nil)
}

func (f *Machines) Get(ctx context.Context, id string) (*machine.Machine, error) {
	if err := identity.Check(id); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.machines[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", registry.ErrNotFound, id)
	}
	return clone(m), nil
}

func (f *Machines) ByMAC(ctx context.Context, mac string) (*machine.Machine, error) {
	mac, err := identity.NormalizeMAC(mac)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	id, ok := f.macs[mac]
	f.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: no machine has MAC %s", registry.ErrNotFound, mac)
	}
	return f.Get(ctx, id)
}

func (f *Machines) List(ctx context.Context) ([]*machine.Machine, []*registry.CorruptError, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*machine.Machine
	for _, m := range f.machines {
		out = append(out, clone(m))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil, nil
}

func (f *Machines) MACOwners(ctx context.Context) (map[string]string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]string, len(f.macs))
	for k, v := range f.macs {
		out[k] = v
	}
	return out, nil
}

func (f *Machines) Register(ctx context.Context, reg registry.Registration) (*machine.Machine, bool, error) {
	if err := identity.Check(reg.ID); err != nil {
		return nil, false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if m, ok := f.machines[reg.ID]; ok {
		return clone(m), false, nil
	}
	var macs []string
	for _, raw := range reg.MACs {
		mac, err := identity.NormalizeMAC(raw)
		if err != nil {
			return nil, false, err
		}
		if owner, ok := f.macs[mac]; ok && owner != reg.ID {
			return nil, false, &registry.MACTakenError{MAC: mac, Owner: owner}
		}
		macs = append(macs, mac)
	}
	if len(macs) > registry.MaxMACs {
		return nil, false, registry.ErrTooManyMACs
	}
	addr, err := f.freeAddress()
	if err != nil {
		return nil, false, err
	}
	m := machine.New(reg.ID, f.Now(), f.ReplicaName)
	m.Serial, m.UUID, m.Arch, m.MACs, m.Preregistered = reg.Serial, reg.UUID, reg.Arch, macs, reg.Preregistered
	sum := rand.Text() + rand.Text() // random, as the registry's: a re-registration gets a new one
	sum = hex.EncodeToString([]byte(sum))[:32]
	m.MachineID, m.Hostname, m.InternalAddr = sum, sum[:16], addr.String()
	m.TokenNonce = hex.EncodeToString([]byte(rand.Text()))[:32]
	m.Profile, m.ProfileSlot = "default", -1
	for _, p := range f.Cluster.Profiles {
		if n := f.countProfile(p.Name); n < p.Quantity {
			m.Profile, m.ProfileSlot = p.Name, n
			for k, v := range p.Tags {
				m.Metadata[k] = v
			}
			break
		}
	}
	f.putLocked(m, nil)
	return clone(m), true, nil
}

func (f *Machines) countProfile(name string) int {
	n := 0
	for _, m := range f.machines {
		if m.Profile == name {
			n++
		}
	}
	return n
}

func (f *Machines) freeAddress() (netip.Addr, error) {
	taken := map[string]bool{}
	for _, m := range f.machines {
		taken[m.InternalAddr] = true
	}
	rg := f.Cluster.Static.Range
	for a := rg.Start; a.IsValid() && a.Compare(rg.End) <= 0; a = a.Next() {
		if !taken[a.String()] {
			return a, nil
		}
	}
	return netip.Addr{}, registry.ErrExhausted
}

func (f *Machines) AddMAC(ctx context.Context, id, mac string) (*machine.Machine, error) {
	return f.addMAC(id, mac, true)
}

// AttachMAC is AddMAC refusing an installed or running machine, as the
// registry's.
func (f *Machines) AttachMAC(ctx context.Context, id, mac string) (*machine.Machine, error) {
	return f.addMAC(id, mac, false)
}

func (f *Machines) addMAC(id, mac string, installed bool) (*machine.Machine, error) {
	mac, err := identity.NormalizeMAC(mac)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.machines[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", registry.ErrNotFound, id)
	}
	if m.HasMAC(mac) {
		return clone(m), nil
	}
	if !installed && m.HasBeenInstalled() {
		return nil, registry.ErrInstalled
	}
	if owner, ok := f.macs[mac]; ok && owner != id {
		return nil, &registry.MACTakenError{MAC: mac, Owner: owner}
	}
	if len(m.MACs) >= registry.MaxMACs {
		return nil, registry.ErrTooManyMACs
	}
	next := clone(m)
	next.MACs = append(next.MACs, mac)
	f.putLocked(next, m)
	return clone(next), nil
}

func (f *Machines) Update(ctx context.Context, id string, change func(*machine.Machine) error) (*machine.Machine, error) {
	if err := identity.Check(id); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.machines[id]
	if !ok {
		return nil, fmt.Errorf("%w: %s", registry.ErrNotFound, id)
	}
	next := clone(m)
	if err := change(next); errors.Is(err, machine.ErrUnchanged) {
		return clone(m), nil
	} else if err != nil {
		return nil, err
	}
	f.putLocked(next, m)
	return clone(next), nil
}

func (f *Machines) Delete(ctx context.Context, id string) error {
	if err := identity.Check(id); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.machines[id]
	if !ok {
		return fmt.Errorf("%w: %s", registry.ErrNotFound, id)
	}
	delete(f.machines, id)
	for _, mac := range m.MACs {
		delete(f.macs, mac)
	}
	f.notifyLocked(registry.Change{ID: id, Prev: clone(m), Deleted: true})
	return nil
}

// Watch delivers every change made from now on until ctx ends.
func (f *Machines) Watch(ctx context.Context, fn func(registry.Change), broken func(error)) {
	ch := make(chan registry.Change, 64)
	f.mu.Lock()
	f.watchers = append(f.watchers, ch)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		for i, w := range f.watchers {
			if w == ch {
				f.watchers = append(f.watchers[:i], f.watchers[i+1:]...)
				break
			}
		}
		f.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case c := <-ch:
			fn(c)
		}
	}
}

// Watchers is how many Watch calls are subscribed: a test waits for its
// watcher before making the change it must see.
func (f *Machines) Watchers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.watchers)
}

// putLocked stores m (replacing prev, nil for a new record) and tells the
// watchers.
func (f *Machines) putLocked(m, prev *machine.Machine) {
	f.machines[m.ID] = m
	for _, mac := range m.MACs {
		f.macs[mac] = m.ID
	}
	c := registry.Change{ID: m.ID, Machine: clone(m)}
	if prev != nil {
		c.Prev = clone(prev)
	}
	f.notifyLocked(c)
}

func (f *Machines) notifyLocked(c registry.Change) {
	for _, w := range f.watchers {
		select {
		case w <- c:
		default: // a watcher that does not keep up loses changes, as with a broken watch
		}
	}
}

// BrokenMachines fails every call as an unreachable etcd does.
type BrokenMachines struct{}

func (BrokenMachines) Replica() string                                       { return "broken" }
func (BrokenMachines) Secrets(context.Context) (token.Keys, error)           { return token.Keys{}, ErrBroken }
func (BrokenMachines) Get(context.Context, string) (*machine.Machine, error) { return nil, ErrBroken }
func (BrokenMachines) ByMAC(context.Context, string) (*machine.Machine, error) {
	return nil, ErrBroken
}
func (BrokenMachines) List(context.Context) ([]*machine.Machine, []*registry.CorruptError, error) {
	return nil, nil, ErrBroken
}
func (BrokenMachines) MACOwners(context.Context) (map[string]string, error) { return nil, ErrBroken }
func (BrokenMachines) Register(context.Context, registry.Registration) (*machine.Machine, bool, error) {
	return nil, false, ErrBroken
}
func (BrokenMachines) AddMAC(context.Context, string, string) (*machine.Machine, error) {
	return nil, ErrBroken
}
func (BrokenMachines) AttachMAC(context.Context, string, string) (*machine.Machine, error) {
	return nil, ErrBroken
}
func (BrokenMachines) Update(context.Context, string, func(*machine.Machine) error) (*machine.Machine, error) {
	return nil, ErrBroken
}
func (BrokenMachines) Delete(context.Context, string) error { return ErrBroken }
func (BrokenMachines) Watch(ctx context.Context, fn func(registry.Change), broken func(error)) {
	if broken != nil {
		broken(ErrBroken)
	}
	<-ctx.Done()
}

// SlowMachines answers like Machines after Delay, or fails with the
// context's error if the caller gives up first, as etcd under load does.
type SlowMachines struct {
	*Machines
	Delay time.Duration
}

func (s SlowMachines) wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return state.Unavailable("fake", ctx.Err())
	case <-time.After(s.Delay):
		return nil
	}
}

func (s SlowMachines) Get(ctx context.Context, id string) (*machine.Machine, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return s.Machines.Get(ctx, id)
}

func (s SlowMachines) ByMAC(ctx context.Context, mac string) (*machine.Machine, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return s.Machines.ByMAC(ctx, mac)
}

func (s SlowMachines) List(ctx context.Context) ([]*machine.Machine, []*registry.CorruptError, error) {
	if err := s.wait(ctx); err != nil {
		return nil, nil, err
	}
	return s.Machines.List(ctx)
}

func (s SlowMachines) Register(ctx context.Context, reg registry.Registration) (*machine.Machine, bool, error) {
	if err := s.wait(ctx); err != nil {
		return nil, false, err
	}
	return s.Machines.Register(ctx, reg)
}

func (s SlowMachines) Update(ctx context.Context, id string, change func(*machine.Machine) error) (*machine.Machine, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return s.Machines.Update(ctx, id, change)
}

// ListPage pages through List by id; the continue token is the last id.
func (f *Machines) ListPage(ctx context.Context, limit int, cont string) (*registry.Page, error) {
	ms, bad, err := f.List(ctx)
	if err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = registry.DefaultPageSize
	}
	p := &registry.Page{Corrupt: bad}
	for _, m := range ms {
		if m.ID <= cont {
			continue
		}
		if len(p.Machines) == limit {
			p.Continue = p.Machines[limit-1].ID
			break
		}
		p.Machines = append(p.Machines, m)
	}
	return p, nil
}

func (s SlowMachines) ListPage(ctx context.Context, limit int, cont string) (*registry.Page, error) {
	if err := s.wait(ctx); err != nil {
		return nil, err
	}
	return s.Machines.ListPage(ctx, limit, cont)
}
