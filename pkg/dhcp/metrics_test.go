package dhcp

import (
	"context"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/lease"
)

// A server's metrics are on the registry it was given: counters at 0 from
// the start, the pool gauges at 0 while it follows and its leases while it
// leads.
func TestMetricsOnTheGivenRegistry(t *testing.T) {
	reg := prometheus.NewRegistry()
	s := New(Options{Pools: []config.Pool{loPool()}, Registerer: reg})

	if got := testutil.ToFloat64(s.metrics.ignored.WithLabelValues("not_durable")); got != 0 {
		t.Errorf("not_durable = %v", got)
	}
	for name, want := range map[string]int{"mayu_dhcp_packets_ignored_total": 17, "mayu_dhcp_naks_total": 5, "mayu_dhcp_declines_total": 5,
		"mayu_dhcp_proxy_answers_total": 6, "mayu_dhcp_boot_server_requests_total": 12} {
		n, err := testutil.GatherAndCount(reg, name)
		if err != nil || n != want {
			t.Errorf("%s: %d label values exported before any packet (%v), want %d", name, n, err, want)
		}
	}
	pools := func(active, free int) string {
		return strings.NewReplacer("ACTIVE", strconv.Itoa(active), "FREE", strconv.Itoa(free)).Replace(`
# HELP mayu_dhcp_addresses_free Addresses of a pool not held by an unexpired lease (0 on followers).
# TYPE mayu_dhcp_addresses_free gauge
mayu_dhcp_addresses_free{pool="127.0.0.0/24"} FREE
# HELP mayu_dhcp_leases_active Unexpired leases in a pool, as the leader sees them (0 on followers).
# TYPE mayu_dhcp_leases_active gauge
mayu_dhcp_leases_active{pool="127.0.0.0/24"} ACTIVE
`)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(pools(0, 0)), "mayu_dhcp_leases_active", "mayu_dhcp_addresses_free"); err != nil {
		t.Errorf("following: %v", err)
	}

	// A follower counts what it receives and ignores.
	mac, _ := net.ParseMAC("52:54:00:12:34:56")
	d, err := dhcpv4.NewDiscovery(mac)
	if err != nil {
		t.Fatal(err)
	}
	s.handle(context.Background(), packet{data: d.ToBytes()})
	s.handle(context.Background(), packet{data: []byte("junk")})
	for _, c := range []struct {
		c    prometheus.Collector
		want float64
	}{
		{s.metrics.received.WithLabelValues("discover"), 1},
		{s.metrics.received.WithLabelValues("malformed"), 1},
		{s.metrics.ignored.WithLabelValues("not_leader"), 1},
		{s.metrics.ignored.WithLabelValues("malformed"), 1},
	} {
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("%v = %v, want %v", c.c, got, c.want)
		}
	}

	// Leading: the term's leases.
	p := newPool(loPool())
	p.load(lease.Lease{IP: addr("127.0.0.100"), MAC: mac.String(), Expiry: time.Now().Add(time.Hour)})
	s.term.Store(&term{pools: []*pool{p}})
	if err := testutil.GatherAndCompare(reg, strings.NewReader(pools(1, 50)), "mayu_dhcp_leases_active", "mayu_dhcp_addresses_free"); err != nil {
		t.Errorf("leading: %v", err)
	}
	s.term.Store(nil)
	if err := testutil.GatherAndCompare(reg, strings.NewReader(pools(0, 0)), "mayu_dhcp_leases_active", "mayu_dhcp_addresses_free"); err != nil {
		t.Errorf("after leading: %v", err)
	}

	// Servers on other registries, or on none, do not collide.
	New(Options{Pools: []config.Pool{loPool()}, Registerer: prometheus.NewRegistry()})
	New(Options{Pools: []config.Pool{loPool()}})
}
