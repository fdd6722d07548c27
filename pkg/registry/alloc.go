package registry

// Allocation of static addresses and profile slots in O(1) of the fleet.
//
// The index keys (addresses/<ip>, profiles/<name>/<slot>) stay the truth:
// a registration takes a position only when its STM reads the index key
// absent, and etcd refuses the commit if another took it meanwhile. What
// this file adds are hints that say where to look, so that a registration
// no longer reads the whole index:
//
//   - a cursor per space (alloc/addresses/next, alloc/profiles/<name>/next):
//     every position at or above it is free (as far as this mayu knows);
//   - a free set below it (alloc/.../free/<pos>), one key per position a
//     delete gave back, named so that etcd's key order is position order:
//     the lowest free position is one ranged read with limit 1.
//
// The lowest free position is then min(lowest free key, cursor): the same
// choice as the lowest free address of the original mayu, with a few
// point reads. A hint that lies (a free key whose position is held, a
// cursor on a held position: left by a replica of an older release during
// a rolling upgrade) costs a probe and is corrected in the same
// transaction; a free position the hints do not know (freed by an older
// release) is found again by a rescan of the index once the hints say the
// space is full. The cursor is built from the index (a rescan) when it is
// missing (the first registration after the upgrade to this release: the
// existing allocations are kept) or when the range start in it is not the
// configured one.

import (
	"context"
	"encoding/json"
	"net/netip"
	"strconv"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/state"
)

// space is one allocation space: the static addresses, or one profile's
// slots. Positions are uint64: an IPv4 address as a number, or a slot.
type space struct {
	name     string // in errors and logs
	kind     string // the metric label: addresses, profile_slots
	cursor   string // the cursor key
	freeDir  string // the free keys' directory
	freeKey  func(pos uint64) string
	holdKey  func(pos uint64) string // the index key that says who holds pos
	holdDir  string                  // the directory of the index keys
	parse    func(rest string) (uint64, bool)
	show     func(pos uint64) string // pos as written in values
	lo, hi   uint64                  // the positions to allocate, inclusive
	disabled bool                    // nothing to allocate (quantity 0)
}

// cursorValue is the value of a cursor key.
type cursorValue struct {
	Next  string `json:"next"`  // the lowest position never handed out
	Start string `json:"start"` // the first position of the space it was built for
}

// freeValue is the value of a free key.
type freeValue struct {
	Free string `json:"free"`
}

func addrPos(a netip.Addr) uint64 {
	b := a.As4()
	return uint64(b[0])<<24 | uint64(b[1])<<16 | uint64(b[2])<<8 | uint64(b[3])
}

func posAddr(p uint64) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(p >> 24), byte(p >> 16), byte(p >> 8), byte(p)})
}

// addressSpace is the static range.
func (r *Registry) addressSpace() *space {
	rg := r.cluster.Static.Range
	s := &space{
		name: "static addresses", kind: "addresses", cursor: r.keys.AddressCursor(), freeDir: r.keys.FreeAddresses(),
		freeKey: func(p uint64) string { return r.keys.FreeAddress(posAddr(p)) },
		holdKey: func(p uint64) string { return r.keys.Address(posAddr(p).String()) },
		holdDir: r.keys.Addresses(),
		parse: func(rest string) (uint64, bool) {
			a, err := netip.ParseAddr(rest)
			if err != nil || !a.Is4() {
				return 0, false
			}
			return addrPos(a), true
		},
		show: func(p uint64) string { return posAddr(p).String() },
	}
	if !rg.Start.Is4() || !rg.End.Is4() || rg.End.Less(rg.Start) {
		s.disabled = true
		return s
	}
	s.lo, s.hi = addrPos(rg.Start), addrPos(rg.End)
	return s
}

// slotSpace is the slots of one profile, 0 … quantity-1.
func (r *Registry) slotSpace(name string, quantity int) *space {
	return &space{
		name: "profile " + name + " slots", kind: "profile_slots", cursor: r.keys.SlotCursor(name), freeDir: r.keys.FreeSlots(name),
		freeKey: func(p uint64) string { return r.keys.FreeSlot(name, int(p)) },
		holdKey: func(p uint64) string { return r.keys.ProfileSlot(name, int(p)) },
		holdDir: r.keys.Profiles() + name + "/",
		parse: func(rest string) (uint64, bool) {
			n, err := strconv.ParseUint(rest, 10, 32)
			return n, err == nil && !strings.Contains(rest, "/")
		},
		show:     func(p uint64) string { return strconv.FormatUint(p, 10) },
		lo:       0,
		hi:       uint64(max(quantity, 1) - 1),
		disabled: quantity <= 0,
	}
}

// rebuildError asks for a rescan of a space before the registration runs
// again: its cursor is missing or was built for another range, or its
// hints say it is full.
type rebuildError struct {
	s    *space
	full bool
}

func (e *rebuildError) Error() string { return "rebuild the allocator of " + e.s.name }

// lowestFree reads the lowest free key of each space in one round trip:
// free[i] is that position of spaces[i], or -1 if it has none in range.
// A plain read: the STM checks the key again.
// countKeys counts the keys under dir (an index: one key per held
// position).
func (r *Registry) countKeys(ctx context.Context, dir string) (int64, error) {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.cli.Get(ctx, dir, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, state.Unavailable("count "+dir, err)
	}
	return resp.Count, nil
}

func (r *Registry) lowestFree(ctx context.Context, spaces []*space) ([]int64, error) {
	ops := make([]clientv3.Op, 0, len(spaces))
	for _, s := range spaces {
		ops = append(ops, clientv3.OpGet(s.freeKey(s.lo), clientv3.WithRange(s.freeKey(s.hi)+"\x00"),
			clientv3.WithLimit(1), clientv3.WithKeysOnly()))
	}
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	resp, err := r.cli.Txn(ctx).Then(ops...).Commit()
	if err != nil {
		return nil, state.Unavailable("read free addresses and slots", err)
	}
	free := make([]int64, len(spaces))
	for i, rr := range resp.Responses {
		free[i] = -1
		kvs := rr.GetResponseRange().Kvs
		if len(kvs) == 0 {
			continue
		}
		name := strings.TrimPrefix(string(kvs[0].Key), spaces[i].freeDir)
		if p, ok := parseFreeName(spaces[i], name); ok {
			free[i] = int64(p)
		}
	}
	return free, nil
}

// parseFreeName decodes a free key's name: a padded address or a padded
// slot number.
func parseFreeName(s *space, name string) (uint64, bool) {
	var p uint64
	if strings.Contains(name, ".") {
		a, err := netip.ParseAddr(unpad(name))
		if err != nil || !a.Is4() {
			return 0, false
		}
		p = addrPos(a)
	} else {
		n, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			return 0, false
		}
		p = n
	}
	if s.freeKey(p) != s.freeDir+name || p < s.lo || p > s.hi {
		return 0, false
	}
	return p, true
}

// unpad turns 010.003.000.007 into 10.3.0.7.
func unpad(name string) string {
	parts := strings.Split(name, ".")
	for i, part := range parts {
		if t := strings.TrimLeft(part, "0"); t != "" {
			parts[i] = t
		} else {
			parts[i] = "0"
		}
	}
	return strings.Join(parts, ".")
}

// take picks the lowest free position of s inside an STM, with free the
// lowest free key read before (-1: none), and writes the hints that follow
// from taking it: the free key goes, or the cursor moves past it. ok is
// false when the hints say the space is full. The position's index key is
// read in the STM, so the commit fails if another took it meanwhile.
func (r *Registry) take(stm concurrency.STM, s *space, free int64) (pos uint64, ok bool, err error) {
	if s.disabled {
		return 0, false, nil
	}
	if stm.Rev(s.cursor) == 0 {
		return 0, false, &rebuildError{s: s}
	}
	var c cursorValue
	if json.Unmarshal([]byte(stm.Get(s.cursor)), &c) != nil || c.Start != s.show(s.lo) {
		return 0, false, &rebuildError{s: s}
	}
	next, err := s.parseShown(c.Next)
	if err != nil {
		return 0, false, &rebuildError{s: s}
	}
	next = max(next, s.lo)
	if free >= 0 {
		// The free key must still be there at the STM's revision (else
		// another registration took it since the plain read: run again).
		if stm.Rev(s.freeKey(uint64(free))) == 0 {
			return 0, false, errRetry
		}
		if uint64(free) < next {
			if stm.Rev(s.holdKey(uint64(free))) == 0 {
				stm.Del(s.freeKey(uint64(free)))
				return uint64(free), true, nil
			}
			// A stale hint: the position is held. Drop it, and take the
			// cursor's this time.
			stm.Del(s.freeKey(uint64(free)))
		}
	}
	// From the cursor up; a held position there is a stale hint (an older
	// replica took it), so probe on: each probe is one point read.
	for p, probes := next, 0; p <= s.hi; p, probes = p+1, probes+1 {
		if probes == maxProbes {
			return 0, false, &rebuildError{s: s}
		}
		if stm.Rev(s.holdKey(p)) != 0 {
			continue
		}
		stm.Put(s.cursor, s.cursorValue(p+1))
		if free >= 0 && uint64(free) == p {
			stm.Del(s.freeKey(p))
		}
		return p, true, nil
	}
	return 0, false, nil
}

func (s *space) cursorValue(next uint64) string {
	data, _ := json.Marshal(cursorValue{Next: s.show(next), Start: s.show(s.lo)})
	return string(data)
}

func (s *space) freeValue(p uint64) string {
	data, _ := json.Marshal(freeValue{Free: s.show(p)})
	return string(data)
}

// parseShown is the inverse of show.
func (s *space) parseShown(v string) (uint64, error) {
	if a, err := netip.ParseAddr(v); err == nil && a.Is4() {
		return addrPos(a), nil
	}
	return strconv.ParseUint(v, 10, 64)
}

// free gives a position back inside an STM (a delete): a free key, written
// blind so that deletes do not collide with registrations on the cursor.
// A position outside the space is not remembered.
func (r *Registry) giveBack(stm concurrency.STM, s *space, pos uint64) {
	if s.disabled || pos < s.lo || pos > s.hi {
		return
	}
	stm.Put(s.freeKey(pos), s.freeValue(pos))
}

// maxProbes bounds the held positions a registration steps over above
// the cursor before it rebuilds the hints instead.
const maxProbes = 32

// maxRebuildFree bounds the free keys one rescan writes: the lowest holes
// come first, and a rescan when the hints say full finds the rest.
const maxRebuildFree = 4096

// rebuild builds s's hints from its index: the cursor just above the
// highest held position, a free key for each hole below it. It reads the
// whole index (O(fleet)), and runs only when the cursor is missing or was
// built for another range, or the hints say the space is full.
func (r *Registry) rebuild(ctx context.Context, s *space) error {
	ctx, cancel := r.ctx(ctx)
	defer cancel()
	// The cursor first: a registration that moves it after this read
	// makes the write below fail, so a cursor computed from an index read
	// older than that registration never replaces the one it wrote.
	cur, err := r.cli.Get(ctx, s.cursor)
	if err != nil {
		return state.Unavailable("read the cursor of "+s.name, err)
	}
	resp, err := r.cli.Get(ctx, s.holdDir, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return state.Unavailable("read the index of "+s.name, err)
	}
	held := make(map[uint64]bool, len(resp.Kvs))
	next := s.lo
	for _, kv := range resp.Kvs {
		p, ok := s.parse(strings.TrimPrefix(string(kv.Key), s.holdDir))
		if !ok || p < s.lo || p > s.hi {
			continue
		}
		held[p] = true
		if p >= next {
			next = p + 1
		}
	}
	var ops []clientv3.Op
	flush := func() error {
		if len(ops) == 0 {
			return nil
		}
		_, err := r.cli.Txn(ctx).Then(ops...).Commit()
		ops = ops[:0]
		if err != nil {
			return state.Unavailable("write the free keys of "+s.name, err)
		}
		return nil
	}
	written := 0
	for p := s.lo; p < next && written < maxRebuildFree; p++ {
		if held[p] {
			continue
		}
		ops = append(ops, clientv3.OpPut(s.freeKey(p), s.freeValue(p)))
		written++
		if len(ops) == 64 { // under etcd's --max-txn-ops (128)
			if err := flush(); err != nil {
				return err
			}
		}
	}
	if err := flush(); err != nil {
		return err
	}
	// The cursor last, on what was read: a replica that rebuilt or
	// allocated meanwhile wins, and this one's free keys are hints that
	// the STM checks anyway.
	rev := int64(0)
	if len(cur.Kvs) > 0 {
		rev = cur.Kvs[0].ModRevision
	}
	_, err = r.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(s.cursor), "=", rev)).
		Then(clientv3.OpPut(s.cursor, s.cursorValue(next))).Commit()
	if err != nil {
		return state.Unavailable("write the cursor of "+s.name, err)
	}
	r.metrics.allocRebuilds.WithLabelValues(s.kind).Inc()
	return nil
}

// FillOps are the etcd writes a registration of reg at addr, with slot of
// profile (-1 and the default profile: none), would make (record, MAC
// index, address, profile slot), without its reads and checks: for tools
// that fill etcd with a fleet (internal/fleet). Hints are not written:
// RebuildAllocators builds them afterwards.
func (r *Registry) FillOps(reg Registration, addr netip.Addr, profile config.Profile, slot int) (*machine.Machine, []clientv3.Op, error) {
	m, err := r.newMachine(reg, addr, profile, slot)
	if err != nil {
		return nil, nil, err
	}
	data, err := json.Marshal(m)
	if err != nil {
		return nil, nil, err
	}
	ops := []clientv3.Op{clientv3.OpPut(r.keys.Machine(m.ID), string(data)), clientv3.OpPut(r.keys.Address(m.InternalAddr), ownerValue(m.ID))}
	for _, mac := range m.MACs {
		ops = append(ops, clientv3.OpPut(r.keys.MAC(mac), ownerValue(m.ID)))
	}
	if k := r.slotKey(m); k != "" {
		ops = append(ops, clientv3.OpPut(k, ownerValue(m.ID)))
	}
	return m, ops, nil
}

// RebuildAllocators builds the hints of every space from the index, as
// the first registration after an upgrade does.
func (r *Registry) RebuildAllocators(ctx context.Context) error {
	for _, s := range r.allocSpaces() {
		if s.disabled {
			continue
		}
		if err := r.rebuild(ctx, s); err != nil {
			return err
		}
	}
	return nil
}
