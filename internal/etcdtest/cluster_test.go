package etcdtest

import (
	"strings"
	"testing"
)

// The cluster helper gives what the TLS tests build on: three members
// behind client certificates, and a user limited to one prefix.
func TestClusterTLSAuth(t *testing.T) {
	c := StartCluster(t, ClusterOptions{TLS: true})
	c.EnableAuth("mayu", "mayu", "mayu-password", "/mayu/")
	c.MustEtcdctl("put", "/mayu/k", "v")
	if out := c.MustEtcdctl("get", "/mayu/k", "--print-value-only"); strings.TrimSpace(out) != "v" {
		t.Fatalf("get as root: %q", out)
	}
	// The limited user reads its prefix and nothing else.
	as := func(args ...string) (string, error) {
		root := c.RootPassword
		c.RootPassword = ""
		defer func() { c.RootPassword = root }()
		return c.Etcdctl(append([]string{"--user", "mayu:mayu-password"}, args...)...)
	}
	if out, err := as("get", "/mayu/k", "--print-value-only"); err != nil || strings.TrimSpace(out) != "v" {
		t.Fatalf("get as mayu: %v %q", err, out)
	}
	if out, err := as("put", "/other", "v"); err == nil || !strings.Contains(out, "permission denied") {
		t.Fatalf("put outside the prefix as mayu: %v %q", err, out)
	}
}
