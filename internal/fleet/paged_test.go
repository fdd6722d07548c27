package fleet_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/internal/fleet"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/registry"
	"github.com/mayu-boot/mayu/pkg/state"
)

// The whole-fleet reads (the mayu_machines gauge, machine listing, the
// MAC index and the leases behind `mayuctl leases`) go to etcd page by
// page: a first page of state.PageSize keys, then the rest in at most
// eight larger pages (state.Paged), and give what one read of every key
// gives.
func TestWholeFleetReadsArePaged(t *testing.T) {
	t.Parallel()
	srv := etcdtest.StartServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const machines, leases = state.PageSize + 500, 2*state.PageSize + 500
	c := fleet.Cluster(machines+100, profiles...)
	o := fleet.Options{Prefix: etcdtest.Prefix(t), Cluster: c, Machines: machines, Leases: leases, Pool: fleet.Pool(leases + 100)}
	if err := fleet.Fill(ctx, srv.Client, o); err != nil {
		t.Fatal(err)
	}
	keys := state.Keys{Prefix: o.Prefix}
	// What one read of every key says.
	all := func(dir string) []string {
		resp, err := srv.Client.Get(ctx, dir, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, kv := range resp.Kvs {
			out = append(out, strings.TrimPrefix(string(kv.Key), dir))
		}
		return out
	}
	cli, ranges := srv.RecordingClient(t)
	// paged fails unless every read under dir asked for a page, the first
	// for state.PageSize keys and the others for at most an eighth of
	// the rest, and there were as many pages as that makes.
	paged := func(what, dir string, n int) {
		t.Helper()
		reads := ranges.Under(dir)
		rest := max(n-state.PageSize, 0)
		most := max(int64(state.PageSize), int64((rest+7)/8))
		for i, q := range reads {
			if q.Limit <= 0 || i == 0 && q.Limit != state.PageSize || q.Limit > most {
				t.Errorf("%s: read %d of %s asked for %d keys (want %d first, then at most %d)", what, i, dir, q.Limit, state.PageSize, most)
			}
		}
		if want := 1 + (rest+int(most)-1)/int(most); len(reads) < want || len(reads) > want+1 {
			t.Errorf("%s: %d reads of %s for %d keys, want %d pages", what, len(reads), dir, n, want)
		}
		ranges.Reset()
	}

	reg := prometheus.NewRegistry()
	r := registry.New(cli, registry.Options{Prefix: o.Prefix, Cluster: c, Replica: "t", Registerer: reg})
	ranges.Reset()
	ms, bad, err := r.List(ctx)
	if err != nil || len(bad) != 0 {
		t.Fatal(err, bad)
	}
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.ID)
	}
	if want := all(keys.Machines()); !slices.Equal(ids, want) {
		t.Fatalf("List: %d machines, one read: %d", len(ids), len(want))
	}
	paged("List", keys.Machines(), machines)

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var counted float64
	for _, mf := range mfs {
		if mf.GetName() == "mayu_machines" {
			for _, m := range mf.GetMetric() {
				counted += m.GetGauge().GetValue()
			}
		}
	}
	if counted != machines {
		t.Errorf("mayu_machines sums to %v, want %d", counted, machines)
	}
	paged("mayu_machines", keys.Machines(), machines)

	owners, err := r.MACOwners(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := all(keys.MACs()); len(owners) != len(want) || owners[fleet.MAC(machines-1)] != fleet.MachineID(machines-1) {
		t.Errorf("MACOwners: %d MACs, one read: %d; last %q", len(owners), len(want), owners[fleet.MAC(machines-1)])
	}
	paged("MACOwners", keys.MACs(), machines)

	ls, err := lease.NewStore(cli, keys, 30*time.Second).List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := all(keys.Leases())
	got := make([]string, len(ls))
	for i, l := range ls {
		got[i] = strings.TrimPrefix(keys.Lease(l.IP), keys.Leases())
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("leases: %d, one read: %d", len(got), len(want))
	}
	paged("leases", keys.Leases(), leases)
}
