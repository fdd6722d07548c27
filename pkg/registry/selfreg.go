package registry

import (
	"context"
	"errors"
	"net/netip"
	"time"

	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/machine"
)

// What keeps random serials under registration: open from eating the
// static range: a rate limit on registration on first contact (in
// Register), and the expiry of machines that registered but never
// started an install.

// ErrRateLimited: more machines registered on first contact than
// cluster.self_registration allows this replica; the machine asks again
// later.
var ErrRateLimited = errors.New("too many new machines are registering at once (cluster.self_registration.per_second and burst); this machine asks again shortly")

// ErrTooManyUnfinished: cluster.self_registration.max_unfinished machines
// registered on first contact are not installed yet; the machine asks
// again later (expiry makes room).
var ErrTooManyUnfinished = errors.New("too many machines registered on first contact are not installed yet (cluster.self_registration.max_unfinished); this machine asks again later")

// ExpireRegistrations deletes the machines registered on first contact
// that were never installed and have sat in configured or failed longer
// than after (machine.RegistrationExpired), freeing their static address,
// profile slot and MACs: random serials cannot keep the static range, not
// even by fetching their first stage and reporting a failure. Machines
// added by an operator, ever installed, or reinstalled by an operator are
// never expired. Any replica may run it:
// each deletion is one transaction that checks the rule again on what it
// reads, so concurrent sweeps delete each machine once.
func (r *Registry) ExpireRegistrations(ctx context.Context, after time.Duration) ([]string, error) {
	ms, _, err := r.List(ctx)
	if err != nil {
		return nil, err
	}
	var expired []string
	for _, m := range ms {
		if !m.RegistrationExpired(after, r.now()) {
			continue
		}
		deleted := false
		err := r.stm(ctx, "expire registration", func(stm concurrency.STM) error {
			deleted = false
			cur, err := r.stmGet(stm, m.ID)
			if err != nil || !cur.RegistrationExpired(after, r.now()) {
				return err
			}
			r.stmDelete(stm, cur)
			deleted = true
			return nil
		})
		var corrupt *CorruptError
		if err != nil && !errors.Is(err, ErrNotFound) && !errors.As(err, &corrupt) {
			return expired, err
		}
		if err == nil && deleted {
			r.metrics.expired.WithLabelValues().Inc()
			expired = append(expired, m.ID)
		}
	}
	return expired, nil
}

// stmDelete removes m's record, and its MAC index entries, address and
// profile slot while they still point at it, inside an STM (as Delete
// does).
func (r *Registry) stmDelete(stm concurrency.STM, m *machine.Machine) {
	stm.Del(r.keys.Machine(m.ID))
	addrKey, slotKey := r.keys.Address(m.InternalAddr), r.slotKey(m)
	keys := []string{addrKey, slotKey}
	for _, mac := range m.MACs {
		keys = append(keys, r.keys.MAC(mac))
	}
	own := map[string]bool{}
	for _, k := range keys {
		if k != "" && stm.Get(k) == ownerValue(m.ID) {
			own[k] = true
			stm.Del(k)
		}
	}
	// What it held goes back to the allocator's free set, if it was
	// still its own.
	if a, err := netip.ParseAddr(m.InternalAddr); err == nil && a.Is4() && own[addrKey] {
		r.giveBack(stm, r.addressSpace(), addrPos(a))
	}
	if slotKey != "" && own[slotKey] {
		if p, ok := r.profile(m.Profile); ok {
			r.giveBack(stm, r.slotSpace(p.Name, p.Quantity), uint64(m.ProfileSlot))
		}
	}
}

// profile is the configured profile called name.
func (r *Registry) profile(name string) (config.Profile, bool) {
	for _, p := range r.cluster.Profiles {
		if p.Name == name {
			return p, true
		}
	}
	return config.Profile{}, false
}

// allocSpaces are the static addresses, then each profile's slots in
// config order.
func (r *Registry) allocSpaces() []*space {
	spaces := []*space{r.addressSpace()}
	for _, p := range r.cluster.Profiles {
		spaces = append(spaces, r.slotSpace(p.Name, p.Quantity))
	}
	return spaces
}
