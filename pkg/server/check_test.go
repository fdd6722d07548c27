package server

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mayu-boot/mayu/internal/fixture"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/dhcp"
)

func TestCheckWritableDir(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		dir, want string
	}{
		{dir, ""},
		{filepath.Join(dir, "new", "deeper"), ""}, // created at start
		{file, "is not a directory"},
		{filepath.Join(file, "cache"), file + " is not a directory"},
	} {
		err := checkWritableDir("node.artifacts.cache_dir", c.dir)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.dir, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "node.artifacts.cache_dir: ")):
			t.Errorf("%s: %v, want %q", c.dir, err, c.want)
		}
	}
}

func TestExposedPorts(t *testing.T) {
	cfg := &config.Config{}
	cfg.Cluster.Pools = []config.Pool{{Subnet: netip.MustParsePrefix("10.99.0.0/24")}}
	cfg.Node.MetricsListenAddress = netip.MustParseAddr("0.0.0.0")
	cfg.Node.AdminListenAddress = netip.MustParseAddr("10.99.0.2")
	got := strings.Join(exposedPorts(cfg), "\n")
	for _, want := range []string{"node.metrics_listen_address is 0.0.0.0", "node.admin_listen_address 10.99.0.2 is in the boot network 10.99.0.0/24"} {
		if !strings.Contains(got, want) {
			t.Errorf("no %q in:\n%s", want, got)
		}
	}
	cfg.Node.MetricsListenAddress = netip.MustParseAddr("192.168.7.2")
	cfg.Node.AdminListenAddress = netip.MustParseAddr("192.168.7.2")
	if w := exposedPorts(cfg); len(w) != 0 {
		t.Errorf("a management address warned: %v", w)
	}
}

// -check warns, as Listen logs, when a proxy pool has no boot-server port:
// UEFI PXE firmware would find no boot file.
func TestCheckWarnsOfAProxyWithoutBootServerPort(t *testing.T) {
	want := dhcp.BootServerWarning([]config.Pool{{Mode: config.PoolProxy}}, 0)
	if want == "" {
		t.Fatal("BootServerWarning says nothing of a proxy pool without port 4011")
	}
	for _, tc := range []struct {
		name       string
		proxy      bool
		dhcp, port int
		warn       bool
	}{
		{"proxy pool, proxy_dhcp 0", true, 67, 0, true},
		{"proxy pool, proxy_dhcp 4011", true, 67, 4011, false},
		{"full pool, proxy_dhcp 0", false, 67, 0, false},
		{"proxy pool, DHCP off", true, 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := fixture.WriteFiles(dir, fixture.Files{Token: "0123456789abcdef0123"}); err != nil {
				t.Fatal(err)
			}
			c, err := fixture.Loopback(dir)
			if err != nil {
				t.Fatal(err)
			}
			c.Advertise, c.Listen, c.Proxy = "10.99.0.1", "", tc.proxy
			path, err := c.Write()
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := config.Load(path)
			if err != nil {
				t.Fatal(err)
			}
			// The interface check fails on this host (no 10.99.0.0/24
			// here): an error, beside which the warnings still come.
			cfg.Node.Interface, cfg.Node.Ports.DHCP, cfg.Node.Ports.ProxyDHCP = "lo", tc.dhcp, tc.port
			warnings, _ := Check(cfg)
			if got := slices.Contains(warnings, want); got != tc.warn {
				t.Errorf("warned %v, want %v; warnings: %q", got, tc.warn, warnings)
			}
		})
	}
}
