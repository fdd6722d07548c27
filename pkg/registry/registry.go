// Package registry keeps machines in etcd. Every replica writes here; every
// change that touches several keys (a registration: record, MAC index,
// address, profile slot) is one etcd transaction, and every state change is a
// compare-and-swap on the record's revision, so replicas racing for the same
// machine cannot lose each other's writes.
package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/identity"
	"github.com/mayu-boot/mayu/pkg/machine"
)

// Errors callers turn into answers.
var (
	ErrNotFound = errors.New("machine not found")
	ErrExists   = errors.New("machine already registered")
	// ErrExhausted: the static range has no free address left.
	ErrExhausted = errors.New("static address range exhausted")
	// ErrConflict: too many concurrent writers; the caller may retry.
	ErrConflict = errors.New("too many concurrent changes to the same keys, try again")
	// ErrTooManyMACs: a machine has at most MaxMACs MACs, so that no
	// client can grow a record (and its transactions) without bound.
	ErrTooManyMACs = fmt.Errorf("a machine has at most %d MACs", MaxMACs)
	// ErrUnavailable wraps every error that came from etcd itself.
	ErrUnavailable = errors.New("etcd unavailable")
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

// maxAttempts bounds compare-and-swap retries. Each failed attempt means
// another writer succeeded, so progress is guaranteed; the bound only stops
// a pathological storm.
const maxAttempts = 200

// Registry is the machine store of one replica.
type Registry struct {
	cli     *clientv3.Client
	prefix  string
	cluster config.Cluster
	replica string
	timeout time.Duration
	now     func() time.Time
	metrics *metrics

	secretOnce sync.Mutex
	secret     []byte
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
	r := &Registry{cli: cli, prefix: o.Prefix, cluster: o.Cluster, replica: o.Replica, timeout: o.Timeout, now: o.Now}
	r.metrics = newMetrics(o.Registerer, r)
	return r
}

// Replica is the name recorded in history for changes made here.
func (r *Registry) Replica() string { return r.replica }

func (r *Registry) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.timeout)
}

// etcdError names the store in an error so an operator knows where to look.
func etcdError(op string, err error) error {
	if errors.Is(err, context.Canceled) {
		return err
	}
	return fmt.Errorf("etcd %s: %w (is etcd reachable?)%w", op, err, unavailable{})
}

// unavailable marks an error as ErrUnavailable without changing its text.
type unavailable struct{}

func (unavailable) Error() string        { return "" }
func (unavailable) Is(target error) bool { return target == ErrUnavailable }

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
	resp, err := r.cli.Get(ctx, r.machineKey(id))
	if err != nil {
		return nil, 0, etcdError("read machine", err)
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
	if err := m.Check(strings.TrimPrefix(key, r.prefix+machinesDir)); err != nil {
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
	resp, err := r.cli.Get(cctx, r.macKey(mac))
	cancel()
	if err != nil {
		return nil, etcdError("read MAC index", err)
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
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.cli.Get(ctx, r.prefix+machinesDir, clientv3.WithPrefix())
	if err != nil {
		return nil, nil, etcdError("list machines", err)
	}
	var ms []*machine.Machine
	var bad []*CorruptError
	for _, kv := range resp.Kvs {
		m, err := r.decode(string(kv.Key), kv.Value)
		if err != nil {
			bad = append(bad, err.(*CorruptError))
			continue
		}
		ms = append(ms, m)
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].ID < ms[j].ID })
	return ms, bad, nil
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
	if len(macs) > MaxMACs {
		return nil, false, fmt.Errorf("%w: %d MACs given", ErrTooManyMACs, len(macs))
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		m, created, err = r.tryRegister(ctx, reg)
		if !errors.Is(err, errRetry) {
			if created {
				r.metrics.registrations.WithLabelValues().Inc()
			}
			return m, created, err
		}
		backoff(ctx, attempt)
	}
	return nil, false, ErrConflict
}

var errRetry = errors.New("retry")

func (r *Registry) tryRegister(ctx context.Context, reg Registration) (*machine.Machine, bool, error) {
	if existing, err := r.Get(ctx, reg.ID); err == nil {
		return existing, false, nil
	} else if !errors.Is(err, ErrNotFound) {
		return nil, false, err
	}
	taken, err := r.takenAddresses(ctx)
	if err != nil {
		return nil, false, err
	}
	addr, err := r.freeAddress(taken)
	if err != nil {
		return nil, false, err
	}
	profile, slot, err := r.freeProfileSlot(ctx)
	if err != nil {
		return nil, false, err
	}
	machineID, err := randomHex(16)
	if err != nil {
		return nil, false, err
	}

	now := r.now()
	m := machine.New(reg.ID, now, r.replica)
	m.Serial, m.UUID, m.Arch = reg.Serial, reg.UUID, reg.Arch
	m.MACs = append([]string{}, reg.MACs...)
	m.MachineID = machineID
	m.Hostname = machineID[:16]
	m.InternalAddr = addr.String()
	m.Profile, m.ProfileSlot = profile.Name, slot
	for k, v := range profile.Tags {
		m.Metadata[k] = v
	}
	m.Preregistered = reg.Preregistered
	if reg.Preregistered {
		m.History[0].Reason = "added by an operator"
	}
	data, err := json.Marshal(m)
	if err != nil {
		return nil, false, err
	}
	ownerJSON, _ := json.Marshal(owner{Machine: reg.ID})

	mk, ak := r.machineKey(reg.ID), r.addressKey(m.InternalAddr)
	conds := []clientv3.Cmp{
		clientv3.Compare(clientv3.CreateRevision(mk), "=", 0),
		clientv3.Compare(clientv3.CreateRevision(ak), "=", 0),
	}
	ops := []clientv3.Op{clientv3.OpPut(mk, string(data)), clientv3.OpPut(ak, string(ownerJSON))}
	for _, mac := range m.MACs {
		cond, err := r.claimMAC(ctx, mac, reg.ID)
		if err != nil {
			return nil, false, err
		}
		conds = append(conds, cond)
		ops = append(ops, clientv3.OpPut(r.macKey(mac), string(ownerJSON)))
	}
	if slot >= 0 {
		pk := r.profileKey(profile.Name, slot)
		conds = append(conds, clientv3.Compare(clientv3.CreateRevision(pk), "=", 0))
		ops = append(ops, clientv3.OpPut(pk, string(ownerJSON)))
	}
	cctx, cancel := r.ctx(ctx)
	resp, err := r.cli.Txn(cctx).If(conds...).Then(ops...).Commit()
	cancel()
	if err != nil {
		return nil, false, etcdError("register machine", err)
	}
	if !resp.Succeeded {
		// Someone took the id, the address, the slot or a MAC; the next
		// attempt sees which (a MAC of a live machine is an error then).
		return nil, false, errRetry
	}
	return m, true, nil
}

// claimMAC returns the condition under which a registration may point
// mac at id: the index key is absent, or it is stale (unreadable, or
// pointing at a machine that no longer exists or at id itself), in which
// case it is overwritten if unchanged meanwhile. A MAC of another existing
// machine is refused.
func (r *Registry) claimMAC(ctx context.Context, mac, id string) (clientv3.Cmp, error) {
	key := r.macKey(mac)
	cctx, cancel := r.ctx(ctx)
	resp, err := r.cli.Get(cctx, key)
	cancel()
	if err != nil {
		return clientv3.Cmp{}, etcdError("read MAC index", err)
	}
	if len(resp.Kvs) == 0 {
		return clientv3.Compare(clientv3.CreateRevision(key), "=", 0), nil
	}
	kv := resp.Kvs[0]
	var o owner
	if json.Unmarshal(kv.Value, &o) == nil && o.Machine != "" && o.Machine != id {
		if _, err := r.Get(ctx, o.Machine); !errors.Is(err, ErrNotFound) {
			if err != nil && errors.Is(err, ErrUnavailable) {
				return clientv3.Cmp{}, err
			}
			return clientv3.Cmp{}, &MACTakenError{MAC: mac, Owner: o.Machine}
		}
	}
	return clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision), nil
}

func (r *Registry) macOwner(ctx context.Context, mac string) (string, error) {
	cctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.cli.Get(cctx, r.macKey(mac))
	if err != nil || len(resp.Kvs) == 0 {
		return "", err
	}
	var o owner
	err = json.Unmarshal(resp.Kvs[0].Value, &o)
	return o.Machine, err
}

// takenAddresses reads the address index (keys only).
func (r *Registry) takenAddresses(ctx context.Context) (map[netip.Addr]bool, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	dir := r.prefix + addressesDir
	resp, err := r.cli.Get(ctx, dir, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return nil, etcdError("read address index", err)
	}
	taken := make(map[netip.Addr]bool, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		if a, err := netip.ParseAddr(strings.TrimPrefix(string(kv.Key), dir)); err == nil {
			taken[a] = true
		}
	}
	return taken, nil
}

// freeAddress is the lowest free address of the static range, as in the
// original mayu, but never one past its end.
func (r *Registry) freeAddress(taken map[netip.Addr]bool) (netip.Addr, error) {
	rg := r.cluster.Static.Range
	for a := rg.Start; a.IsValid() && a.Compare(rg.End) <= 0; a = a.Next() {
		if !taken[a] {
			return a, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("%w: all %s-%s are assigned (widen cluster.static.range or delete machines)", ErrExhausted, rg.Start, rg.End)
}

// freeProfileSlot picks the first profile, in config order, with a free
// slot below its quantity; else the default profile (slot -1). Slots make
// quantities exact across replicas: two registrations cannot both create
// the same slot key.
func (r *Registry) freeProfileSlot(ctx context.Context) (config.Profile, int, error) {
	if len(r.cluster.Profiles) == 0 {
		return config.Profile{Name: "default"}, -1, nil
	}
	cctx, cancel := r.ctx(ctx)
	defer cancel()
	dir := r.prefix + profilesDir
	resp, err := r.cli.Get(cctx, dir, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return config.Profile{}, 0, etcdError("read profile slots", err)
	}
	held := map[string]map[int]bool{}
	for _, kv := range resp.Kvs {
		name, slot, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), dir), "/")
		n, err := strconv.Atoi(slot)
		if !ok || err != nil {
			continue
		}
		if held[name] == nil {
			held[name] = map[int]bool{}
		}
		held[name][n] = true
	}
	for _, p := range r.cluster.Profiles {
		for s := 0; s < p.Quantity; s++ {
			if !held[p.Name][s] {
				return p, s, nil
			}
		}
	}
	return config.Profile{Name: "default"}, -1, nil
}

// Update applies change to the machine's record as one compare-and-swap,
// retrying if another replica changed it meanwhile. change returning
// machine.ErrUnchanged writes nothing and returns the record as it is.
func (r *Registry) Update(ctx context.Context, id string, change func(*machine.Machine) error) (*machine.Machine, error) {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		m, rev, err := r.get(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := change(m); errors.Is(err, machine.ErrUnchanged) {
			return m, nil
		} else if err != nil {
			return nil, err
		}
		data, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		key := r.machineKey(id)
		cctx, cancel := r.ctx(ctx)
		resp, err := r.cli.Txn(cctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
			Then(clientv3.OpPut(key, string(data))).Commit()
		cancel()
		if err != nil {
			return nil, etcdError("update machine", err)
		}
		if resp.Succeeded {
			return m, nil
		}
		backoff(ctx, attempt)
	}
	return nil, ErrConflict
}

// AddMAC records another MAC of a machine, record and index in one
// transaction.
func (r *Registry) AddMAC(ctx context.Context, id, mac string) (*machine.Machine, error) {
	mac, err := identity.NormalizeMAC(mac)
	if err != nil {
		return nil, err
	}
	for attempt := 0; attempt < maxAttempts; attempt++ {
		m, rev, err := r.get(ctx, id)
		if err != nil {
			return nil, err
		}
		if m.HasMAC(mac) {
			return m, nil
		}
		if len(m.MACs) >= MaxMACs {
			return nil, fmt.Errorf("%w: machine %s already has %d", ErrTooManyMACs, id, len(m.MACs))
		}
		m.MACs = append(m.MACs, mac)
		data, _ := json.Marshal(m)
		ownerJSON, _ := json.Marshal(owner{Machine: id})
		key, mk := r.machineKey(id), r.macKey(mac)
		cctx, cancel := r.ctx(ctx)
		resp, err := r.cli.Txn(cctx).
			If(clientv3.Compare(clientv3.ModRevision(key), "=", rev), clientv3.Compare(clientv3.CreateRevision(mk), "=", 0)).
			Then(clientv3.OpPut(key, string(data)), clientv3.OpPut(mk, string(ownerJSON))).Commit()
		cancel()
		if err != nil {
			return nil, etcdError("add MAC", err)
		}
		if resp.Succeeded {
			return m, nil
		}
		o, err := r.macOwner(ctx, mac)
		if err == nil && o != "" && o != id {
			return nil, &MACTakenError{MAC: mac, Owner: o}
		}
		if err == nil && o == id {
			// The index already points here (a record restored by hand,
			// say): only the record lacks the MAC.
			return r.Update(ctx, id, func(m *machine.Machine) error {
				if m.HasMAC(mac) {
					return machine.ErrUnchanged
				}
				m.MACs = append(m.MACs, mac)
				return nil
			})
		}
		backoff(ctx, attempt)
	}
	return nil, ErrConflict
}

// Delete removes a machine with its MAC index entries, and frees its
// address and profile slot, in one transaction.
func (r *Registry) Delete(ctx context.Context, id string) error {
	for attempt := 0; attempt < maxAttempts; attempt++ {
		m, rev, err := r.get(ctx, id)
		var corrupt *CorruptError
		if errors.As(err, &corrupt) {
			return r.deleteCorrupt(ctx, id)
		}
		if err != nil {
			return err
		}
		key := r.machineKey(id)
		ops := []clientv3.Op{clientv3.OpDelete(key)}
		for _, mac := range m.MACs {
			ops = append(ops, r.deleteIfOwned(r.macKey(mac), id)...)
		}
		ops = append(ops, r.deleteIfOwned(r.addressKey(m.InternalAddr), id)...)
		if m.ProfileSlot >= 0 {
			ops = append(ops, r.deleteIfOwned(r.profileKey(m.Profile, m.ProfileSlot), id)...)
		}
		cctx, cancel := r.ctx(ctx)
		resp, err := r.cli.Txn(cctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", rev)).Then(ops...).Commit()
		cancel()
		if err != nil {
			return etcdError("delete machine", err)
		}
		if resp.Succeeded {
			return nil
		}
		backoff(ctx, attempt)
	}
	return ErrConflict
}

// deleteIfOwned deletes an index key only if it still points at id, so a
// delete never frees what another machine holds.
func (r *Registry) deleteIfOwned(key, id string) []clientv3.Op {
	ownerJSON, _ := json.Marshal(owner{Machine: id})
	return []clientv3.Op{clientv3.OpTxn(
		[]clientv3.Cmp{clientv3.Compare(clientv3.Value(key), "=", string(ownerJSON))},
		[]clientv3.Op{clientv3.OpDelete(key)}, nil)}
}

// deleteCorrupt removes an unreadable record and every index key that
// points at it.
func (r *Registry) deleteCorrupt(ctx context.Context, id string) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	ops := []clientv3.Op{clientv3.OpDelete(r.machineKey(id))}
	for _, dir := range []string{macsDir, addressesDir, profilesDir} {
		resp, err := r.cli.Get(ctx, r.prefix+dir, clientv3.WithPrefix())
		if err != nil {
			return etcdError("read index", err)
		}
		for _, kv := range resp.Kvs {
			var o owner
			if json.Unmarshal(kv.Value, &o) == nil && o.Machine == id {
				ops = append(ops, r.deleteIfOwned(string(kv.Key), id)...)
			}
		}
	}
	if _, err := r.cli.Txn(ctx).Then(ops...).Commit(); err != nil {
		return etcdError("delete machine", err)
	}
	return nil
}

// Secret returns the cluster secret that node tokens are made with,
// creating it on first use. Whichever replica creates it first wins.
func (r *Registry) Secret(ctx context.Context) ([]byte, error) {
	r.secretOnce.Lock()
	defer r.secretOnce.Unlock()
	if r.secret != nil {
		return r.secret, nil
	}
	fresh, err := randomHex(32)
	if err != nil {
		return nil, err
	}
	type secretValue struct {
		Secret string `json:"secret"`
	}
	data, _ := json.Marshal(secretValue{Secret: fresh})
	key := r.prefix + secretKey
	cctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.cli.Txn(cctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(data))).
		Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return nil, etcdError("read cluster secret", err)
	}
	value := secretValue{Secret: fresh}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 || json.Unmarshal(kvs[0].Value, &value) != nil || len(value.Secret) < 32 {
			return nil, &CorruptError{Key: key, Err: errors.New("no usable secret")}
		}
	}
	r.secret = []byte(value.Secret)
	return r.secret, nil
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

// backoff spreads out retries of writers that collided.
func backoff(ctx context.Context, attempt int) {
	d := time.Duration(1+attempt%10) * time.Millisecond
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
