package admin_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/netip"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/registry"
)

// The admin API pages through the machines on real etcd: ?limit= and
// ?continue=, every machine once and in order, the pages read at one
// revision (a machine added meanwhile is not in this listing), and the
// client's List gathers every page into one document.
func TestListPages(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	e := startWith(t, cli, 0)
	// testConfig's range has three addresses: register through a registry
	// with a wider one, on the same keys.
	wide := e.cfg.Cluster
	wide.Static.Range.End = netip.MustParseAddr("10.0.1.200")
	wide.SelfRegistration = config.SelfRegistration{PerSecond: 1e9, Burst: 1 << 30}
	r := registry.New(cli, registry.Options{Prefix: etcdtest.Prefix(t), Cluster: wide, Replica: "filler"})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := 0; i < 25; i++ {
		if _, _, err := r.Register(ctx, registry.Registration{ID: fmt.Sprintf("m-%02d", i), MACs: []string{fmt.Sprintf("52:54:00:00:01:%02x", i)}}); err != nil {
			t.Fatal(err)
		}
	}
	c := &api.Client{BaseURL: e.srv.URL, Token: token}
	var ids []string
	cont, pages := "", 0
	for {
		p, err := c.ListPage(ctx, 10, cont)
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, m := range p.Machines {
			ids = append(ids, m.ID)
		}
		if pages == 1 {
			// Added after the first page: not part of this listing.
			if _, _, err := r.Register(ctx, registry.Registration{ID: "m-99", MACs: []string{"52:54:00:00:02:01"}}); err != nil {
				t.Fatal(err)
			}
		}
		if p.Continue == "" {
			break
		}
		cont = p.Continue
	}
	if pages != 3 || len(ids) != 25 || ids[0] != "m-00" || ids[24] != "m-24" {
		t.Fatalf("%d pages, %d machines %v; want 3 pages of m-00 … m-24", pages, len(ids), ids)
	}
	for i := 1; i < len(ids); i++ {
		if ids[i] <= ids[i-1] {
			t.Fatalf("out of order or twice: %v", ids)
		}
	}
	// The client's List fetches every page (here 4 of 7): one document.
	c.PageSize = 7
	all, err := c.List(ctx)
	if err != nil || len(all.Machines) != 26 || all.Continue != "" {
		t.Fatalf("List: %v machines, continue %q, %v", len(all.Machines), all.Continue, err)
	}
	for i, m := range all.Machines[:25] {
		if want := fmt.Sprintf("m-%02d", i); m.ID != want {
			t.Fatalf("List: machine %d is %s, want %s", i, m.ID, want)
		}
	}
	// Without a limit: the default page size holds them all.
	code, data := e.call(t, http.MethodGet, "/api/v1/machines", "")
	if l := decode[api.MachineList](t, data); code != 200 || len(l.Machines) != 26 || l.Continue != "" {
		t.Fatalf("default page: %d, %d machines, continue %q", code, len(l.Machines), l.Continue)
	}
	for _, bad := range []struct{ query, want string }{
		{"limit=0", "give a number from 1 to 5000"},
		{"limit=5001", "give a number from 1 to 5000"},
		{"limit=x", "give a number from 1 to 5000"},
		{"continue=not-a-token", "invalid continue token"},
		// A revision no page handed out (in the future): not an etcd
		// outage, a bad token.
		{"continue=" + base64.RawURLEncoding.EncodeToString([]byte(`{"after":"m-01","rev":99999999}`)), "invalid continue token"},
	} {
		code, data := e.call(t, http.MethodGet, "/api/v1/machines?"+bad.query, "")
		wantError(t, bad.query, code, data, http.StatusBadRequest, bad.want)
	}
	// A token whose revision etcd compacted away: 410, list again.
	p, err := c.ListPage(ctx, 5, "")
	if err != nil || p.Continue == "" {
		t.Fatalf("first page: %v", err)
	}
	resp, err := cli.Put(ctx, etcdtest.Prefix(t)+"x", "y")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	code, data = e.call(t, http.MethodGet, "/api/v1/machines?continue="+p.Continue, "")
	wantError(t, "compacted listing", code, data, http.StatusGone, "list again from the first page")
}
