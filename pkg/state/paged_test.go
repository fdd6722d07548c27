package state_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/state"
)

// A paged read gives every key under the directory once, in order, as
// they were when it began, whatever is written meanwhile; keys beside
// the directory (a sibling sharing its start) are not read.
func TestPagedReadsOneRevision(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var want []string
	for i := range 95 {
		k := fmt.Sprintf("/p/dir/%03d", i)
		want = append(want, k)
		if _, err := cli.Put(ctx, k, "v"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := cli.Put(ctx, "/p/dir2", "sibling"); err != nil {
		t.Fatal(err)
	}
	var got []string
	pages := 0
	_, err := state.Paged(ctx, cli, "/p/dir/", 10, func(kvs []*mvccpb.KeyValue) {
		pages++
		for _, kv := range kvs {
			got = append(got, string(kv.Key))
		}
		if pages == 1 { // written between the pages: not in this listing
			cli.Delete(ctx, "/p/dir/050")
			cli.Put(ctx, "/p/dir/050a", "new")
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	// A first page of 10, then the 85 keys left in pages of 11 (an
	// eighth of them): 9 reads.
	if !slices.Equal(got, want) || pages != 9 {
		t.Fatalf("%d pages, keys %v\nwant %v", pages, got, want)
	}
	resp, err := cli.Get(ctx, "/p/dir/050a", clientv3.WithCountOnly())
	if err != nil || resp.Count != 1 {
		t.Fatalf("the writes between pages did not happen: %v %v", resp, err)
	}
}
