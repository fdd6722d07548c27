// Package registry keeps machines in etcd. Every replica writes here; every
// change that touches several keys (a registration: record, MAC index,
// address, profile slot) is one etcd transaction, and every state change is a
// transaction on what it read (etcd's concurrency.STM), so replicas racing
// for the same machine cannot lose each other's writes.
package registry

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"golang.org/x/time/rate"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/hostile"
	"github.com/mayu-boot/mayu/pkg/identity"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/state"
)

// Errors callers turn into answers.
var (
	ErrNotFound = errors.New("machine not found")
	ErrExists   = errors.New("machine already registered")
	// ErrExhausted: the static range has no free address left.
	ErrExhausted = errors.New("static address range exhausted")
	// ErrTooManyMACs: a machine has at most MaxMACs MACs, so that no
	// client can grow a record (and its transactions) without bound.
	ErrTooManyMACs = fmt.Errorf("a machine has at most %d MACs", MaxMACs)
	// ErrConflict: other replicas changed the same keys again and again
	// until the time ran out; the caller may retry.
	ErrConflict = errors.New("too many concurrent changes to the same keys, try again")
	// ErrInstalled: a machine that is installed or running takes a new MAC
	// only from an operator (AddMAC), never from a boot (AttachMAC):
	// DHCP ignores every MAC of such a machine.
	ErrInstalled = errors.New("the machine is installed: a new MAC joins it only through the admin API (mayuctl add-mac)")
	// ErrUnavailable marks every error that came from etcd itself.
	ErrUnavailable = state.ErrUnavailable
)

// CorruptError is a record in etcd that mayu cannot read. It is reported,
// never fatal: the operator fixes or deletes the key.
type CorruptError struct {
	Key string
	Err error
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("record %s in etcd is corrupt: %v (inspect it with `etcdctl get %s`; fix it or `mayuctl delete` the machine)", e.Key, e.Err, e.Key)
}

func (e *CorruptError) Unwrap() error { return e.Err }

// MACTakenError: a MAC already belongs to another machine.
type MACTakenError struct{ MAC, Owner string }

func (e *MACTakenError) Error() string {
	return fmt.Sprintf("MAC %s already belongs to machine %s (delete that machine first if the NIC moved)", e.MAC, e.Owner)
}

// MaxMACs is how many MACs one machine may have: enough for every NIC of a
// server, few enough to keep each registration transaction small.
const MaxMACs = 16

// MaxArch bounds the architecture a machine reports (iPXE's ${buildarch}:
// i386, x86_64, arm64, ...), stored escaped (hostile.Text).
const MaxArch = 32

// Registry is the machine store of one replica.
type Registry struct {
	cli     *clientv3.Client
	keys    state.Keys
	cluster config.Cluster
	replica string
	timeout time.Duration
	now     func() time.Time
	metrics *metrics
	secret  followedSecret // kept current by FollowSecret
	// newMachines is this replica's token bucket of registrations on
	// first contact. Per replica, not cluster-wide: a flood spread over
	// n replicas gets n buckets, and no etcd write is spent on counting.
	newMachines   *rate.Limiter
	maxUnfinished int
	// known, once FollowKnown runs, counts the unfinished machines for
	// cluster.self_registration.max_unfinished.
	known atomic.Pointer[Known]
	// afterInstalledLoad, set only by tests, runs after each load of the
	// installed MACs, before the watch starts: where a compaction can
	// pass the revision the watch resumes from.
	afterInstalledLoad func()
}

// Options configure a Registry.
type Options struct {
	Prefix  string         // key prefix, ending in "/"
	Cluster config.Cluster // pools, static range, profiles
	Replica string         // this replica's name, recorded in history
	Timeout time.Duration  // one etcd request; default 5s
	Now     func() time.Time
	// Registerer is where the machine metrics go (nil: nowhere),
	// mayu_machines included: it lists the machines at each scrape.
	Registerer prometheus.Registerer
}

// New returns a registry on cli.
func New(cli *clientv3.Client, o Options) *Registry {
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	sr := o.Cluster.SelfRegistration
	if sr.PerSecond <= 0 {
		sr.PerSecond = 10
	}
	if sr.Burst <= 0 {
		sr.Burst = 100
	}
	if sr.MaxUnfinished <= 0 {
		sr.MaxUnfinished = config.DefaultMaxUnfinished(o.Cluster.Static.Range.Size())
	}
	r := &Registry{cli: cli, keys: state.Keys{Prefix: o.Prefix}, cluster: o.Cluster, replica: o.Replica, timeout: o.Timeout, now: o.Now,
		newMachines: rate.NewLimiter(rate.Limit(sr.PerSecond), sr.Burst), maxUnfinished: sr.MaxUnfinished}
	r.metrics = newMetrics(o.Registerer, r)
	return r
}

// Replica is the name recorded in history for changes made here.
func (r *Registry) Replica() string { return r.replica }

func (r *Registry) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.timeout)
}

// Get returns the machine with id.
func (r *Registry) Get(ctx context.Context, id string) (*machine.Machine, error) {
	m, _, err := r.get(ctx, id)
	return m, err
}

func (r *Registry) get(ctx context.Context, id string) (*machine.Machine, int64, error) {
	if err := identity.Check(id); err != nil {
		return nil, 0, err
	}
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.cli.Get(ctx, r.keys.Machine(id))
	if err != nil {
		return nil, 0, state.Unavailable("read machine", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, 0, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	kv := resp.Kvs[0]
	m, err := r.decode(string(kv.Key), kv.Value)
	return m, kv.ModRevision, err
}

func (r *Registry) decode(key string, value []byte) (*machine.Machine, error) {
	var m machine.Machine
	if err := json.Unmarshal(value, &m); err != nil {
		return nil, &CorruptError{Key: key, Err: err}
	}
	if err := m.Check(strings.TrimPrefix(key, r.keys.Machines())); err != nil {
		return nil, &CorruptError{Key: key, Err: err}
	}
	if m.Metadata == nil {
		m.Metadata = map[string]string{}
	}
	return &m, nil
}

// ByMAC returns the machine a MAC belongs to.
func (r *Registry) ByMAC(ctx context.Context, mac string) (*machine.Machine, error) {
	mac, err := identity.NormalizeMAC(mac)
	if err != nil {
		return nil, err
	}
	cctx, cancel := r.ctx(ctx)
	resp, err := r.cli.Get(cctx, r.keys.MAC(mac))
	cancel()
	if err != nil {
		return nil, state.Unavailable("read MAC index", err)
	}
	if len(resp.Kvs) == 0 {
		return nil, fmt.Errorf("%w: no machine has MAC %s", ErrNotFound, mac)
	}
	var o owner
	if err := json.Unmarshal(resp.Kvs[0].Value, &o); err != nil {
		return nil, &CorruptError{Key: string(resp.Kvs[0].Key), Err: err}
	}
	return r.Get(ctx, o.Machine)
}

// List returns every readable machine sorted by id, and the corrupt records
// it had to skip.
func (r *Registry) List(ctx context.Context) ([]*machine.Machine, []*CorruptError, error) {
	var ms []*machine.Machine
	var bad []*CorruptError
	err := r.each(ctx, func(m *machine.Machine) { ms = append(ms, m) }, func(c *CorruptError) { bad = append(bad, c) })
	if err != nil {
		return nil, nil, err
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
	return ms, bad, nil
}

// each hands every machine record to f (and every unreadable one to
// corrupt), read page by page at one revision (state.Paged): one etcd
// response never holds the whole fleet.
func (r *Registry) each(ctx context.Context, f func(*machine.Machine), corrupt func(*CorruptError)) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	_, err := state.Paged(ctx, r.cli, r.keys.Machines(), 0, func(kvs []*mvccpb.KeyValue) {
		for _, kv := range kvs {
			m, err := r.decode(string(kv.Key), kv.Value)
			if err != nil {
				corrupt(err.(*CorruptError))
				continue
			}
			f(m)
		}
	})
	if err != nil {
		return state.Unavailable("list machines", err)
	}
	return nil
}

// Registration is what is known of a machine at first contact.
type Registration struct {
	ID            string
	Serial        string
	UUID          string
	MACs          []string // normalised
	Arch          string
	Preregistered bool // added by an operator rather than by a boot
}

// Register creates the machine in one transaction: its record, MAC index
// entries, a static address and a profile slot. If the machine already
// exists (another replica won the race) it returns that record with
// created=false.
func (r *Registry) Register(ctx context.Context, reg Registration) (m *machine.Machine, created bool, err error) {
	if err := identity.Check(reg.ID); err != nil {
		return nil, false, err
	}
	// Normalise into a new slice: reg.MACs belongs to the caller. A MAC
	// given twice is one MAC (etcd refuses a key twice in one transaction).
	macs := make([]string, 0, len(reg.MACs))
	for _, mac := range reg.MACs {
		norm, err := identity.NormalizeMAC(mac)
		if err != nil {
			return nil, false, err
		}
		if !slices.Contains(macs, norm) {
			macs = append(macs, norm)
		}
	}
	reg.MACs = macs
	// Text a machine sent is stored escaped and bounded, whoever passed
	// it on (hostile.Text is idempotent: escaping twice changes nothing).
	reg.Serial = hostile.Text(reg.Serial, identity.MaxSerial)
	reg.UUID = hostile.Text(reg.UUID, identity.MaxSerial)
	reg.Arch = hostile.Text(reg.Arch, MaxArch)
	if len(macs) > MaxMACs {
		return nil, false, fmt.Errorf("%w: %d MACs given", ErrTooManyMACs, len(macs))
	}
	// A registration on first contact reserves its place under the cap
	// before it writes, and holds it until it ends; a new record then
	// counts in k at once (before the watch brings it). So a burst on
	// this replica cannot pass the cap, and only what other replicas
	// create before this one's watch sees it can. No lock is held across
	// etcd.
	k := r.known.Load()
	reserved := false
	if !reg.Preregistered && k != nil {
		if err := k.waitLoaded(ctx); err != nil {
			return nil, false, err
		}
		// A failed or lost registration gives its place back; a new
		// record keeps it, counted in k from then on.
		defer func() {
			if reserved {
				k.unreserve()
			}
		}()
	}
	// The address and profile slot come from the allocator's hints
	// (alloc.go): the lowest free key of each space read plainly, the
	// cursors and the picked index keys inside the STM, so two replicas
	// registering at once cannot both take one: the loser runs again and
	// picks the next. A space whose hints must be built from the index
	// first stops the STM with a rebuildError; it is rebuilt, and the
	// registration runs again.
	charged := false
	spaces := r.allocSpaces()
	rescanned := false // the address index was read in full since the hints said full
	// The profiles whose hints said full and whose index was read since.
	rescannedProfiles := map[string]bool{}
	for rebuilds := 0; ; rebuilds++ {
		err = r.stm(ctx, "register machine", func(stm concurrency.STM) error {
			m, created = nil, false
			free, err := r.lowestFree(ctx, spaces)
			if err != nil {
				return err
			}
			if existing, err := r.stmGet(stm, reg.ID); err == nil {
				m = existing
				return nil
			} else if !errors.Is(err, ErrNotFound) {
				return err
			}
			// A new machine on first contact takes a token, once however
			// often the transaction runs; an operator's add takes none.
			if !reg.Preregistered && !charged {
				// The cap first: a refused machine spends no token.
				if k != nil && !reserved {
					if !k.reserve(r.maxUnfinished) {
						return ErrTooManyUnfinished
					}
					reserved = true
				}
				if !r.newMachines.AllowN(r.now(), 1) {
					return ErrRateLimited
				}
				charged = true
			}
			pos, ok, err := r.take(stm, spaces[0], free[0])
			if err != nil {
				return err
			}
			if !ok {
				if !rescanned {
					return &rebuildError{s: spaces[0], full: true}
				}
				rg := r.cluster.Static.Range
				return fmt.Errorf("%w: all %s-%s are assigned (widen cluster.static.range or delete machines)", ErrExhausted, rg.Start, rg.End)
			}
			profile, slot := config.Profile{Name: "default"}, -1
			for i, p := range r.cluster.Profiles {
				s, ok, err := r.take(stm, spaces[i+1], free[i+1])
				if err != nil {
					return err
				}
				if ok {
					profile, slot = p, int(s)
					break
				}
				// Full by the hints. A slot freed where no hint was
				// left (its quantity lowered and raised again, or an
				// older release freed it) is found by a count of the
				// index: one key per held slot, at most the quantity.
				sp := spaces[i+1]
				if !sp.disabled && !rescannedProfiles[sp.name] {
					held, err := r.countKeys(ctx, sp.holdDir)
					if err != nil {
						return err
					}
					if held < int64(sp.hi-sp.lo+1) {
						return &rebuildError{s: sp, full: true}
					}
				}
			}
			fresh, err := r.newMachine(reg, posAddr(pos), profile, slot)
			if err != nil {
				return err
			}
			for _, mac := range fresh.MACs {
				if err := r.stmClaimMAC(stm, mac, reg.ID); err != nil {
					return err
				}
			}
			if err := r.stmPutMachine(stm, fresh); err != nil {
				return err
			}
			stm.Put(r.keys.Address(fresh.InternalAddr), ownerValue(reg.ID))
			if k := r.slotKey(fresh); k != "" {
				stm.Put(k, ownerValue(reg.ID))
			}
			m, created = fresh, true
			return nil
		})
		var rb *rebuildError
		if !errors.As(err, &rb) {
			break
		}
		if rebuilds == 8 {
			err = fmt.Errorf("register machine: the allocator of %s keeps changing under this replica (is another replica running with another cluster.static.range or profiles?): %w", rb.s.name, ErrConflict)
			break
		}
		if rb.full {
			if rb.s.name == spaces[0].name {
				rescanned = true
			} else {
				rescannedProfiles[rb.s.name] = true
			}
		}
		if err = r.rebuild(ctx, rb.s); err != nil {
			break
		}
	}
	switch {
	case errors.Is(err, ErrRateLimited):
		r.metrics.refused.WithLabelValues("rate_limited").Inc()
	case errors.Is(err, ErrTooManyUnfinished):
		r.metrics.refused.WithLabelValues("unfinished").Inc()
	}
	if err != nil {
		return nil, false, err
	}
	if reserved && created {
		k.set(m.ID, m.MACs, m.Unfinished()) // the watch sets the same
	}
	if created {
		r.metrics.registrations.WithLabelValues().Inc()
	}
	return m, created, nil
}

// safely runs a caller's change. The STM runs it in a goroutine of its
// own, where a panic would end the whole replica instead of one request.
func safely(f func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("a machine change failed: %v", p)
		}
	}()
	return f()
}

// backoff spreads out the runs of writers that keep colliding.
func backoff(ctx context.Context, runs int) {
	select {
	case <-ctx.Done():
	case <-time.After(time.Duration(1+runs%10) * time.Millisecond):
	}
}

// errRetry makes an STM run again from fresh reads.
var errRetry = errors.New("retry")

// stm runs apply as one etcd transaction that commits only if nothing it
// read changed meanwhile; else it runs again on fresh reads (etcd's
// concurrency.STM). Errors from etcd are marked ErrUnavailable; apply's own
// come back as they are.
func (r *Registry) stm(ctx context.Context, op string, apply func(concurrency.STM) error) error {
	// A bound for the whole transaction, its retries included: each
	// retry means another writer succeeded, so it ends unless a storm of
	// writers to the same keys outlasts it.
	ctx, cancel := context.WithTimeout(ctx, 2*r.timeout)
	defer cancel()
	runs := 0
	for {
		var own error
		_, err := concurrency.NewSTM(r.cli, func(s concurrency.STM) error {
			runs++
			own = apply(s)
			return own
		}, concurrency.WithAbortContext(ctx))
		switch {
		case err == nil:
			return nil
		case errors.Is(err, errRetry) && own != nil:
			if ctx.Err() == nil {
				backoff(ctx, runs)
				continue
			}
			err = ctx.Err()
		case own != nil && errors.Is(err, own):
			return err
		}
		if ctx.Err() != nil && runs > 1 {
			// Other writers kept winning until the time ran out: etcd
			// answered all along, so do not send the operator to it.
			return fmt.Errorf("%s: %w", op, ErrConflict)
		}
		return state.Unavailable(op, err)
	}
}

// stmGet reads and decodes a machine record inside an STM.
func (r *Registry) stmGet(stm concurrency.STM, id string) (*machine.Machine, error) {
	key := r.keys.Machine(id)
	if stm.Rev(key) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, id)
	}
	return r.decode(key, []byte(stm.Get(key)))
}

func (r *Registry) stmPutMachine(stm concurrency.STM, m *machine.Machine) error {
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	stm.Put(r.keys.Machine(m.ID), string(data))
	return nil
}

// newMachine is the record of a registration, with the address and
// profile slot the allocator picked.
func (r *Registry) newMachine(reg Registration, addr netip.Addr, profile config.Profile, slot int) (*machine.Machine, error) {
	machineID, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	nonce, err := randomHex(16)
	if err != nil {
		return nil, err
	}
	m := machine.New(reg.ID, r.now(), r.replica)
	m.Serial, m.UUID, m.Arch = reg.Serial, reg.UUID, reg.Arch
	m.MACs = append([]string{}, reg.MACs...)
	m.MachineID = machineID
	m.Hostname = machineID[:16]
	m.TokenNonce = nonce
	m.InternalAddr = addr.String()
	m.Profile, m.ProfileSlot = profile.Name, slot
	for k, v := range profile.Tags {
		m.Metadata[k] = v
	}
	m.Preregistered = reg.Preregistered
	if reg.Preregistered {
		m.History[0].Reason = "added by an operator"
	}
	return m, nil
}

// slotKey is the profile slot key a machine holds, "" for the default
// profile.
func (r *Registry) slotKey(m *machine.Machine) string {
	if m.ProfileSlot < 0 {
		return ""
	}
	return r.keys.ProfileSlot(m.Profile, m.ProfileSlot)
}

// stmClaimMAC points mac at id inside an STM: the index key must be absent
// or stale (unreadable, or pointing at a machine that no longer exists or
// at id itself). A MAC of another existing machine is refused.
func (r *Registry) stmClaimMAC(stm concurrency.STM, mac, id string) error {
	key := r.keys.MAC(mac)
	var o owner
	if stm.Rev(key) != 0 && json.Unmarshal([]byte(stm.Get(key)), &o) == nil && o.Machine != "" && o.Machine != id {
		if stm.Rev(r.keys.Machine(o.Machine)) != 0 {
			return &MACTakenError{MAC: mac, Owner: o.Machine}
		}
	}
	stm.Put(key, ownerValue(id))
	return nil
}

// Update applies change to the machine's record as one transaction,
// run again if another replica changed it meanwhile. change returning
// machine.ErrUnchanged writes nothing and returns the record as it is.
func (r *Registry) Update(ctx context.Context, id string, change func(*machine.Machine) error) (*machine.Machine, error) {
	return r.changeRecord(ctx, "update machine", id, func(_ concurrency.STM, m *machine.Machine) error {
		return safely(func() error { return change(m) })
	})
}

// AddMAC records another MAC of a machine, record and index in one
// transaction, whatever its state: an operator's change.
func (r *Registry) AddMAC(ctx context.Context, id, mac string) (*machine.Machine, error) {
	return r.addMAC(ctx, id, mac, true)
}

// AttachMAC is AddMAC for a MAC a machine sent itself: refused with
// ErrInstalled once the machine is installed or running (checked in the
// same transaction), so that no boot request can make DHCP ignore a MAC.
func (r *Registry) AttachMAC(ctx context.Context, id, mac string) (*machine.Machine, error) {
	return r.addMAC(ctx, id, mac, false)
}

func (r *Registry) addMAC(ctx context.Context, id, mac string, installed bool) (*machine.Machine, error) {
	mac, err := identity.NormalizeMAC(mac)
	if err != nil {
		return nil, err
	}
	return r.changeRecord(ctx, "add MAC", id, func(stm concurrency.STM, m *machine.Machine) error {
		if m.HasMAC(mac) {
			return machine.ErrUnchanged
		}
		if !installed && m.HasBeenInstalled() {
			return fmt.Errorf("%w: machine %s is %s", ErrInstalled, id, m.State)
		}
		if len(m.MACs) >= MaxMACs {
			return fmt.Errorf("%w: machine %s already has %d", ErrTooManyMACs, id, len(m.MACs))
		}
		if err := r.stmClaimMAC(stm, mac, id); err != nil {
			return err
		}
		m.MACs = append(m.MACs, mac)
		return nil
	})
}

// changeRecord reads a machine record inside an STM, lets change alter it
// (and put other keys), and writes it back: one transaction. change
// returning machine.ErrUnchanged writes nothing.
func (r *Registry) changeRecord(ctx context.Context, op, id string, change func(concurrency.STM, *machine.Machine) error) (*machine.Machine, error) {
	if err := identity.Check(id); err != nil {
		return nil, err
	}
	var m *machine.Machine
	err := r.stm(ctx, op, func(stm concurrency.STM) error {
		var err error
		if m, err = r.stmGet(stm, id); err != nil {
			return err
		}
		gen := m.Generation
		if err := change(stm, m); err != nil {
			return err
		}
		if m.TokenNonce == "" {
			// A record from before etcd schema 2 (or written since by a
			// replica that has not been upgraded): bind its tokens to a
			// nonce from now on, still accepting the old-format token of
			// the install in flight, not of a new one.
			if m.TokenNonce, err = randomHex(16); err != nil {
				return err
			}
			m.LegacyToken = m.Generation == gen
		}
		return r.stmPutMachine(stm, m)
	})
	if errors.Is(err, machine.ErrUnchanged) {
		return m, nil
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Delete removes a machine with its MAC index entries, and frees its
// address and profile slot, in one transaction. An index key is removed
// only while it still points at the machine, so a delete never frees what
// another machine holds.
func (r *Registry) Delete(ctx context.Context, id string) error {
	if err := identity.Check(id); err != nil {
		return err
	}
	err := r.stm(ctx, "delete machine", func(stm concurrency.STM) error {
		m, err := r.stmGet(stm, id)
		if err != nil {
			return err
		}
		r.stmDelete(stm, m)
		return nil
	})
	var corrupt *CorruptError
	if errors.As(err, &corrupt) {
		return r.deleteCorrupt(ctx, id)
	}
	return err
}

// deleteCorrupt removes an unreadable record and every index key that
// points at it.
func (r *Registry) deleteCorrupt(ctx context.Context, id string) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	ops := []clientv3.Op{clientv3.OpDelete(r.keys.Machine(id))}
	for _, dir := range []string{r.keys.MACs(), r.keys.Addresses(), r.keys.Profiles()} {
		resp, err := r.cli.Get(ctx, dir, clientv3.WithPrefix())
		if err != nil {
			return state.Unavailable("read index", err)
		}
		for _, kv := range resp.Kvs {
			var o owner
			if json.Unmarshal(kv.Value, &o) == nil && o.Machine == id {
				// Deleted only while it still points here.
				key := string(kv.Key)
				ops = append(ops, clientv3.OpTxn(
					[]clientv3.Cmp{clientv3.Compare(clientv3.Value(key), "=", string(kv.Value))},
					[]clientv3.Op{clientv3.OpDelete(key)}, nil))
			}
		}
	}
	if _, err := r.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return state.Unavailable("delete machine", err)
	}
	return nil
}

// ExpireInstalls marks failed every install that outlasted timeout. Any
// replica may run it; the compare-and-swap makes concurrent sweeps safe.
func (r *Registry) ExpireInstalls(ctx context.Context, timeout time.Duration) ([]string, error) {
	ms, _, err := r.List(ctx)
	if err != nil {
		return nil, err
	}
	var expired []string
	for _, m := range ms {
		if !m.InstallExpired(timeout, r.now()) {
			continue
		}
		reason := fmt.Sprintf("install timed out after %s", timeout)
		changed := false
		_, err := r.Update(ctx, m.ID, func(m *machine.Machine) error {
			changed = m.InstallExpired(timeout, r.now())
			if !changed {
				return machine.ErrUnchanged
			}
			return m.MarkFailed(reason, r.replica, r.now())
		})
		if err != nil && !errors.Is(err, ErrNotFound) {
			return expired, err
		}
		if err == nil && changed {
			r.CountInstallFailed("timeout")
			expired = append(expired, m.ID)
		}
	}
	return expired, nil
}

func randomHex(n int) (string, error) {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// quote is id as a JSON string.
func quote(id string) string {
	b, _ := json.Marshal(id)
	return string(b)
}

// Paging through the machines, for fleets too large for one answer.
const (
	// DefaultPageSize is how many machines a page holds when the caller
	// does not say.
	DefaultPageSize = 500
	// MaxPageSize bounds one page: a page is one etcd read and one
	// answer held in memory.
	MaxPageSize = 5000
)

var (
	// ErrBadContinue: a continue token this mayu did not hand out.
	ErrBadContinue = errors.New("invalid continue token: pass back the one the previous page gave, unchanged")
	// ErrListExpired: etcd compacted away the revision a paged listing
	// reads at; the listing starts again from the first page.
	ErrListExpired = errors.New("the listing is too old (etcd compacted its revision): list again from the first page")
)

// Page is one page of machines, sorted by id.
type Page struct {
	Machines []*machine.Machine
	Corrupt  []*CorruptError
	// Continue is the token of the next page, "" on the last one.
	Continue string
}

// cursor is what a continue token holds: the last id of the page before,
// and the revision every page of the listing is read at, so that the
// pages together are one consistent listing.
type listCursor struct {
	After string `json:"after"`
	Rev   int64  `json:"rev"`
}

// ListPage returns up to limit machines (0: DefaultPageSize, at most
// MaxPageSize) after the continue token cont ("" for the first page): one
// ranged etcd read, whatever the fleet's size.
func (r *Registry) ListPage(ctx context.Context, limit int, cont string) (*Page, error) {
	if limit <= 0 {
		limit = DefaultPageSize
	}
	limit = min(limit, MaxPageSize)
	var c listCursor
	if cont != "" {
		data, err := base64.RawURLEncoding.DecodeString(cont)
		if err != nil || json.Unmarshal(data, &c) != nil || c.Rev <= 0 || identity.Check(c.After) != nil {
			return nil, ErrBadContinue
		}
	}
	dir := r.keys.Machines()
	from := dir
	if c.After != "" {
		from = r.keys.Machine(c.After) + "\x00"
	}
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(dir)), clientv3.WithLimit(int64(limit))}
	if c.Rev != 0 {
		opts = append(opts, clientv3.WithRev(c.Rev))
	}
	cctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.cli.Get(cctx, from, opts...)
	if err != nil {
		if state.Compacted(err) {
			return nil, ErrListExpired
		}
		if errors.Is(err, rpctypes.ErrFutureRev) {
			return nil, ErrBadContinue // a revision no page handed out
		}
		return nil, state.Unavailable("list machines", err)
	}
	p := &Page{}
	for _, kv := range resp.Kvs {
		m, err := r.decode(string(kv.Key), kv.Value)
		if err != nil {
			p.Corrupt = append(p.Corrupt, err.(*CorruptError))
			continue
		}
		p.Machines = append(p.Machines, m)
	}
	if resp.More && len(resp.Kvs) > 0 {
		rev := c.Rev
		if rev == 0 {
			rev = resp.Header.Revision
		}
		last := strings.TrimPrefix(string(resp.Kvs[len(resp.Kvs)-1].Key), dir)
		data, _ := json.Marshal(listCursor{After: last, Rev: rev})
		p.Continue = base64.RawURLEncoding.EncodeToString(data)
	}
	return p, nil
}
