package etcd_test

import (
	"context"
	"testing"
	"time"

	"github.com/mayu-boot/mayu/internal/etcdtest"
	"github.com/mayu-boot/mayu/pkg/config"
	"github.com/mayu-boot/mayu/pkg/etcd"
)

// The real etcd this project builds (bin/etcd) is new enough: Open, which
// checks every endpoint's version, accepts it, and so does the check
// itself, reading the version through the client.
func TestVersionOfRealEtcd(t *testing.T) {
	srv := etcdtest.StartServer(t)
	conn, err := open(t, node(config.Etcd{Endpoints: []string{srv.ClientURL}}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := etcd.CheckVersions(context.Background(), conn.Client, []string{srv.ClientURL}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := conn.Client.Status(context.Background(), srv.ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bin/etcd runs %s (mayu needs %s or later)", st.Version, etcd.MinVersion)
}
