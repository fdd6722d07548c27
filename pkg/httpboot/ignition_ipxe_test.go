package httpboot_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"regexp"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mayu-boot/mayu/internal/testfakes"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/httpboot"
	"github.com/mayu-boot/mayu/pkg/machine"
	"github.com/mayu-boot/mayu/pkg/render"
)

// A first stage in Ignition (Flatcar's PXE live system, etc/examples/flatcar)
// is handed to the installer as ignition.config.url: the URL the iPXE
// script carries is the machine's first stage, token and all, and what it
// serves is the rendered Ignition config.
func TestIgnitionFirstStageURLOnTheKernelLine(t *testing.T) {
	// The lab's files directory and cluster, served by a replica whose
	// first stage is Ignition.
	var cluster config.Cluster
	l := newLab(t, func(c *config.Cluster) { cluster = *c })
	writeFile(t, l.files+"/templates/installer.ign.yaml", []byte(`ignition: {version: "3.3.0"}
storage:
  files:
    - path: /etc/mayu/id
      contents: {source: {{yaml (print "data:," .Machine.ID)}}}
`))
	cluster.Templates.FirstStage, cluster.Templates.FirstStageFormat = "templates/installer.ign.yaml", config.FormatIgnition
	cluster.Install.KernelArgs = "flatcar.first_boot=1 console=ttyS0"
	root, err := os.OpenRoot(l.files)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	rend, err := render.New(root.FS(), cluster)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(nil)
	t.Cleanup(srv.Close)
	reg := testfakes.NewMachines(cluster)
	srv.Config.Handler = httpboot.New(httpboot.Options{Machines: reg, Renderer: rend, Files: root, Cluster: cluster,
		MayuURL: srv.URL, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Registerer: prometheus.NewRegistry()}).Handler()
	l.srv, l.reg = srv, reg

	script := l.script("SN-FLATCAR-1", "", "52-54-00-00-00-13")
	m := regexp.MustCompile(` ignition\.config\.url=(\S+) `).FindStringSubmatch(script)
	if m == nil || regexp.MustCompile(`mayu\.first_stage=`).MatchString(script) {
		t.Fatalf("the kernel line does not hand the first stage to Ignition:\n%s", script)
	}
	want := regexp.MustCompile(`^` + regexp.QuoteMeta(srv.URL) + `/machines/sn-flatcar-1/first-stage\?token=[0-9a-f]{64}$`)
	if !want.MatchString(m[1]) {
		t.Fatalf("ignition.config.url=%s is not the machine's first-stage URL with its token", m[1])
	}
	body := l.expect("GET", m[1], 200)
	var cfg struct {
		Ignition struct{ Version string }
		Storage  struct{ Files []struct{ Path string } }
	}
	if err := json.Unmarshal([]byte(body), &cfg); err != nil || cfg.Ignition.Version != "3.3.0" || len(cfg.Storage.Files) != 1 {
		t.Fatalf("the first stage served is not the rendered Ignition config (%v):\n%s", err, body)
	}
	if st := l.state("sn-flatcar-1"); st != machine.Installing {
		t.Fatalf("state %s after Ignition fetched its config, want installing", st)
	}
}
