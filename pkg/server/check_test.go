package server

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mayu-boot/mayu/pkg/config"
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
