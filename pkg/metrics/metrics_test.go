package metrics_test

import (
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	dto "github.com/prometheus/client_model/go"
)

func TestNamesPassPromlintAndAreDocumented(t *testing.T) {
	exp := exportedMetrics(t)
	mfs := make([]*dto.MetricFamily, 0, len(exp))
	for _, mf := range exp {
		mfs = append(mfs, mf)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "mayu_") {
			t.Errorf("promlint: %s: %s", p.Metric, p.Text)
		}
	}
	data, err := os.ReadFile("../../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	n := 0
	for name := range exp {
		if !strings.HasPrefix(name, "mayu_") {
			continue
		}
		n++
		if !strings.Contains(doc, "`"+name+"`") {
			t.Errorf("%s is not documented in docs/metrics.md", name)
		}
	}
	// And the other way round: every metric the tables document exists.
	for _, line := range strings.Split(doc, "\n") {
		if name, ok := strings.CutPrefix(line, "| `mayu_"); ok {
			name = "mayu_" + name[:strings.Index(name, "`")]
			if exp[name] == nil {
				t.Errorf("docs/metrics.md documents %s, which a replica does not export", name)
			}
		}
	}
	if n < 20 {
		t.Errorf("only %d mayu_ metrics gathered", n)
	}
}
