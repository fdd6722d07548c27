package metrics

import (
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// touch makes every vector export a sample, so Gather sees all families.
func touch() {
	DHCPReceived.WithLabelValues("discover")
	DHCPAnswered.WithLabelValues("offer")
	DHCPIgnored.WithLabelValues("installed")
	SetPoolStats(func() []PoolStat { return []PoolStat{{Pool: "10.0.0.0/24", Active: 1, Free: 2}} })
	DHCPLeaseWriteDuration.WithLabelValues()
	Leader.WithLabelValues()
	LeaderChanges.WithLabelValues()
	TFTPTransfers.WithLabelValues("ok")
	TFTPBytes.WithLabelValues()
	HTTPRequests.WithLabelValues("/ipxe", "200")
	HTTPDuration.WithLabelValues("/ipxe")
	Registrations.WithLabelValues()
	InstallsCompleted.WithLabelValues()
	InstallsFailed.WithLabelValues("timeout")
	EtcdDuration.WithLabelValues("Range")
	EtcdErrors.WithLabelValues("Range")
	ConfigInfo.WithLabelValues("abc")
	ConfigMatchesLeader.WithLabelValues()
}

func TestNamesPassPromlintAndAreDocumented(t *testing.T) {
	touch()
	mfs, err := Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	doc, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, "mayu_") {
			continue
		}
		n++
		if !strings.Contains(string(doc), "`"+name+"`") {
			t.Errorf("%s is not documented in docs/metrics.md", name)
		}
	}
	SetMachineCounter(nil)
	SetPoolStats(nil)
	if n < 19 {
		t.Errorf("only %d mayu_ metrics gathered", n)
	}
}
