package metrics_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/server"
)

// The metrics a replica exports are what a running one serves on /metrics:
// every package registers its own on the registry server.Start makes.
// One replica, with DHCP on loopback at a high port, is started once for
// the tests of this package.
var exported struct {
	once sync.Once
	mfs  map[string]*dto.MetricFamily
	err  string
}

// exportedMetrics starts a replica, moves every metric that appears only
// once something happened (an HTTP request, a machine in etcd, an
// election), scrapes it and stops it.
func exportedMetrics(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	exported.once.Do(func() { exported.mfs, exported.err = scrapeReplica(t) })
	if exported.err != "" {
		t.Fatal(exported.err)
	}
	return exported.mfs
}

func scrapeReplica(t *testing.T) (map[string]*dto.MetricFamily, string) {
	dir, err := os.MkdirTemp("", "mayu-metrics-test")
	if err != nil {
		return nil, err.Error()
	}
	defer os.RemoveAll(dir)
	cfg, token, err := replicaConfig(dir)
	if err != nil {
		return nil, err.Error()
	}
	s, err := server.Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	if err != nil {
		return nil, "starting a replica: " + err.Error()
	}
	defer s.Close()

	// A registered machine (mayu_machines) and HTTP requests on both ports.
	req, _ := http.NewRequest("POST", "http://"+s.Addrs["admin"]+"/api/v1/machines", strings.NewReader(`{"id":"metrics-test","macs":["52:54:00:00:00:01"]}`))
	req.Header.Set("Authorization", "Bearer "+token)
	if resp, err := http.DefaultClient.Do(req); err != nil {
		return nil, err.Error()
	} else if resp.Body.Close(); resp.StatusCode/100 != 2 {
		return nil, "registering a machine: " + resp.Status
	}
	if resp, err := http.Get("http://" + s.Addrs["http"] + "/boot.ipxe"); err != nil {
		return nil, err.Error()
	} else {
		resp.Body.Close()
	}

	// Leadership and the configuration check are reported once known.
	var mfs map[string]*dto.MetricFamily
	for deadline := time.Now().Add(20 * time.Second); ; {
		resp, err := http.Get("http://" + s.Addrs["metrics"] + "/metrics")
		if err != nil {
			return nil, err.Error()
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err = p.TextToMetricFamilies(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, "parsing /metrics: " + err.Error()
		}
		if mfs["mayu_leader"] != nil && mfs["mayu_config_matches_leader"] != nil {
			return mfs, ""
		}
		if time.Now().After(deadline) {
			return mfs, "the replica did not report mayu_leader and mayu_config_matches_leader within 20s"
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func freePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

func freeUDPPort() string {
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer c.Close()
	_, port, _ := net.SplitHostPort(c.LocalAddr().String())
	return port
}

// replicaConfig writes a files directory and a config for one replica on
// loopback (DHCP included, at a high port), with the embedded etcd on free
// ports; it returns the config and the admin token.
func replicaConfig(dir string) (*config.Config, string, error) {
	files := filepath.Join(dir, "files")
	for _, f := range []string{"installer/vmlinuz", "installer/initrd.img", "images/os.img", "boot/undionly.kpxe"} {
		os.MkdirAll(filepath.Join(files, filepath.Dir(f)), 0o755)
		os.WriteFile(filepath.Join(files, f), []byte(f), 0o644)
	}
	os.MkdirAll(filepath.Join(files, "templates"), 0o755)
	for _, f := range []string{"first-stage.sh", "final-config.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "etc", "templates", f))
		if err != nil {
			return nil, "", err
		}
		os.WriteFile(filepath.Join(files, "templates", f), data, 0o644)
	}
	const token = "0123456789abcdef0123"
	os.WriteFile(filepath.Join(dir, "token"), []byte(token+"\n"), 0o600)
	yaml := `
node:
  name: r1
  interface: lo
  advertise_address: 127.0.0.1
  listen_address: 127.0.0.1
  data_dir: ` + dir + `/data
  files_dir: ` + files + `
  boot_files_dir: ` + files + `/boot
  admin_token_file: ` + dir + `/token
  etcd:
    embedded: {client_url: "http://127.0.0.1:` + freePort() + `", peer_url: "http://127.0.0.1:` + freePort() + `"}
  ports: {dhcp: ` + freeUDPPort() + `, tftp: ` + freeUDPPort() + `, http: ` + freePort() + `, admin: ` + freePort() + `, metrics: ` + freePort() + `}
cluster:
  # ntp: the pool has a configured option, so that mayu_dhcp_options_dropped_total has a label.
  pools: [{subnet: 127.0.0.0/24, range: {start: 127.0.0.100, end: 127.0.0.150}, ntp: [127.0.0.1]}]
  static: {subnet: 10.99.0.0/24, range: {start: 10.99.0.10, end: 10.99.0.20}}
  install: {kernel: installer/vmlinuz, initrd: installer/initrd.img, image: images/os.img}
  templates: {first_stage: templates/first-stage.sh, final_config: templates/final-config.yaml}
`
	path := filepath.Join(dir, "mayu.yaml")
	os.WriteFile(path, []byte(yaml), 0o644)
	cfg, err := config.Load(path)
	return cfg, token, err
}
