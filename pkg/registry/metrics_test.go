package registry_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
)

// A registry's machine metrics are on the registry it was given: the
// install counters at 0 from the start, mayu_machines read from etcd.
func TestMetricsOnTheGivenRegistry(t *testing.T) {
	t.Parallel()
	cli := etcdtest.Start(t)
	clk := &clock{}
	clk.Set(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))
	reg := prometheus.NewRegistry()
	r := registry.New(cli, registry.Options{Prefix: etcdtest.Prefix(t), Replica: "r1", Now: clk.Now, Registerer: reg,
		Cluster: cluster("10.13.0.1", 10, config.Profile{Name: "core", Quantity: 1})})
	const counters = `
# HELP mayu_installs_completed_total Installs announced as completed to this replica.
# TYPE mayu_installs_completed_total counter
mayu_installs_completed_total COMPLETED
# HELP mayu_installs_failed_total Installs marked failed by this replica, by reason (installer, timeout, config).
# TYPE mayu_installs_failed_total counter
mayu_installs_failed_total{reason="config"} 0
mayu_installs_failed_total{reason="installer"} INSTALLER
mayu_installs_failed_total{reason="timeout"} TIMEOUT
# HELP mayu_registrations_total Machines registered by this replica (first contact or mayuctl add).
# TYPE mayu_registrations_total counter
mayu_registrations_total REGISTERED
`
	check := func(what, completed, installer, timeout, registered string) {
		t.Helper()
		want := strings.NewReplacer("COMPLETED", completed, "INSTALLER", installer, "TIMEOUT", timeout, "REGISTERED", registered).Replace(counters)
		if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
			"mayu_installs_completed_total", "mayu_installs_failed_total", "mayu_registrations_total"); err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
	check("at the start", "0", "0", "0", "0")

	for _, id := range []string{"a", "b", "c"} {
		register(t, r, id)
	}
	if _, err := r.Update(ctxT(t), "a", func(m *machine.Machine) error { return m.StartInstall("r1", clk.Now()) }); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Hour)
	if _, err := r.ExpireInstalls(ctxT(t), 30*time.Minute); err != nil {
		t.Fatal(err)
	}
	r.CountInstallCompleted()
	r.CountInstallFailed("installer")
	check("after three registrations, a timeout, a completed and a failed install", "1", "1", "1", "3")

	want := `
# HELP mayu_machines Machines by state and profile, as stored in etcd.
# TYPE mayu_machines gauge
mayu_machines{profile="core",state="failed"} 1
mayu_machines{profile="default",state="configured"} 2
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "mayu_machines"); err != nil {
		t.Error(err)
	}

	// An unreadable record is counted: it keeps its machine silenced.
	corrupt := `
# HELP mayu_machines_corrupt Machine records in etcd that cannot be read; DHCP stays silent to their MACs.
# TYPE mayu_machines_corrupt gauge
mayu_machines_corrupt N
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(strings.Replace(corrupt, "N", "0", 1)), "mayu_machines_corrupt"); err != nil {
		t.Error(err)
	}
	if _, err := cli.Put(ctxT(t), etcdtest.Prefix(t)+"machines/b", "{garbage"); err != nil {
		t.Fatal(err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(strings.Replace(corrupt, "N", "1", 1)), "mayu_machines_corrupt"); err != nil {
		t.Error(err)
	}

	// Another registry on the same etcd, on another registerer or none.
	registry.New(cli, registry.Options{Prefix: etcdtest.Prefix(t), Registerer: prometheus.NewRegistry()})
	registry.New(cli, registry.Options{Prefix: etcdtest.Prefix(t)})
}
