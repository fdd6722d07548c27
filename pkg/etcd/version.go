package etcd

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// MinVersion is the oldest etcd server mayu runs against. A new DHCP
// leader answers from the copy of the leases its watch keeps, once a
// requested progress notification says the copy has caught up with etcd
// (lease.Store.Follow). Before 3.5.8, etcd could send that notification
// ahead of events still queued on the stream (etcd-io/etcd#15220, fixed by
// #15695 in 3.5.8): the copy could then lack a lease, or hold an older
// one, and the new leader give an address that is taken. That is a wrong
// answer, not a slower one, so an older member refuses the start rather
// than warn.
const MinVersion = "3.5.8"

// versionTimeout bounds reading one member's version at start.
const versionTimeout = 2 * time.Second

// statusFunc reads the server version of one endpoint.
type statusFunc func(ctx context.Context, endpoint string) (string, error)

// checkVersions refuses etcd members older than MinVersion, naming the
// endpoint and its version. The endpoints are asked at once, each for at
// most timeout; one that does not answer is left out (its member is
// checked at the next start): a replica must start, without waiting
// long, while one member of three is down. That is the one gap: a member
// down while every replica starts, and started again on an old version,
// is not refused until a replica next starts.
func checkVersions(ctx context.Context, endpoints []string, status statusFunc, timeout time.Duration) error {
	type answer struct {
		version string
		err     error
	}
	answers := make([]answer, len(endpoints))
	var wg sync.WaitGroup
	for i, ep := range endpoints {
		wg.Go(func() {
			sctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			v, err := status(sctx, ep)
			answers[i] = answer{v, err}
		})
	}
	wg.Wait()
	for i, ep := range endpoints {
		v, err := answers[i].version, answers[i].err
		if err != nil {
			continue
		}
		ok, err := atLeast(v, MinVersion)
		if err != nil {
			return fmt.Errorf("etcd at %s reports version %q, which mayu cannot read: %w (mayu needs etcd %s or later)", ep, v, err, MinVersion)
		}
		if !ok {
			return fmt.Errorf("etcd at %s runs version %s, older than %s, the oldest mayu runs against: its watch progress notifications can run ahead of events, and a new DHCP leader could give an address that is taken; upgrade etcd (docs/etcd.md)", ep, v, MinVersion)
		}
	}
	return nil
}

// checkClusterVersions refuses, naming it, any member that runs an etcd
// older than MinVersion (Open calls it): the endpoints configured and
// every other member of the cluster, which a replica's watch may be
// served by after a failover just the same. Each call is given timeout.
func checkClusterVersions(ctx context.Context, cli *clientv3.Client, endpoints []string, timeout time.Duration) error {
	return checkVersions(ctx, versionTargets(ctx, endpoints, clientMembers(cli), timeout), clientStatus(cli), timeout)
}

// memberLister lists the client URLs of the cluster's members.
type memberLister func(ctx context.Context) ([]string, error)

// versionTargets is every endpoint whose version to read: endpoints, and
// the client URLs of the members not among them (one MemberList call). If
// the member list cannot be read (etcd busy, a user not allowed to), the
// endpoints are still checked: the start does not fail for it.
func versionTargets(ctx context.Context, endpoints []string, members memberLister, timeout time.Duration) []string {
	targets := slices.Clone(endpoints)
	mctx, cancel := context.WithTimeout(ctx, timeout)
	urls, err := members(mctx)
	cancel()
	if err != nil {
		return targets
	}
	seen := map[string]bool{}
	for _, ep := range endpoints {
		seen[hostPort(ep)] = true
	}
	for _, u := range urls {
		if !seen[hostPort(u)] {
			seen[hostPort(u)] = true
			targets = append(targets, u)
		}
	}
	return targets
}

// hostPort is where an endpoint or client URL leads, without its scheme:
// an endpoint may be configured with or without one.
func hostPort(endpoint string) string {
	if u, err := url.Parse(endpoint); err == nil && u.Host != "" {
		return u.Host
	}
	return endpoint
}

// clientMembers lists the members' client URLs through cli.
func clientMembers(cli *clientv3.Client) memberLister {
	return func(ctx context.Context) ([]string, error) {
		resp, err := cli.MemberList(ctx)
		if err != nil {
			return nil, err
		}
		var urls []string
		for _, m := range resp.Members {
			urls = append(urls, m.ClientURLs...) // none yet: a member not started
		}
		return urls, nil
	}
}

// clientStatus reads versions through cli's maintenance API.
func clientStatus(cli *clientv3.Client) statusFunc {
	return func(ctx context.Context, ep string) (string, error) {
		st, err := cli.Status(ctx, ep)
		if err != nil {
			return "", err
		}
		return st.Version, nil
	}
}

// atLeast compares two etcd versions, major.minor.patch; a pre-release
// suffix ("-rc.1") is ignored, as etcd's own version checks do.
func atLeast(v, min string) (bool, error) {
	a, err := parseVersion(v)
	if err != nil {
		return false, err
	}
	b, err := parseVersion(min)
	if err != nil {
		return false, err
	}
	for i := range a {
		if a[i] != b[i] {
			return a[i] > b[i], nil
		}
	}
	return true, nil
}

func parseVersion(v string) ([3]int, error) {
	var out [3]int
	core, _, _ := strings.Cut(strings.TrimPrefix(v, "v"), "-")
	parts := strings.Split(core, ".")
	if len(parts) != 3 {
		return out, fmt.Errorf("not major.minor.patch")
	}
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return out, fmt.Errorf("not major.minor.patch")
		}
		out[i] = n
	}
	return out, nil
}
