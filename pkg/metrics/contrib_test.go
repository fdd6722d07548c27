package metrics_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"regexp"
	"testing"
)

// The alert rules and the dashboard must name only metrics that exist.
var metricName = regexp.MustCompile(`\bmayu_[a-z_]+`)

func knownMetric(t *testing.T, name string) bool {
	for n := range exportedMetrics(t) {
		for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
			if n+suffix == name {
				return true
			}
		}
	}
	return false
}

func TestAlertRules(t *testing.T) {
	rules, err := os.ReadFile("../../contrib/prometheus/alerts.yml")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range metricName.FindAllString(string(rules), -1) {
		if !knownMetric(t, name) {
			t.Errorf("alerts.yml uses %s, which mayu does not export", name)
		}
	}
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (package prometheus; make test installs it)")
	}
	for _, args := range [][]string{{"check", "rules", "alerts.yml"}, {"test", "rules", "alerts_test.yml"}} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "../../contrib/prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %v: %v\n%s", args, err, out)
		}
	}
}

func TestDashboard(t *testing.T) {
	data, err := os.ReadFile("../../contrib/grafana/mayu-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	if len(dash.Panels) < 10 {
		t.Fatalf("%d panels", len(dash.Panels))
	}
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range metricName.FindAllString(tg.Expr, -1) {
				if !knownMetric(t, name) {
					t.Errorf("panel %q uses %s, which mayu does not export", p.Title, name)
				}
			}
		}
	}
}
