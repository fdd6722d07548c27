package admin

import (
	"sort"

	"github.com/mayu-boot/mayu/pkg/api"
	"github.com/mayu-boot/mayu/pkg/lease"
	"github.com/mayu-boot/mayu/pkg/replica"
)

// The wire types live in pkg/api, which links nothing of the server; these
// turn the server's own records into them, field by field.

// leaseView is a lease as GET /api/v1/leases shows it.
func leaseView(l lease.Lease, machine string, expired bool) api.Lease {
	return api.Lease{IP: l.IP, MAC: l.MAC, Expiry: l.Expiry, Hostname: l.Hostname, Leader: l.Leader,
		Machine: machine, Expired: expired}
}

// replicaView is a replica's announcement as GET /api/v1/replicas shows it.
func replicaView(i replica.Info, leader, configMatches bool, published map[string]string) api.Replica {
	return api.Replica{Name: i.Name, Version: i.Version, ConfigHash: i.ConfigHash, Advertise: i.Advertise,
		HTTP: i.HTTP, Admin: i.Admin, Metrics: i.Metrics, DHCP: i.DHCP, Started: i.Started,
		Leader: leader, ConfigMatches: configMatches, Files: i.Files, FilesDiffer: filesDiffer(i.Files, published)}
}

// filesDiffer are the keys whose digests differ between a replica's
// files and the leader's, sorted; nil when the leader publishes none.
func filesDiffer(own, leader map[string]string) []string {
	if leader == nil {
		return nil
	}
	var out []string
	for k, v := range own {
		if leader[k] != v {
			out = append(out, k)
		}
	}
	for k := range leader {
		if _, ok := own[k]; !ok {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}
