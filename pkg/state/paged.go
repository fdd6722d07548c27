package state

import (
	"context"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// PageSize is how many keys one read of a paged listing asks etcd for:
// a few hundred KB of records at most, where one read of 100,000 leases
// is tens of MB in one etcd response (held by etcd and by the replica at
// once, and close to etcd's default 2 MB request and 10 s budgets).
const PageSize = 1000

// Paged reads every key under dir, size keys per etcd read (0: PageSize),
// and hands each page to f in key order. Every page is read at the
// revision of the first one, so that the pages together are exactly what
// one read would have returned, however the keys change meanwhile. It
// returns that revision.
func Paged(ctx context.Context, cli *clientv3.Client, dir string, size int64, f func(kvs []*mvccpb.KeyValue)) (int64, error) {
	if size <= 0 {
		size = PageSize
	}
	end := clientv3.GetPrefixRangeEnd(dir)
	from, rev := dir, int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(size)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := cli.Get(ctx, from, opts...)
		if err != nil {
			return 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		f(resp.Kvs)
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		// The next key after the last one of this page.
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
