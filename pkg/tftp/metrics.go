package tftp

import (
	"github.com/prometheus/client_golang/prometheus"

	mayumetrics "github.com/mayu-boot/mayu/pkg/metrics"
)

// metrics are one Server's TFTP metrics (docs/metrics.md).
type metrics struct {
	transfers *prometheus.CounterVec
	bytes     *prometheus.CounterVec
	limited   *prometheus.CounterVec
	pending   prometheus.Gauge
	active    prometheus.Gauge
}

// newMetrics registers a Server's metrics on reg (nil: nowhere).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		transfers: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "tftp", Name: "transfers_total",
			Help: "TFTP read requests, by result (ok, not_found, refused, failed)."}, []string{"result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "tftp", Name: "sent_bytes_total",
			Help: "Bytes of files sent completely over TFTP."}, nil),
		limited: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mayu", Subsystem: "tftp", Name: "limited_total",
			Help: "TFTP requests refused or cut by node.limits.tftp, by reason (per_address, pending, transfers, first_block_timeout)."}, []string{"reason"}),
	}
	transfers := prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: "mayu", Subsystem: "tftp", Name: "transfers",
		Help: "TFTP requests now, by phase (pending: first block not acknowledged yet; active: holding a slot)."}, []string{"phase"})
	m.pending, m.active = transfers.WithLabelValues("pending"), transfers.WithLabelValues("active")
	for _, r := range []string{"ok", "not_found", "refused", "failed"} {
		m.transfers.WithLabelValues(r) // 0 from the start
	}
	for _, r := range []string{"per_address", "pending", "transfers", "first_block_timeout"} {
		m.limited.WithLabelValues(r)
	}
	m.bytes.WithLabelValues()
	mayumetrics.MustRegister(reg, m.transfers, m.bytes, m.limited, transfers)
	return m
}
