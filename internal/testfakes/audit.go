package testfakes

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/mayu-boot/mayu/pkg/api"
)

// Audit is an in-memory audit trail (audit.Store's behaviour without
// retention). Broken makes every write fail as an unreachable etcd does.
type Audit struct {
	Broken bool

	mu      sync.Mutex
	entries []api.AuditEntry
	n       int
}

// NewAudit returns an empty trail.
func NewAudit() *Audit { return &Audit{} }

// Begin records e and returns it with an ID.
func (a *Audit) Begin(_ context.Context, e api.AuditEntry) (api.AuditEntry, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.Broken {
		return e, ErrBroken
	}
	a.n++
	e.ID, e.Time = fmt.Sprintf("%08d", a.n), time.Now().UTC()
	a.entries = append(a.entries, e)
	return e, nil
}

// Finish replaces the entry Begin recorded.
func (a *Audit) Finish(_ context.Context, e api.AuditEntry) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.Broken {
		return ErrBroken
	}
	for i := range a.entries {
		if a.entries[i].ID == e.ID {
			a.entries[i] = e
		}
	}
	return nil
}

// List returns the newest entries first, as audit.Store does.
func (a *Audit) List(_ context.Context, machine string, limit int) ([]api.AuditEntry, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := []api.AuditEntry{}
	for _, e := range slices.Backward(a.entries) {
		if machine == "" || e.Machine == machine {
			out = append(out, e)
		}
		if limit > 0 && len(out) == limit {
			break
		}
	}
	return out, nil
}

// Entries are every entry recorded, oldest first.
func (a *Audit) Entries() []api.AuditEntry {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.entries)
}
