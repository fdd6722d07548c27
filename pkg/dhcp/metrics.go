package dhcp

import (
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	mayumetrics "github.com/mayu-boot/mayu/pkg/metrics"
)

// metrics are one Server's DHCP metrics (docs/metrics.md).
type metrics struct {
	received           *prometheus.CounterVec
	answered           *prometheus.CounterVec
	ignored            *prometheus.CounterVec
	naks               *prometheus.CounterVec
	declines           *prometheus.CounterVec
	optionsDropped     *prometheus.CounterVec
	leaseWriteDuration *prometheus.HistogramVec
	leaderReady        prometheus.Gauge
	proxyAnswered      *prometheus.CounterVec
	bootServer         *prometheus.CounterVec
	staleRemoved       prometheus.Counter
}

// newMetrics registers s's metrics on reg (nil: nowhere), with the pool
// gauges read from s at each scrape.
func newMetrics(reg prometheus.Registerer, s *Server) *metrics {
	m := &metrics{
		received: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "dhcp", Name: "packets_received_total",
			Help: "DHCP packets received, by message type (malformed packets count as type \"malformed\")."}, []string{"type"}),
		answered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "dhcp", Name: "packets_answered_total",
			Help: "DHCP answers sent, by message type (offer, ack, nak)."}, []string{"type"}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "dhcp", Name: "packets_ignored_total",
			Help: "DHCP packets not answered, by reason: installed, not_leader, pool_exhausted, malformed, no_pool, other_server, queue_full, not_durable, deposed, unlisted_relay, new_client_budget, unknown_client, reservation_unavailable, unregistered_share, ciaddr_mismatch, and in proxy pools not_boot_client, no_boot_file."}, []string{"reason"}),
		naks: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "dhcp", Name: "naks_total",
			Help: "REQUESTs refused with a NAK, by reason: outside_pool, in_use, unknown_client (no offer or lease), reserved (another MAC's reserved address), has_reservation (a MAC with a reservation asking for another address)."}, []string{"reason"}),
		optionsDropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "dhcp", Name: "options_dropped_total",
			Help: "Configured options left out of an answer because it would exceed the client's maximum message size, by option code."}, []string{"code"}),
		declines: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "dhcp", Name: "declines_total",
			Help: "DECLINEs, by outcome: quarantined (a probe found the address in use), unconfirmed (nobody answered: back in the pool), probe_busy, probe_failed, not_holder."}, []string{"outcome"}),
		leaseWriteDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: "mayu", Subsystem: "dhcp", Name: "lease_write_duration_seconds",
			Help: "Time to make a lease durable in etcd before its ACK.", Buckets: mayumetrics.Latency()}, nil),
		leaderReady: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: "mayu", Subsystem: "dhcp", Name: "leader_ready_seconds",
			Help: "How long this replica's last DHCP leadership took from winning the election to answering: the installed MACs ready, every lease loaded from etcd and the pools built."}),
	}
	m.staleRemoved = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "dhcp", Name: "stale_leases_removed_total",
		Help: "Expired leases a new leader deleted from etcd because no full-mode pool holds their address any more (the pool is in proxy mode now, or gone)."})
	m.proxyAnswered = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "dhcp", Name: "proxy_answers_total",
		Help: "proxyDHCP answers sent in proxy pools (boot options, no address), by port (67, 4011) and firmware (pxe, httpboot, ipxe)."}, []string{"port", "firmware"})
	m.bootServer = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "dhcp", Name: "boot_server_requests_total",
		Help: "Requests to the PXE boot-server port (node.ports.proxy_dhcp, 4011), by outcome: answered, or why not: not_leader, malformed, other_type, bad_source (ciaddr not the sender, a port other than 68 or 4011, or a giaddr), installed, no_pool (not in a proxy pool), not_boot_client, no_boot_file, new_client_budget, queue_full, send_failed."}, []string{"outcome"})
	for _, port := range []string{"67", "4011"} {
		for _, fw := range []string{"pxe", "httpboot", "ipxe"} {
			m.proxyAnswered.WithLabelValues(port, fw)
		}
	}
	for _, o := range []string{"answered", "not_leader", "malformed", "other_type", "bad_source", "installed", "no_pool", "not_boot_client",
		"no_boot_file", "new_client_budget", "queue_full", "send_failed"} {
		m.bootServer.WithLabelValues(o)
	}
	// Every label value starts at 0, so that rate() and increase() see the
	// first packet of each kind.
	for _, t := range []string{"discover", "request", "release", "decline", "inform", "other", "malformed"} {
		m.received.WithLabelValues(t)
	}
	for _, t := range []string{"offer", "ack", "nak"} {
		m.answered.WithLabelValues(t)
	}
	for _, r := range []string{"installed", "not_leader", "pool_exhausted", "malformed", "no_pool", "other_server", "queue_full", "not_durable", "deposed",
		"unlisted_relay", "new_client_budget", "unknown_client", "reservation_unavailable", "unregistered_share", "ciaddr_mismatch", "not_boot_client", "no_boot_file"} {
		m.ignored.WithLabelValues(r)
	}
	for _, r := range []string{"outside_pool", "in_use", "unknown_client", "reserved", "has_reservation"} {
		m.naks.WithLabelValues(r)
	}
	for _, pc := range s.o.Pools {
		for _, o := range poolOptions(pc) {
			m.optionsDropped.WithLabelValues(strconv.Itoa(int(o.code.Code())))
		}
	}
	for _, o := range []string{"quarantined", "unconfirmed", "probe_busy", "probe_failed", "not_holder"} {
		m.declines.WithLabelValues(o)
	}
	pools := &poolCollector{s: s,
		active: prometheus.NewDesc("mayu_dhcp_leases_active",
			"Unexpired leases in a pool, as the leader sees them (0 on followers).", []string{"pool"}, nil),
		free: prometheus.NewDesc("mayu_dhcp_addresses_free",
			"Addresses of a pool not held by an unexpired lease (0 on followers).", []string{"pool"}, nil),
	}
	m.leaseWriteDuration.WithLabelValues()
	// Read at each scrape: how full the room for ACKs waiting aside is
	// (when full, the workers wait for etcd themselves again).
	acksWaiting := prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "mayu", Subsystem: "dhcp", Name: "acks_waiting",
		Help: "REQUESTs whose ACK waits, aside from the packet workers, for its lease to be durable (at most 1024; beyond, a worker waits itself)."},
		func() float64 { return float64(len(s.acking)) })
	mayumetrics.MustRegister(reg, m.received, m.answered, m.ignored, m.naks, m.declines, m.optionsDropped, m.leaseWriteDuration, m.leaderReady, m.staleRemoved,
		m.proxyAnswered, m.bootServer, pools, acksWaiting)
	return m
}

// poolCollector reports every configured pool at each scrape: the leases
// the server holds while it leads (only the leader knows them), else 0.
type poolCollector struct {
	s            *Server
	active, free *prometheus.Desc
}

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.active; ch <- c.free }

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	seen := map[string]bool{}
	if t := c.s.term.Load(); t != nil {
		for _, p := range t.pools {
			active, free := p.stats(now)
			name := p.cfg.Subnet.String()
			seen[name] = true
			ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, float64(active), name)
			ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, float64(free), name)
		}
	}
	for _, pc := range c.s.o.Pools {
		if name := pc.Subnet.String(); !seen[name] {
			seen[name] = true
			ch <- prometheus.MustNewConstMetric(c.active, prometheus.GaugeValue, 0, name)
			ch <- prometheus.MustNewConstMetric(c.free, prometheus.GaugeValue, 0, name)
		}
	}
}
