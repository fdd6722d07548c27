// Package audit is the admin API's audit trail in etcd: every change made
// through the admin API, with who made it, what it was, when, from where
// and its result. It owns the key space audit/ (pkg/state). Entries are
// never tied to a machine's keys, so deleting a machine keeps them; they go
// only by retention: a count and an age (node.admin.audit).
package audit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/hostile"
	"github.com/mayu-boot/mayu/pkg/state"
)

// Bounds of the fields of an entry, in bytes of their JSON encoding, so
// that one entry stays under 2 KiB whatever its fields hold: 1360 bytes of
// fields and about 350 of names, id and time (docs/etcd.md counts 4 KiB an
// entry, with etcd's own overhead).
const (
	maxWho     = 256
	maxPath    = 256
	maxSummary = 400
	maxShort   = 64 // remote, replica, method, route, machine, role, via
)

// timeFormat makes keys that sort by time: fixed width, UTC.
const timeFormat = "20060102T150405.000000000Z"

// pruneEvery is how many entries a replica records between two prunes, on
// top of the prune each minute: a burst of changes cannot outgrow the
// retention by more than this much per replica.
const pruneEvery = 64

// DefaultLimit is how many entries List returns when asked for none.
const DefaultLimit = 100

// Options configure a Store.
type Options struct {
	Prefix  string        // node.etcd.prefix
	Replica string        // this replica's name, recorded in each entry
	Timeout time.Duration // of one etcd request; default 5s
	// MaxEntries and MaxAge are the retention (node.admin.audit).
	MaxEntries int
	MaxAge     time.Duration
	Log        *slog.Logger
	// Registerer is where the metrics go (nil: nowhere).
	Registerer prometheus.Registerer
}

// Store reads and writes the audit trail.
type Store struct {
	cli     *clientv3.Client
	keys    state.Keys
	o       Options
	metrics *metrics
	log     *slog.Logger
	now     func() time.Time

	recorded atomic.Int64 // entries begun since the last prune
	pruning  atomic.Bool
}

// New returns the store of the audit trail under o.Prefix.
func New(cli *clientv3.Client, o Options) *Store {
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{cli: cli, keys: state.Keys{Prefix: o.Prefix}, o: o, metrics: newMetrics(o.Registerer), log: log, now: time.Now}
}

// Begin records that a change is about to be made and returns the entry
// with its ID and Time set; Status should be 0. The admin API makes no
// change whose Begin failed: a change without its record is what an audit
// trail must never have.
func (s *Store) Begin(ctx context.Context, e api.AuditEntry) (api.AuditEntry, error) {
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return e, err
	}
	e.Time = s.now().UTC()
	e.ID = e.Time.Format(timeFormat) + "-" + hex.EncodeToString(rnd[:])
	if e.Replica == "" {
		e.Replica = s.o.Replica
	}
	e = bound(e)
	key := s.keys.AuditEntry(e.ID)
	data, err := json.Marshal(e)
	if err != nil {
		return e, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
	defer cancel()
	// Created only if new: a clash of time and 32 random bits never
	// overwrites another entry.
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(data))).Commit()
	switch {
	case err != nil:
		err = state.Unavailable("audit write", err)
	case !resp.Succeeded:
		err = fmt.Errorf("audit entry %s exists already", e.ID)
	}
	if err != nil {
		s.metrics.writeFailures.WithLabelValues("begin").Inc()
		return e, err
	}
	if s.recorded.Add(1) >= pruneEvery {
		s.pruneAsync()
	}
	return e, nil
}

// Finish records the result of the change Begin recorded: e as Begin
// returned it, with Status set. A failure leaves the entry with status 0,
// "result not recorded"; the change itself has happened by then.
func (s *Store) Finish(ctx context.Context, e api.AuditEntry) error {
	key := s.keys.AuditEntry(e.ID)
	data, err := json.Marshal(bound(e))
	if err != nil {
		return err
	}
	// The answer has been written by now; a client that went away must
	// not keep its result out of the trail.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.o.Timeout)
	defer cancel()
	// Only over the entry Begin wrote: one pruned meanwhile stays gone.
	_, err = s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).
		Then(clientv3.OpPut(key, string(data))).Commit()
	if err != nil {
		s.metrics.writeFailures.WithLabelValues("finish").Inc()
		return state.Unavailable("audit write", err)
	}
	return nil
}

// List returns the newest entries first, at most limit (DefaultLimit if 0),
// only those naming machine when it is not empty. It reads pages from the
// newest backwards and stops as soon as it has limit entries.
func (s *Store) List(ctx context.Context, machine string, limit int) ([]api.AuditEntry, error) {
	if limit <= 0 {
		limit = DefaultLimit
	}
	ctx, cancel := context.WithTimeout(ctx, 4*s.o.Timeout)
	defer cancel()
	out := []api.AuditEntry{}
	end := clientv3.GetPrefixRangeEnd(s.keys.Audit())
	page := int64(min(max(limit, 50), 500))
	for {
		resp, err := s.cli.Get(ctx, s.keys.Audit(), clientv3.WithRange(end), clientv3.WithLimit(page),
			clientv3.WithSort(clientv3.SortByKey, clientv3.SortDescend))
		if err != nil {
			return nil, state.Unavailable("audit read", err)
		}
		for _, kv := range resp.Kvs {
			var e api.AuditEntry
			if err := json.Unmarshal(kv.Value, &e); err != nil {
				// Shown rather than hidden: someone wrote this key by hand.
				e = api.AuditEntry{ID: string(kv.Key[len(s.keys.Audit()):]), Summary: "unreadable entry: " + hostile.Clip(err.Error(), 200)}
			}
			if machine != "" && e.Machine != machine {
				continue
			}
			out = append(out, e)
			if len(out) == limit {
				return out, nil
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, nil
		}
		end = string(resp.Kvs[len(resp.Kvs)-1].Key)
	}
}

// Run prunes the trail now and then once a minute until ctx ends.
func (s *Store) Run(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		if _, err := s.Prune(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("pruning the audit trail failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (s *Store) pruneAsync() {
	if !s.pruning.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer s.pruning.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 4*s.o.Timeout)
		defer cancel()
		if _, err := s.Prune(ctx); err != nil {
			s.log.Warn("pruning the audit trail failed", "err", err)
		}
	}()
}

// Prune deletes the entries older than MaxAge, then the oldest beyond
// MaxEntries, and returns how many went. It never reads the entries
// themselves: keys sort by time, so the old ones are one key range, and
// the count is a count-only read.
func (s *Store) Prune(ctx context.Context) (int, error) {
	s.recorded.Store(0)
	dir := s.keys.Audit()
	var pruned int64
	var errs []error
	if s.o.MaxAge > 0 {
		cutoff := dir + s.now().UTC().Add(-s.o.MaxAge).Format(timeFormat)
		ctx, cancel := context.WithTimeout(ctx, s.o.Timeout)
		resp, err := s.cli.Delete(ctx, dir, clientv3.WithRange(cutoff))
		cancel()
		if err != nil {
			errs = append(errs, state.Unavailable("audit prune", err))
		} else {
			pruned += resp.Deleted
			s.metrics.pruned.WithLabelValues("age").Add(float64(resp.Deleted))
		}
	}
	if s.o.MaxEntries > 0 {
		n, err := s.pruneCount(ctx, dir)
		if err != nil {
			errs = append(errs, state.Unavailable("audit prune", err))
		}
		pruned += n
		s.metrics.pruned.WithLabelValues("count").Add(float64(n))
	}
	return int(pruned), errors.Join(errs...)
}

// pruneCount deletes the oldest entries beyond MaxEntries.
func (s *Store) pruneCount(ctx context.Context, dir string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*s.o.Timeout)
	defer cancel()
	count, err := s.cli.Get(ctx, dir, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	excess := count.Count - int64(s.o.MaxEntries)
	if excess <= 0 {
		return 0, nil
	}
	// The excess's keys only, oldest first; the last of them ends the range.
	oldest, err := s.cli.Get(ctx, dir, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(excess),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend))
	if err != nil || len(oldest.Kvs) == 0 {
		return 0, err
	}
	last := string(oldest.Kvs[len(oldest.Kvs)-1].Key)
	resp, err := s.cli.Delete(ctx, dir, clientv3.WithRange(last+"\x00"))
	if err != nil {
		return 0, err
	}
	return resp.Deleted, nil
}

// bound clips every field to its bound.
func bound(e api.AuditEntry) api.AuditEntry {
	e.Who = clipJSON(e.Who, maxWho)
	e.Path = clipJSON(e.Path, maxPath)
	e.Summary = clipJSON(e.Summary, maxSummary)
	for _, f := range []*string{&e.Via, &e.Role, &e.Remote, &e.Replica, &e.Method, &e.Route, &e.Machine} {
		*f = clipJSON(*f, maxShort)
	}
	return e
}

// clipJSON cuts s on a rune boundary so that its JSON encoding (as
// encoding/json writes it, HTML characters escaped) takes at most n bytes
// without the quotes, "..." included when cut.
func clipJSON(s string, n int) string {
	size := 0
	for i, r := range s {
		w := utf8.RuneLen(r)
		switch {
		case r == '\u2028', r == '\u2029', r == '<', r == '>', r == '&':
			w = 6
		case r == '"', r == '\\', r == '\n', r == '\r', r == '\t':
			w = 2
		case r < 0x20:
			w = 6
		}
		if r == utf8.RuneError {
			// An invalid byte becomes \ufffd; a real U+FFFD is 3 bytes.
			if _, sz := utf8.DecodeRuneInString(s[i:]); sz == 1 {
				w = 6
			}
		}
		if size+w > n-3 && len(s) > i {
			// Fits only if the rest fits whole.
			if rest := jsonLen(s[i:]); size+rest <= n {
				return s
			}
			return s[:i] + "..."
		}
		size += w
	}
	return s
}

// jsonLen is the length of s's JSON encoding without the quotes.
func jsonLen(s string) int {
	b, _ := json.Marshal(s)
	return len(b) - 2
}
