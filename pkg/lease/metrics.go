package lease

import (
	"github.com/prometheus/client_golang/prometheus"

	mayumetrics "github.com/mayu-boot/mayu/pkg/metrics"
)

// metrics are one Store's lease-write metrics (docs/metrics.md). A write
// that fails is counted where its ACK is dropped (mayu_dhcp_packets_ignored_total).
type metrics struct {
	// group is the leases of each lease transaction: how well concurrent
	// ACKs share etcd's raft entries (1 under light load, up to maxBatch
	// under a boot storm).
	group prometheus.Histogram
}

func newMetrics() *metrics {
	return &metrics{
		group: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: "mayu", Subsystem: "dhcp", Name: "lease_transaction_leases",
			Help:    "Leases written together in one fenced etcd transaction: the leader groups concurrent ACKs (each ACK still waits until its own lease is durable).",
			Buckets: []float64{1, 2, 4, 8, 16, 32, 64}}),
	}
}

// Register exports the store's metrics on reg (a replica's one store, once).
func (s *Store) Register(reg prometheus.Registerer) {
	mayumetrics.MustRegister(reg, s.metrics.group)
}
