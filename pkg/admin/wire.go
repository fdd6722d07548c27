package admin

import (
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
func replicaView(i replica.Info, leader, configMatches bool) api.Replica {
	return api.Replica{Name: i.Name, Version: i.Version, ConfigHash: i.ConfigHash, Advertise: i.Advertise,
		HTTP: i.HTTP, Admin: i.Admin, Metrics: i.Metrics, DHCP: i.DHCP, Started: i.Started,
		Leader: leader, ConfigMatches: configMatches}
}
