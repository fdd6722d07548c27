package metrics_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
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
		Templating struct {
			List []struct {
				Name  string
				Query json.RawMessage // a string or {"query": …}
			}
		}
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatal(err)
	}
	if len(dash.Panels) < 10 {
		t.Fatalf("%d panels", len(dash.Panels))
	}
	vars := map[string]bool{}
	for _, v := range dash.Templating.List {
		vars[v.Name] = true
		for _, name := range metricName.FindAllString(string(v.Query), -1) {
			if !knownMetric(t, name) {
				t.Errorf("variable %q uses %s, which mayu does not export", v.Name, name)
			}
		}
	}
	for _, v := range []string{"datasource", "job", "instance"} {
		if !vars[v] {
			t.Errorf("the dashboard has no variable %q", v)
		}
	}
	// Every replica exports the same mayu_machines: summing it across
	// replicas would count each machine once per replica.
	summedMachines := regexp.MustCompile(`sum\s*(by\s*\([^)]*\))?\s*\(\s*mayu_machines`)
	var rules strings.Builder
	rules.WriteString("groups:\n  - name: dashboard\n    rules:\n")
	n := 0
	for _, p := range dash.Panels {
		for _, tg := range p.Targets {
			for _, name := range metricName.FindAllString(tg.Expr, -1) {
				if !knownMetric(t, name) {
					t.Errorf("panel %q uses %s, which mayu does not export", p.Title, name)
				}
			}
			if metricName.MatchString(tg.Expr) && !strings.Contains(tg.Expr, `job=~"$job"`) {
				t.Errorf("panel %q: %s does not select job=~\"$job\"", p.Title, tg.Expr)
			}
			if summedMachines.MatchString(tg.Expr) {
				t.Errorf("panel %q: %s sums mayu_machines across replicas; take the max by (state, profile) first", p.Title, tg.Expr)
			}
			expr := strings.NewReplacer("$job", "mayu", "$instance", ".*").Replace(tg.Expr)
			q, _ := json.Marshal(expr)
			n++
			fmt.Fprintf(&rules, "      - record: dashboard:query_%d\n        expr: %s\n", n, q)
		}
	}
	// promtool parses the queries (as recording rules).
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (package prometheus; make test installs it)")
	}
	path := filepath.Join(t.TempDir(), "dashboard.yml")
	if err := os.WriteFile(path, []byte(rules.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput(); err != nil {
		t.Errorf("the dashboard's queries do not parse: %v\n%s", err, out)
	}
}
