package server

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayu-boot/mayu/pkg/config"
)

func freePort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

// replicaConfig writes a files directory and a config for one replica on
// loopback, with the embedded etcd on free ports.
func replicaConfig(t *testing.T, extra string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	files := filepath.Join(dir, "files")
	for _, f := range []string{"installer/vmlinuz", "installer/initrd.img", "images/os.img"} {
		os.MkdirAll(filepath.Join(files, filepath.Dir(f)), 0o755)
		os.WriteFile(filepath.Join(files, f), []byte(f), 0o644)
	}
	os.MkdirAll(filepath.Join(files, "templates"), 0o755)
	os.MkdirAll(filepath.Join(files, "boot"), 0o755)
	os.WriteFile(filepath.Join(files, "boot", "ipxe.efi"), []byte("efi"), 0o644)
	for _, f := range []string{"first-stage.sh", "final-config.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "..", "etc", "templates", f))
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(files, "templates", f), data, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "token"), []byte("0123456789abcdef0123\n"), 0o600)
	yaml := `
node:
  name: r1
  advertise_address: 127.0.0.1
  listen_address: 127.0.0.1
  data_dir: ` + dir + `/data
  files_dir: ` + files + `
  boot_files_dir: ` + files + `/boot
  admin_token_file: ` + dir + `/token
  etcd:
    embedded: {client_url: "http://127.0.0.1:` + freePort(t) + `", peer_url: "http://127.0.0.1:` + freePort(t) + `"}
  ports: {dhcp: 0, tftp: 0, http: ` + freePort(t) + `, admin: ` + freePort(t) + `, metrics: ` + freePort(t) + `}
cluster:
  pools: [{subnet: 10.99.0.0/24, range: {start: 10.99.0.100, end: 10.99.0.199}}]
  static: {subnet: 10.99.0.0/24, range: {start: 10.99.0.10, end: 10.99.0.20}}
  install: {kernel: installer/vmlinuz, initrd: installer/initrd.img, image: images/os.img}
  templates: {first_stage: templates/first-stage.sh, final_config: templates/final-config.yaml}
` + extra
	path := filepath.Join(dir, "mayu.yaml")
	os.WriteFile(path, []byte(yaml), 0o644)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func get(t *testing.T, url string, header ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if len(header) == 2 {
		req.Header.Set(header[0], header[1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReplicaServesEveryListener(t *testing.T) {
	cfg := replicaConfig(t, "")
	s, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for _, c := range []struct {
		url, header string
		want        int
		body        string
	}{
		{"http://" + s.Addrs["metrics"] + "/healthz", "", 200, "ok"},
		{"http://" + s.Addrs["metrics"] + "/readyz", "", 200, "ready"},
		{"http://" + s.Addrs["metrics"] + "/metrics", "", 200, "go_goroutines"},
		{"http://" + s.Addrs["http"] + "/boot.ipxe", "", 200, "#!ipxe"},
		{"http://" + s.Addrs["http"] + "/boot/kernel", "", 200, "installer/vmlinuz"},
		{"http://" + s.Addrs["http"] + "/tftp/ipxe.efi", "", 200, "efi"},
		{"http://" + s.Addrs["http"] + "/tftp/..%2f..%2fetc%2fpasswd", "", 400, ""},
		{"http://" + s.Addrs["admin"] + "/api/v1/machines", "", 401, ""},
		{"http://" + s.Addrs["admin"] + "/api/v1/machines", "Bearer 0123456789abcdef0123", 200, "machines"},
	} {
		var code int
		var body string
		if c.header != "" {
			code, body = get(t, c.url, "Authorization", c.header)
		} else {
			code, body = get(t, c.url)
		}
		if code != c.want || !strings.Contains(body, c.body) {
			t.Errorf("GET %s: %d %q", c.url, code, body)
		}
	}
}

func TestStartFailsClearly(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for name, tc := range map[string]struct {
		mutate func(*config.Config)
		want   string
	}{
		"missing kernel": {func(c *config.Config) { c.Cluster.Install.Kernel = "installer/nope" }, "cluster.install.kernel"},
		"kernel outside": {func(c *config.Config) { c.Cluster.Install.Kernel = "../../../etc/passwd" }, "cluster.install.kernel"},
		"no token file":  {func(c *config.Config) { c.Node.AdminTokenFile = "/nonexistent/token" }, "node.admin_token_file"},
		"broken template": {func(c *config.Config) {
			os.WriteFile(filepath.Join(c.Node.FilesDir, "templates/first-stage.sh"), []byte("{{if}}"), 0o644)
		}, "cluster.templates.first_stage"},
		"no files dir": {func(c *config.Config) { c.Node.FilesDir = "/nonexistent" }, "node.files_dir"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := replicaConfig(t, "")
			tc.mutate(cfg)
			s, err := Start(context.Background(), cfg, log, "test")
			if err == nil {
				s.Close()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not name %s", err, tc.want)
			}
		})
	}
}
