package dhcp

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/pkg/election"
)

// ErrDeposed means a fenced write found that this replica no longer leads.
var ErrDeposed = election.ErrDeposed

// store keeps leases durable in etcd at <prefix>leases/<ip>. Every write
// is conditioned on the writer's leadership term (the fence), so a deposed
// leader can never grant an address.
type store struct {
	cli     *clientv3.Client
	dir     string
	timeout time.Duration
}

func (s *store) key(ip netip.Addr) string { return s.dir + ip.String() }

// load reads every lease; a new leader calls it before its first answer.
func (s *store) load(ctx context.Context) ([]Lease, []error, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Get(ctx, s.dir, clientv3.WithPrefix())
	if err != nil {
		return nil, nil, fmt.Errorf("etcd load leases: %w", err)
	}
	var leases []Lease
	var bad []error
	for _, kv := range resp.Kvs {
		var l Lease
		if err := json.Unmarshal(kv.Value, &l); err != nil || !l.IP.IsValid() || l.MAC == "" ||
			strings.TrimPrefix(string(kv.Key), s.dir) != l.IP.String() {
			bad = append(bad, fmt.Errorf("lease %s in etcd is corrupt; it is ignored (delete it with etcdctl)", kv.Key))
			continue
		}
		leases = append(leases, l)
	}
	return leases, bad, nil
}

// put writes a lease if f still holds.
func (s *store) put(ctx context.Context, f election.Fence, l Lease) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return s.fenced(ctx, f, clientv3.OpPut(s.key(l.IP), string(data)))
}

// remove deletes a lease if f still holds.
func (s *store) remove(ctx context.Context, f election.Fence, ip netip.Addr) error {
	return s.fenced(ctx, f, clientv3.OpDelete(s.key(ip)))
}

func (s *store) fenced(ctx context.Context, f election.Fence, op clientv3.Op) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	resp, err := s.cli.Txn(ctx).If(f.Cmp()).Then(op).Commit()
	if err != nil {
		return fmt.Errorf("etcd lease write: %w", err)
	}
	if !resp.Succeeded {
		return ErrDeposed
	}
	return nil
}
