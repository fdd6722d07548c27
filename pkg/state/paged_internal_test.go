package state

import (
	"fmt"
	"testing"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// After the first page, a listing reads the rest in about maxPages
// pages, never smaller than the first and never over maxPageBytes by the
// first page's average size.
func TestPageAfter(t *testing.T) {
	first := func(n int, valueBytes int, count int64) *clientv3.GetResponse {
		r := &etcdserverpb.RangeResponse{Count: count}
		for i := range n {
			r.Kvs = append(r.Kvs, &mvccpb.KeyValue{Key: []byte(fmt.Sprintf("/k/%06d", i)), Value: make([]byte, valueBytes-9)})
		}
		return (*clientv3.GetResponse)(r)
	}
	for _, c := range []struct {
		name string
		size int64
		resp *clientv3.GetResponse
		want int64
	}{
		{"all in the first page", 1000, first(40, 100, 40), 1000},
		{"empty", 1000, first(0, 100, 0), 1000},
		{"100,000 leases of 100 bytes: the rest in 8", 1000, first(1000, 100, 100000), 12375},
		{"a few more than a page: never smaller than the first", 1000, first(1000, 100, 1500), 1000},
		{"large records: 4 MiB a page", 1000, first(1000, 2048, 100000), 2048},
		{"huge records: still the first page's size", 1000, first(1000, 1<<16, 100000), 1000},
	} {
		if got := pageAfter(c.size, c.resp); got != c.want {
			t.Errorf("%s: pages of %d, want %d", c.name, got, c.want)
		}
	}
}
