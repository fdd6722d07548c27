package httpboot_test

import (
	"context"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/internal/ignitiontest"
	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/httpboot"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/registry"
)

// picky is an Ignition final config that renders for the sample machine
// but not for every machine: a machine whose metadata "bogus" is "yes"
// gets an unknown key (a key only a profile renders is caught at start), one whose metadata "root" is not empty gets a relative path, and
// one whose metadata "urls" is not a base URL fails to execute.
const picky = `ignition: {version: "3.3.0"}
storage:
  files:
    - path: {{ yaml (print (index .Machine.Metadata "root") "/etc/motd") }}
      contents: {source: {{ yaml (dataurl (join (replicas .URLs.BootComplete (index .Machine.Metadata "urls")) "\n")) }}}
{{- if eq (index .Machine.Metadata "bogus") "yes" }}
      bogus: 1
{{- end }}
`

// etcdLab is the lab on a registry in real etcd, with the picky final
// config declared Ignition.
func etcdLab(t *testing.T) (*lab, *registry.Registry, *prometheus.Registry) {
	t.Helper()
	cli := etcdtest.Start(t)
	prom := prometheus.NewRegistry()
	var reg *registry.Registry
	l := newLabWith(t, func(c *config.Cluster) {
		c.Templates.FinalConfig = "templates/picky.ign.yaml"
		c.Templates.FinalConfigFormat = config.FormatIgnition
		reg = registry.New(cli, registry.Options{Prefix: etcdtest.Prefix(t), Cluster: *c, Replica: "r1", Registerer: prom})
	}, func(*testfakes.Machines) httpboot.Machines { return reg }, map[string]string{"templates/picky.ign.yaml": picky})
	return l, reg, prom
}

func failedCount(t *testing.T, prom *prometheus.Registry, reason string) float64 {
	t.Helper()
	mfs, err := prom.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "mayu_installs_failed_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if m.GetLabel()[0].GetValue() == reason {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no mayu_installs_failed_total{reason=%q}", reason)
	return 0
}

// A final config that does not validate for one machine fails exactly
// that machine, when it asks for its first stage and before it becomes
// installing; it gets the validator's message and nothing else, while
// the other machines install as usual and are served a valid config.
func TestConfigThatDoesNotValidateFailsOnlyItsMachine(t *testing.T) {
	l, reg, prom := etcdLab(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	type node struct {
		serial, mac, id, firstStage, tok string
	}
	boot := func(serial, mac string) node {
		firstStage, tok := installerURLs(t, l.script(serial, "", mac))
		return node{serial: serial, mac: mac, id: strings.ToLower(serial), firstStage: firstStage, tok: tok}
	}
	core := boot("SN-CORE", "52-54-00-00-00-01")
	good := boot("SN-GOOD", "52-54-00-00-00-02")
	relative := boot("SN-RELATIVE", "52-54-00-00-00-03")
	badURL := boot("SN-BADURL", "52-54-00-00-00-04")
	setMeta := func(id, k, v string) {
		t.Helper()
		if _, err := reg.Update(ctx, id, func(m *machine.Machine) error { m.Metadata[k] = v; return nil }); err != nil {
			t.Fatal(err)
		}
	}
	setMeta(core.id, "bogus", "yes")
	setMeta(relative.id, "root", "relative")
	setMeta(badURL.id, "urls", "not-a-url")

	for _, tc := range []struct {
		n    node
		want string
	}{
		{core, "$.storage.files.0.bogus: unknown key"},
		{relative, "$.storage.files.0.path: path not absolute"},
		{badURL, `replicas: "not-a-url" is not a base URL`},
	} {
		code, body, _ := l.do("GET", tc.n.firstStage)
		if code != http.StatusInternalServerError || !strings.Contains(body, tc.want) || !strings.Contains(body, "cluster.templates.final_config") ||
			strings.Contains(body, "#!/bin/sh") {
			t.Fatalf("%s: first stage answered %d:\n%s", tc.n.id, code, body)
		}
		m, err := reg.Get(ctx, tc.n.id)
		if err != nil {
			t.Fatal(err)
		}
		if m.State != machine.Failed || !strings.Contains(m.FailReason, tc.want) || !strings.HasPrefix(m.FailReason, "config: cluster.templates.final_config: ") {
			t.Fatalf("%s: %s, reason %q", tc.n.id, m.State, m.FailReason)
		}
		for _, e := range m.History {
			if e.State == machine.Installing {
				t.Fatalf("%s was installing: %+v", tc.n.id, m.History)
			}
		}
		// Its final config is never served, and asking again changes
		// nothing: a 409 (final to Ignition, which retries a 5xx) that
		// says why, without rendering again.
		l.expect("GET", "/machines/"+tc.n.id+"/final-config?token="+tc.n.tok, http.StatusConflict)
		if code, body, _ := l.do("GET", tc.n.firstStage); code != http.StatusConflict || !strings.Contains(body, "is failed (config: ") {
			t.Fatalf("%s: first stage asked again: %d %s", tc.n.id, code, body)
		}
		// Nor is an announcement of installed believed: no config was served.
		l.expect("POST", "/machines/"+tc.n.id+"/installed?token="+tc.n.tok, http.StatusConflict)
		// Its iPXE script says why and waits: no installer.
		if s := l.script(tc.n.serial, "", tc.n.mac); !strings.Contains(s, "failed") || firstStageRe.MatchString(s) {
			t.Fatalf("%s: iPXE script of a failed machine:\n%s", tc.n.id, s)
		}
	}
	if n := failedCount(t, prom, "config"); n != 3 {
		t.Fatalf("mayu_installs_failed_total{reason=config} = %v, want 3", n)
	}

	// The good machine installs, and is served a valid Ignition config.
	fs := l.expect("GET", good.firstStage, http.StatusOK)
	if m, _ := reg.Get(ctx, good.id); m.State != machine.Installing {
		t.Fatalf("good machine is %s", m.State)
	}
	finalURL := regexp.MustCompile(`'(http://[^']*final-config[^']*)'`).FindStringSubmatch(fs)[1]
	code, final, h := l.do("GET", finalURL)
	if code != http.StatusOK || h.Get("Content-Type") != httpboot.IgnitionType || !strings.Contains(final, `"path":"/etc/motd"`) {
		t.Fatalf("final config %d %s:\n%s", code, h.Get("Content-Type"), final)
	}
	ignitiontest.Validate(t, []byte(final))

	// Metadata changed mid-install so that its config no longer
	// validates: the final config is not served either, the machine fails.
	setMeta(good.id, "root", "relative")
	code, body, _ := l.do("GET", finalURL)
	if code != http.StatusInternalServerError || !strings.Contains(body, "path not absolute") || strings.Contains(body, "ignition") && strings.Contains(body, `"version"`) {
		t.Fatalf("final config that does not validate answered %d:\n%s", code, body)
	}
	if m, _ := reg.Get(ctx, good.id); m.State != machine.Failed || !strings.Contains(m.FailReason, "path not absolute") {
		t.Fatalf("good machine after its config broke: %s %q", m.State, m.FailReason)
	}
	if n := failedCount(t, prom, "config"); n != 4 {
		t.Fatalf("mayu_installs_failed_total{reason=config} = %v, want 4", n)
	}

	// A reinstall once the metadata is fixed installs it.
	setMeta(relative.id, "root", "")
	if _, err := reg.Update(ctx, relative.id, func(m *machine.Machine) error { return m.Reinstall("r1", time.Now()) }); err != nil {
		t.Fatal(err)
	}
	again, _ := installerURLs(t, l.script(relative.serial, "", relative.mac))
	l.expect("GET", again, http.StatusOK)
	if m, _ := reg.Get(ctx, relative.id); m.State != machine.Installing {
		t.Fatalf("reinstalled machine is %s", m.State)
	}
}
