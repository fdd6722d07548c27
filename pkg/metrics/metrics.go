// Package metrics defines every Prometheus metric mayu exports, in one
// place, so that docs/metrics.md can be checked against it. Names follow
// Prometheus conventions: namespace mayu, a subsystem per concern, base
// units, _total for counters.
package metrics

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
)

// Registry holds mayu's metrics, the Go runtime's and the process's.
var Registry = prometheus.NewRegistry()

func init() {
	Registry.MustRegister(prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
}

func counter(subsystem, name, help string, labels ...string) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: subsystem, Name: name, Help: help}, labels)
	Registry.MustRegister(c)
	return c
}

func gauge(subsystem, name, help string, labels ...string) *prometheus.GaugeVec {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "mayu", Subsystem: subsystem, Name: name, Help: help}, labels)
	Registry.MustRegister(g)
	return g
}

func histogram(subsystem, name, help string, buckets []float64, labels ...string) *prometheus.HistogramVec {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "mayu", Subsystem: subsystem, Name: name, Help: help, Buckets: buckets}, labels)
	Registry.MustRegister(h)
	return h
}

// latency buckets from 0.5 ms to 10 s.
var latency = []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// DHCP.
var (
	DHCPReceived = counter("dhcp", "packets_received_total",
		"DHCP packets received, by message type (malformed packets count as type \"malformed\").", "type")
	DHCPAnswered = counter("dhcp", "packets_answered_total",
		"DHCP answers sent, by message type (offer, ack, nak).", "type")
	DHCPIgnored = counter("dhcp", "packets_ignored_total",
		"DHCP packets not answered, by reason: installed, not_leader, pool_exhausted, malformed, no_pool, other_server, queue_full, not_durable, deposed.", "reason")
	DHCPLeaseWriteDuration = histogram("dhcp", "lease_write_duration_seconds",
		"Time to make a lease durable in etcd before its ACK.", latency)
)

// Leadership.
var (
	Leader = gauge("", "leader",
		"1 while this replica leads DHCP, else 0.")
	LeaderChanges = counter("", "leader_changes_total",
		"Times this replica won or lost DHCP leadership.")
)

// TFTP.
var (
	TFTPTransfers = counter("tftp", "transfers_total",
		"TFTP read requests, by result (ok, not_found, refused, failed).", "result")
	TFTPBytes = counter("tftp", "sent_bytes_total",
		"Bytes of files sent completely over TFTP.")
)

// HTTP.
var (
	HTTPRequests = counter("http", "requests_total",
		"HTTP requests on the boot and admin ports, by route and status code.", "route", "code")
	HTTPDuration = histogram("http", "request_duration_seconds",
		"HTTP request latency by route, until the last byte is written.", latency, "route")
)

// Machines.
var (
	Registrations = counter("", "registrations_total",
		"Machines registered by this replica (first contact or mayuctl add).")
	InstallsCompleted = counter("", "installs_completed_total",
		"Installs announced as completed to this replica.")
	InstallsFailed = counter("", "installs_failed_total",
		"Installs marked failed by this replica, by reason (installer, timeout).", "reason")
)

// etcd.
var (
	EtcdDuration = histogram("etcd", "request_duration_seconds",
		"Latency of etcd requests made by this replica, by method.", latency, "method")
	EtcdErrors = counter("etcd", "request_errors_total",
		"etcd requests that failed, by method.", "method")
)

// Configuration.
var (
	ConfigInfo = gauge("config", "info",
		"Always 1; the hash label is the hash of this replica's cluster configuration.", "hash")
	ConfigMatchesLeader = gauge("config", "matches_leader",
		"1 if this replica's cluster configuration agrees with the DHCP leader's (or no leader publishes one), else 0.")
)

// EtcdInterceptor times every unary etcd call (Range, Txn, Put, …): it
// goes into the etcd client's gRPC dial options.
func EtcdInterceptor() grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		start := time.Now()
		err := invoker(ctx, method, req, reply, cc, opts...)
		name := method[strings.LastIndex(method, "/")+1:]
		EtcdDuration.WithLabelValues(name).Observe(time.Since(start).Seconds())
		if err != nil {
			EtcdErrors.WithLabelValues(name).Inc()
		}
		return err
	}
}

// MachineCounter counts machines by state and profile; the replica sets
// one reading etcd. It is asked on every scrape.
type MachineCounter func(ctx context.Context) (map[[2]string]int, error)

var machines = &machineCollector{desc: prometheus.NewDesc("mayu_machines",
	"Machines by state and profile, as stored in etcd.", []string{"state", "profile"}, nil)}

func init() { Registry.MustRegister(machines) }

// SetMachineCounter installs the function behind mayu_machines.
func SetMachineCounter(f MachineCounter) {
	machines.mu.Lock()
	machines.count = f
	machines.mu.Unlock()
}

type machineCollector struct {
	desc  *prometheus.Desc
	mu    sync.Mutex
	count MachineCounter
}

func (c *machineCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *machineCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	count := c.count
	c.mu.Unlock()
	if count == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	counts, err := count(ctx)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), k[0], k[1])
	}
}

// PoolStat is one pool's leases as the leader sees them.
type PoolStat struct {
	Pool         string
	Active, Free int
}

var pools = &poolCollector{
	active: prometheus.NewDesc("mayu_dhcp_leases_active", "Unexpired leases in a pool, as the leader sees them (0 on followers).", []string{"pool"}, nil),
	free:   prometheus.NewDesc("mayu_dhcp_addresses_free", "Addresses of a pool not held by an unexpired lease (0 on followers).", []string{"pool"}, nil),
}

func init() { Registry.MustRegister(pools) }

// SetPoolStats installs the function behind the pool gauges, read at each
// scrape; nil (on a follower) reports every known pool as 0.
func SetPoolStats(f func() []PoolStat) {
	pools.mu.Lock()
	pools.stats = f
	pools.mu.Unlock()
}

type poolCollector struct {
	active, free *prometheus.Desc
	mu           sync.Mutex
	stats        func() []PoolStat
	known        map[string]bool
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.active; ch <- c.free }

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.known == nil {
		c.known = map[string]bool{}
	}
	seen := map[string]bool{}
	if c.stats != nil {
		for _, s := range c.stats() {
			seen[s.Pool], c.known[s.Pool] = true, true
			ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(s.Active), s.Pool)
			ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, float64(s.Free), s.Pool)
		}
	}
	for p := range c.known {
		if !seen[p] {
			ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, 0, p)
			ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, 0, p)
		}
	}
}
