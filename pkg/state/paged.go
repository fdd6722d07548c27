package state

import (
	"context"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// PageSize is how many keys one read of a paged listing asks etcd for
// first: a few hundred KB of records at most, where one read of 100,000
// leases is tens of MB in one etcd response (held by etcd and by the
// replica at once, and close to etcd's default 2 MB request and 10 s
// budgets).
const PageSize = 1000

const (
	// maxPages bounds how many further pages a listing takes after the
	// first. etcd counts every key from a page's first key to the end of
	// the range for each read (its range response carries the count, and
	// a limit does not stop the counting), so n keys in pages of p cost
	// it n²/2p key visits: 100,000 leases in pages of 1000 took 0.6 s of
	// etcd's time counting, in pages of n/8 0.05 s.
	maxPages = 8
	// maxPageBytes bounds a page grown that way, by the first page's
	// average key and value size.
	maxPageBytes = 4 << 20
)

// Paged reads every key under dir, the first read size keys (0: PageSize)
// and the further ones larger when many keys remain (maxPages,
// maxPageBytes), and hands each page to f in key order. Every page is
// read at the revision of the first one, so that the pages together are
// exactly what one read would have returned, however the keys change
// meanwhile. It returns that revision.
func Paged(ctx context.Context, cli *clientv3.Client, dir string, size int64, f func(kvs []*mvccpb.KeyValue)) (int64, error) {
	if size <= 0 {
		size = PageSize
	}
	end := clientv3.GetPrefixRangeEnd(dir)
	from, rev, limit := dir, int64(0), size
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(limit)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := cli.Get(ctx, from, opts...)
		if err != nil {
			return 0, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
			limit = pageAfter(size, resp)
		}
		f(resp.Kvs)
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		// The next key after the last one of this page.
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// pageAfter is the size of the pages after the first one, resp: at least
// size, the rest in about maxPages reads if that keeps a page under
// maxPageBytes.
func pageAfter(size int64, first *clientv3.GetResponse) int64 {
	n := int64(len(first.Kvs))
	if n == 0 || first.Count <= n {
		return size
	}
	var bytes int64
	for _, kv := range first.Kvs {
		bytes += int64(len(kv.Key) + len(kv.Value))
	}
	limit := (first.Count - n + maxPages - 1) / maxPages
	if most := maxPageBytes * n / max(bytes, 1); limit > most {
		limit = most
	}
	return max(limit, size)
}
