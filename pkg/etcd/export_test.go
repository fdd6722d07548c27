package etcd

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// For the tests of package etcd_test, which start real etcd through
// internal/etcdtest (which imports this package).

var CheckClusterVersions = checkClusterVersions

func VersionTargets(ctx context.Context, cli *clientv3.Client, endpoints []string, timeout time.Duration) []string {
	return versionTargets(ctx, endpoints, clientMembers(cli), timeout)
}
