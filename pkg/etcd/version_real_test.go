package etcd_test

import (
	"context"
	"slices"
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
	if err := etcd.CheckClusterVersions(context.Background(), conn.Client, []string{srv.ClientURL}, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	st, err := conn.Client.Status(context.Background(), srv.ClientURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("bin/etcd runs %s (mayu needs %s or later)", st.Version, etcd.MinVersion)
}

// The version check reaches every member of the cluster, not only the
// endpoints configured: here one of three is listed, and the member list
// names the other two. (Before, a member left out of node.etcd.endpoints
// was never checked, though the client's watch may be served by it.)
func TestVersionCheckReachesEveryMember(t *testing.T) {
	c := etcdtest.StartCluster(t, etcdtest.ClusterOptions{})
	listed := c.Endpoints[:1]
	conn, err := open(t, node(config.Etcd{Endpoints: listed}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := etcd.VersionTargets(context.Background(), conn.Client, listed, 5*time.Second)
	slices.Sort(got)
	want := slices.Sorted(slices.Values(c.Endpoints))
	if !slices.Equal(got, want) {
		t.Fatalf("versions read from %v, want every member: %v", got, want)
	}
	if err := etcd.CheckClusterVersions(context.Background(), conn.Client, listed, 5*time.Second); err != nil {
		t.Fatal(err)
	}
}
