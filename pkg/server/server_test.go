package server

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/fixture"
	"github.com/mayu-boot/mayu/internal/netlab"
	"github.com/mayu-boot/mayu/pkg/config"
)

// replicaConfig writes a files directory and a config for one replica on
// loopback, with the embedded etcd on free ports.
func replicaConfig(t *testing.T, extra string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	if err := fixture.WriteFiles(dir, fixture.Files{Token: "0123456789abcdef0123"}); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(fixture.BootFilesDir(dir), "ipxe.efi"), []byte("efi"), 0o644)
	c, err := fixture.Loopback(dir)
	if err != nil {
		t.Fatal(err)
	}
	c.Extra = extra
	path, err := c.Write()
	if err != nil {
		t.Fatal(err)
	}
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
	// What the systemd watchdog is fed on: alive while it serves, not
	// once it stopped.
	if err := s.Alive(context.Background()); err != nil {
		t.Errorf("Alive: %v", err)
	}
	s.Close()
	if err := s.Alive(context.Background()); err == nil {
		t.Error("Alive after Close")
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
		"no tokens file": {func(c *config.Config) {
			c.Node.AdminTokenFile, c.Node.Admin.TokensFile = "", "/nonexistent/tokens.yaml"
		},
			"node.admin.tokens_file"},
		"bad tokens file": {func(c *config.Config) {
			c.Node.AdminTokenFile, c.Node.Admin.TokensFile = "", filepath.Join(c.Node.FilesDir, "tokens.yaml")
			os.WriteFile(c.Node.Admin.TokensFile, []byte("tokens:\n  - {name: a, role: root, token: 0123456789abcdefgh}\n"), 0o600)
		}, `tokens[0] (a).role: "root" is not a role`},
		"no admin certificate": {func(c *config.Config) {
			c.Node.Admin.CertFile, c.Node.Admin.KeyFile = "/nonexistent/a.crt", "/nonexistent/a.key"
		},
			"node.admin.cert_file"},
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

// node.admin_token_file still works, as one admin token, with a
// deprecation warning in the log.
func TestLegacyAdminTokenFile(t *testing.T) {
	cfg := replicaConfig(t, "")
	log := &netlab.Output{} // safe for the replica's goroutines
	s, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(log, nil)), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !strings.Contains(log.String(), "node.admin_token_file is deprecated") {
		t.Errorf("no deprecation warning:\n%s", log.String())
	}
	code, body := get(t, "http://"+s.Addrs["admin"]+"/api/v1/machines", "Authorization", "Bearer 0123456789abcdef0123")
	if code != http.StatusOK {
		t.Errorf("the token of node.admin_token_file: %d %s", code, body)
	}
}

// The boot port's per-address cap refuses a flood's extra connections with
// a 503; the admin API and the metrics port, with their own counts, still
// answer, and /metrics shows the refusal.
func TestBootPortConnectionCap(t *testing.T) {
	cfg := replicaConfig(t, "")
	cfg.Node.Limits.HTTP.MaxConnectionsPerAddress = 2
	s, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", s.Addrs["http"])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("held connection: %v %v", resp, err)
		}
		held = append(held, c)
	}
	c, err := net.Dial("tcp", s.Addrs["http"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	if b, _ := io.ReadAll(c); !strings.HasPrefix(string(b), "HTTP/1.1 503 ") {
		t.Errorf("the third connection got %q", b)
	}
	if code, _ := get(t, "http://"+s.Addrs["admin"]+"/api/v1/machines"); code != 401 {
		t.Errorf("admin API: %d", code)
	}
	// A full boot port does not starve the watchdog (systemd would
	// restart a replica under a flood).
	if err := s.Alive(context.Background()); err != nil {
		t.Errorf("Alive with the boot port full: %v", err)
	}
	_, metrics := get(t, "http://"+s.Addrs["metrics"]+"/metrics")
	for _, want := range []string{
		`mayu_http_connections_refused_total{listener="http",reason="per_address"} 1`,
		`mayu_http_connections{listener="http"} 2`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// A reader of /boot/image that stops reading is cut after
// node.limits.http.stall_timeout, through the boot routes and their
// metrics wrapper, and /metrics counts it.
func TestStalledImageReaderIsCut(t *testing.T) {
	cfg := replicaConfig(t, "")
	cfg.Node.Limits.HTTP.StallTimeout = time.Second
	const size = 64 << 20
	if err := os.WriteFile(filepath.Join(cfg.Node.FilesDir, cfg.Cluster.Install.Image), make([]byte, size), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, err := net.Dial("tcp", s.Addrs["http"])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.(*net.TCPConn).SetReadBuffer(64 << 10)
	fmt.Fprintf(c, "GET /boot/image HTTP/1.1\r\nHost: x\r\n\r\n")
	want := `mayu_http_requests_dropped_total{listener="http",reason="stalled_write"} 1`
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, metrics := get(t, "http://"+s.Addrs["metrics"]+"/metrics"); strings.Contains(metrics, want) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 10s", want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, _ := io.Copy(io.Discard, c); n >= size {
		t.Errorf("the stalled reader got all %d bytes", n)
	}
}

// The admin API and the metrics port can bind to a management network's
// address while boot files are served on the boot network's.
func TestListenersOnTheirOwnAddresses(t *testing.T) {
	cfg := replicaConfig(t, "")
	cfg.Node.AdminListenAddress = netip.MustParseAddr("127.0.0.2")
	cfg.Node.MetricsListenAddress = netip.MustParseAddr("127.0.0.3")
	s, err := Start(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), "test")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for name, want := range map[string]string{"http": cfg.Node.ListenAddress.String(), "admin": "127.0.0.2", "metrics": "127.0.0.3"} {
		if host, _, _ := net.SplitHostPort(s.Addrs[name]); host != want {
			t.Errorf("%s listens on %s, want %s", name, s.Addrs[name], want)
		}
	}
	if code, _ := get(t, "http://"+s.Addrs["metrics"]+"/healthz"); code != 200 {
		t.Errorf("healthz on the metrics address: %d", code)
	}
}
